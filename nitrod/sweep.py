"""``nitrod sweep``: grids of training runs or board builds, run on Dask.

A sweep file (TOML) names a grid; every point of it is one *run*, a task on a Dask cluster
(a local one sized to the machine, or ``--scheduler ADDRESS``) that calls the project's own
functions in the worker: :func:`golden.train.train` (backend ``golden``),
:func:`nitrod.accel_train.train_on_accelerator` (backend ``sim``), or
:func:`boards.build.build_board` with :func:`nitrod.board_build.annotate` (builds).

Training grid (``kind = "train"``, the default)::

    datasets = ["digits", "mnist5k"]        # digits, mnist5k (bundled); mnist, fashion,
    data_dir = "/data"                      #   cifar10 from data_dir (or --data-dir)
    networks = ["mlp:100,50", "cnn:small", "cnn:c16,p,c32,p,c64,l64"]
    seeds = 10                              # a count (seeds 1..10) or a list [1, 5, 9]
    backends = ["golden"]                   # golden | sim (the Trainer in Verilator, MLPs)

    [options]                               # a value, or a list of values to sweep
    epochs = 150
    compat = ["spec", "authors"]
    lr_inv = [512, 256]

Build grid (``kind = "build"``)::

    kind = "build"
    boards = ["ulx3s-85f"]
    seeds = [1, 2, 3, 4]                    # nextpnr placement seeds
    core = "trainer"                        # trainer | memory (a list sweeps it)
    geometries = [{}, {depth = {act = 8192}}, {side = 4}]   # {} is the board's own
    freq = 100                              # optional core clock, MHz
    nextpnr_opts = ["--placer-heap-beta 0.6"]

Every run writes its own directory ``OUT/runs/<hash>``, the hash of its resolved
configuration (:func:`config_hash`): ``config.json``, the run's files (``metrics.json``,
``checkpoint.npz``, ``learning_curves.png``, ``train.log``; for a build ``report.json`` and
the build tree) and, last, the marker ``done.json``.  A run is written in a temporary
directory renamed into place once complete, so a directory with ``done.json`` is always
whole and one without it never exists; a rerun of the sweep skips the runs that have it.
A run whose worker dies is run again elsewhere by Dask (its scheduler's
``allowed-failures``), a run that raises is retried once (``retries``).  At the end
``summary.md``, ``summary.csv``, ``runs.csv`` and ``summary.png``: the paper's table form
(mean +- std of the best test accuracy over seeds, and of the epoch it was reached) or, for
builds, Fmax (min, median, max) and projected samples/s over placement seeds.

``nitrod sweep --paper`` builds the grid of the paper's table (NITRO-D, Table 1) for the
datasets present, spec and ``--compat authors`` side by side.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import shutil
import socket
import statistics
import sys
import time
import tomllib
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["SweepError", "Run", "Plan", "load_sweep_file", "plan_from_dict", "paper_plan",
           "config_hash", "write_atomic", "is_done", "run_one", "run_sweep", "estimate",
           "summarise", "add_arguments", "cmd_sweep", "PAPER_RESULTS", "MARKER"]

#: the file whose presence makes a run directory complete (written last)
MARKER = "done.json"

TRAIN_BACKENDS = ("golden", "sim")

#: NITRO-D's Table 1 (mean best test accuracy over 10 runs, %), by (network, dataset)
PAPER_RESULTS = {
    ("mlp:100,50", "mnist"): 97.36,
    ("mlp:200,100,50", "fashion"): 88.66,
    ("mlp:3000,3000,3000", "cifar10"): 61.03,
    ("cnn:vgg8b", "mnist"): 99.45,
    ("cnn:vgg8b", "fashion"): 93.66,
    ("cnn:vgg8b", "cifar10"): 87.96,
    ("cnn:vgg11b", "cifar10"): 87.39,
}

#: what the bundled stand-ins compare with: their full dataset
PAPER_DATASET = {"digits": "mnist", "mnist5k": "mnist", "mnist": "mnist",
                 "fashion": "fashion", "cifar10": "cifar10"}

#: the options a training grid may set (``[options]``): name -> type
TRAIN_OPTIONS = {
    # the network (nitrod.options.spec_from_args)
    "relu_inv_slope": int, "decoder_dim": int, "fwd_decay_inv": int, "subnet_decay_inv": int,
    "conv_amp_extra": bool, "int8_loss_error": bool, "compat": str,
    # the training loop (golden.train.TrainConfig)
    "epochs": int, "batch": int, "lr_inv": int, "plateau_threshold": float,
    "lr_patience": int, "lr_start_epoch": int, "lr_factor": int, "stop_patience": int,
    "stop_start_epoch": int, "drop_last_batch": bool, "track_ranges": bool,
    # the sim backend (nitrod sim)
    "side": int, "board": str, "check": bool,
}
SIM_ONLY = ("side", "board", "check")
TRAIN_KEYS = ("kind", "datasets", "data_dir", "networks", "seeds", "backends", "options")
BUILD_KEYS = ("kind", "boards", "seeds", "core", "geometries", "freq", "nextpnr_opts")


class SweepError(ValueError):
    """A sweep file or grid that cannot run; the message says what and where."""


# --------------------------------------------------------------------------
# Small helpers: hashing, atomic writes
# --------------------------------------------------------------------------

def config_hash(config: dict) -> str:
    """16 hex digits of the SHA-256 of ``config`` as canonical JSON (sorted keys)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_atomic(path, data) -> None:
    """Write ``data`` (str or bytes) to ``path`` through a temporary file in the same folder,
    flushed to disk and renamed over ``path``: a reader sees the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        with open(tmp, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def run_dir(out, run_hash: str) -> Path:
    return Path(out) / "runs" / run_hash


def is_done(out, run_hash: str) -> bool:
    return (run_dir(out, run_hash) / MARKER).is_file()


# --------------------------------------------------------------------------
# The plan: runs resolved from a sweep file or the paper's grid
# --------------------------------------------------------------------------

@dataclass
class Run:
    """One point of the grid: ``config`` is everything its result depends on (hashed);
    ``label`` the columns it is grouped by in the summary; ``estimate_s`` its estimated
    seconds (an upper bound: every epoch run)."""

    kind: str                       # "train" | "build"
    config: dict
    label: dict
    data_dir: str | None = None     # where the dataset is read (not part of the result)
    estimate_s: float | None = None

    @property
    def hash(self) -> str:
        return config_hash(self.config)


@dataclass
class Plan:
    kind: str
    runs: list = field(default_factory=list)
    notes: list = field(default_factory=list)       # rows left out, and why
    source: str = ""


def _where(source):
    return f"sweep file {source}" if source else "sweep"


def load_sweep_file(path, data_dir=None) -> Plan:
    """Read and validate a sweep file; :class:`SweepError` with a one-line reason.
    ``data_dir`` is where datasets are read if the file names no ``data_dir``."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SweepError(f"sweep file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"sweep file {path}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError(f"sweep file {path}: cannot read it ({exc})") from None
    return plan_from_dict(data, source=str(path), data_dir=data_dir)


def _as_list(value, what, where, kind=None, allow_scalar=True):
    values = value if isinstance(value, list) else ([value] if allow_scalar else None)
    if values is None:
        raise SweepError(f"{where}: {what} must be a list")
    if not values:
        raise SweepError(f"{where}: {what} is empty")
    if kind is not None:
        for v in values:
            if not _is(v, kind):
                raise SweepError(f"{where}: {what} must be {_kind_name(kind)}, got {v!r}")
    return values


def _is(value, kind) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def _kind_name(kind) -> str:
    return {bool: "true or false", int: "whole numbers", float: "numbers",
            str: "strings", dict: "tables"}.get(kind, kind.__name__)


def _seeds(value, where) -> list:
    if _is(value, int):
        if value < 1:
            raise SweepError(f"{where}: seeds = {value}: a count must be at least 1")
        return list(range(1, value + 1))
    seeds = _as_list(value, "seeds", where, int, allow_scalar=False)
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"{where}: seeds has duplicates: {seeds}")
    return seeds


def _unknown(data, known, where, table=""):
    for key in data:
        if key not in known:
            raise SweepError(f"{where}: unknown key {key!r}{f' in [{table}]' if table else ''} "
                             f"(known: {', '.join(known)})")


def _grid(axes: dict) -> list:
    """Every combination of ``axes`` (name -> list of values), in order."""
    combos = [{}]
    for name, values in axes.items():
        combos = [{**c, name: v} for c in combos for v in values]
    return combos


def plan_from_dict(data: dict, source: str = "", data_dir=None) -> Plan:
    """Validate a parsed sweep file and resolve its runs (``data_dir``: the default of the
    file's ``data_dir``)."""
    where = _where(source)
    if not isinstance(data, dict):
        raise SweepError(f"{where}: expected a table")
    kind = data.get("kind", "train")
    if kind == "train":
        return _train_plan(data, where, source, data_dir)
    if kind == "build":
        return _build_plan(data, where, source)
    raise SweepError(f"{where}: kind = {kind!r}: expected \"train\" or \"build\"")


# ---- training grids --------------------------------------------------------

def parse_network(text: str) -> tuple[str, str]:
    """``"mlp:100,50"`` -> ("mlp", "100,50"); ``"cnn:small"`` -> ("cnn", "small")."""
    model, sep, arch = str(text).partition(":")
    model = model.strip().lower()
    if not sep or model not in ("mlp", "cnn") or not arch.strip():
        raise ValueError(f"network {text!r}: expected mlp:SIZES (mlp:100,50) or "
                         "cnn:ARCH (cnn:small, cnn:vgg8b, cnn:c32,p,l64)")
    return model, arch.strip().lower()


def _network_args(network: str, dataset: str, data_dir, backend: str, options: dict, seed: int):
    """The ``nitrod train``/``nitrod sim`` namespace of one run."""
    from nitrod.options import int_list
    model, arch = parse_network(network)
    o = options
    try:
        hidden = int_list(arch) if model == "mlp" else None
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"network {network!r}: {exc}") from None
    return argparse.Namespace(
        dataset=dataset, data_dir=data_dir, model=model,
        hidden=hidden, arch=arch if model == "cnn" else None,
        relu_inv_slope=o.get("relu_inv_slope", 4),
        decoder_dim=o.get("decoder_dim") if model == "cnn" else None,
        fwd_decay_inv=o.get("fwd_decay_inv"), subnet_decay_inv=o.get("subnet_decay_inv", 3000),
        conv_amp_extra=o.get("conv_amp_extra", False) and model == "cnn",
        int8_loss_error=o.get("int8_loss_error", False), compat=o.get("compat", "spec"),
        epochs=o.get("epochs", 60), batch=o.get("batch", 64), lr_inv=o.get("lr_inv", 512),
        seed=seed, quiet=True, threads=1, out=None, resume=False, force=False,
        check=o.get("check", False),
        side=o.get("side"), board=o.get("board"), waves_batch=None, link="bus")


def _train_overrides(options: dict) -> dict:
    """TrainConfig fields beyond ``nitrod train``'s options."""
    names = ("plateau_threshold", "lr_patience", "lr_start_epoch", "lr_factor", "stop_patience",
             "stop_start_epoch", "drop_last_batch", "track_ranges")
    return {k: options[k] for k in names if k in options}


class _Shape:
    """What :func:`nitrod.options.spec_from_args` reads of a dataset."""

    def __init__(self, input_shape, classes):
        self.input_shape, self.classes = tuple(input_shape), classes


_DATASET_INFO: dict = {}


def dataset_info(name: str, data_dir) -> dict:
    """Input shape, classes and split sizes of a dataset (loaded once per process)."""
    key = (name, str(Path(data_dir).resolve()) if data_dir else None)
    if key not in _DATASET_INFO:
        from golden.datasets import load_dataset
        ds = load_dataset(name, data_dir)
        _DATASET_INFO[key] = {"input_shape": tuple(ds.input_shape), "classes": ds.classes,
                              "train": len(ds.y_train), "test": len(ds.y_test)}
    return _DATASET_INFO[key]


def resolve_train_run(dataset, network, seed, backend, options, data_dir=None) -> Run:
    """The resolved run: its NetworkSpec and TrainConfig (every default filled in, so that
    equal runs hash equally however they were written), checked by building them."""
    from nitrod.options import spec_from_args, train_config
    args = _network_args(network, dataset, data_dir, backend, options, seed)
    info = dataset_info(dataset, data_dir)
    spec = spec_from_args(args, _Shape(info["input_shape"], info["classes"]))
    cfg = train_config(args, **_train_overrides(options))
    config = {"kind": "train", "dataset": dataset, "backend": backend,
              "spec": json.loads(spec.to_json()), "train": asdict(cfg)}
    if backend == "sim":
        from .compiler import hardware_refusal
        refusal = hardware_refusal(spec)
        if refusal:
            raise ValueError(f"backend sim: {refusal}")
        config["sim"] = {"side": args.side, "board": args.board, "check": bool(args.check)}
    label = {"dataset": dataset, "network": network, "backend": backend,
             "compat": cfg.compat, "seed": seed}
    return Run("train", config, label,
               data_dir=str(Path(data_dir).resolve()) if data_dir else None)


def _train_plan(data, where, source, default_data_dir=None) -> Plan:
    _unknown(data, TRAIN_KEYS, where)
    for key in ("datasets", "networks", "seeds"):
        if key not in data:
            raise SweepError(f"{where}: missing {key!r} (a training sweep needs datasets, "
                             "networks and seeds)")
    datasets = _as_list(data["datasets"], "datasets", where, str)
    networks = _as_list(data["networks"], "networks", where, str)
    seeds = _seeds(data["seeds"], where)
    backends = _as_list(data.get("backends", "golden"), "backends", where, str)
    for b in backends:
        if b not in TRAIN_BACKENDS:
            raise SweepError(f"{where}: backend {b!r}: expected one of {', '.join(TRAIN_BACKENDS)}")
    data_dir = data.get("data_dir", default_data_dir)
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise SweepError(f"{where}: data_dir must be a string (a folder)")
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise SweepError(f"{where}: options must be a table ([options])")
    _unknown(options, tuple(TRAIN_OPTIONS), where, "options")
    axes = {}
    for name, value in options.items():
        values = _as_list(value, f"options.{name}", where, TRAIN_OPTIONS[name])
        if TRAIN_OPTIONS[name] is float:
            values = [float(v) for v in values]
        axes[name] = values
    for name in SIM_ONLY:
        if name in axes and "sim" not in backends:
            raise SweepError(f"{where}: options.{name} is for the sim backend, which is not in "
                             "backends")
    for net in networks:
        try:
            parse_network(net)
        except ValueError as exc:
            raise SweepError(f"{where}: {exc}") from None
    plan = Plan("train", source=source)
    for ds in datasets:
        try:
            dataset_info(ds, data_dir)
        except (ValueError, OSError) as exc:
            raise SweepError(f"{where}: dataset {ds!r}: {exc}") from None
        for net in networks:
            for backend in backends:
                for opts in _grid(axes):
                    if backend != "sim":
                        opts = {k: v for k, v in opts.items() if k not in SIM_ONLY}
                    for seed in seeds:
                        try:
                            run = resolve_train_run(ds, net, seed, backend, opts, data_dir)
                        except (ValueError, TypeError, KeyError) as exc:
                            raise SweepError(f"{where}: {ds} {net} ({backend}"
                                             f"{', ' + _opts_text(opts) if opts else ''}): "
                                             f"{exc}") from None
                        run.label.update({k: v for k, v in opts.items()
                                          if len(axes[k]) > 1 and k != "compat"})
                        plan.runs.append(run)
    return _dedupe(plan)


def _opts_text(opts: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in opts.items())


def _dedupe(plan: Plan) -> Plan:
    """Runs that resolve to the same configuration (e.g. ``compat`` swept on an option the
    mode sets anyway) are one run."""
    seen, runs = set(), []
    for run in plan.runs:
        if run.hash not in seen:
            seen.add(run.hash)
            runs.append(run)
    if len(runs) < len(plan.runs):
        plan.notes.append(f"{len(plan.runs) - len(runs)} grid points resolve to a run already "
                          "in the grid; each is run once")
    plan.runs = runs
    return plan


# ---- build grids -----------------------------------------------------------

def _build_plan(data, where, source) -> Plan:
    _unknown(data, BUILD_KEYS, where)
    for key in ("boards", "seeds"):
        if key not in data:
            raise SweepError(f"{where}: missing {key!r} (a build sweep needs boards and seeds)")
    from boards.boards import BOARD, board_geometry, get_board
    from boards.build import CORES, check_nextpnr_opts, parse_depths
    boards_ = _as_list(data["boards"], "boards", where, str)
    for b in boards_:
        if b not in BOARD:
            raise SweepError(f"{where}: board {b!r}: expected one of {', '.join(BOARD)}")
    seeds = _seeds(data["seeds"], where)
    cores = _as_list(data.get("core", "trainer"), "core", where, str)
    for c in cores:
        if c not in CORES:
            raise SweepError(f"{where}: core {c!r}: expected one of {', '.join(CORES)}")
    geometries = _as_list(data.get("geometries", [{}]), "geometries", where, dict,
                          allow_scalar=False)
    freq = data.get("freq")
    if freq is not None and (not _is(freq, float) or freq <= 0):
        raise SweepError(f"{where}: freq must be a positive number (MHz), got {freq!r}")
    opts = data.get("nextpnr_opts", [])
    opts = _as_list(opts, "nextpnr_opts", where, str) if opts else []
    try:
        words = check_nextpnr_opts(opts)
    except ValueError as exc:
        raise SweepError(f"{where}: {exc}") from None
    resolved_geos = []
    for i, geo in enumerate(geometries):
        _unknown(geo, ("side", "depth"), where, f"geometries[{i}]")
        side = geo.get("side")
        if side is not None and (not _is(side, int) or side < 1):
            raise SweepError(f"{where}: geometries[{i}].side must be a whole number >= 1")
        depth = geo.get("depth", {})
        if not isinstance(depth, dict):
            raise SweepError(f"{where}: geometries[{i}].depth must be a table, e.g. "
                             "{act = 8192}")
        try:
            depths = parse_depths([f"{k}={v}" for k, v in depth.items()])
        except ValueError as exc:
            raise SweepError(f"{where}: geometries[{i}]: {exc}") from None
        resolved_geos.append((_geometry_label(side, depth), side, depths))
    plan = Plan("build", source=source)
    for b in boards_:
        board = get_board(b)
        for core in cores:
            for glabel, side, depths in resolved_geos:
                try:
                    geometry = board_geometry(board, side, **depths)
                except (ValueError, TypeError) as exc:
                    raise SweepError(f"{where}: {b} geometry {glabel}: {exc}") from None
                for seed in seeds:
                    config = {"kind": "build", "board": b, "core": core,
                              "geometry": geometry.as_dict(), "seed": seed,
                              "freq": float(freq) if freq is not None else None,
                              "nextpnr_opts": words}
                    label = {"board": b, "core": core, "geometry": glabel, "seed": seed}
                    plan.runs.append(Run("build", config, label))
    return _dedupe(plan)


def _geometry_label(side, depth) -> str:
    parts = ([f"side={side}"] if side else []) + [f"{k}={v}" for k, v in sorted(depth.items())]
    return ",".join(parts) or "default"


# ---- the paper's grid --------------------------------------------------------

#: small CNNs beside the paper's networks: the digits default and a 28x28 one
SMALL_CNN = {"digits": "cnn:small"}
SMALL_CNN_28 = "cnn:c16,p,c32,p,c64,l64"


def paper_rows(dataset: str) -> list:
    """``[(network, kind)]`` of the paper's table for ``dataset`` (kind ``mlp``, ``cnn`` or
    ``vgg``), with a small CNN beside them; the stand-ins (digits, mnist5k) get MNIST's."""
    family = PAPER_DATASET.get(dataset)
    mlp = {"mnist": "mlp:100,50", "fashion": "mlp:200,100,50",
           "cifar10": "mlp:3000,3000,3000"}[family]
    rows = [(mlp, "mlp"), (SMALL_CNN.get(dataset, SMALL_CNN_28), "cnn")]
    if dataset != "digits":                 # 8x8: VGG8B's four pools do not fit
        rows.append(("cnn:vgg8b", "vgg"))
    return rows


PAPER_ROW_KINDS = ("mlp", "cnn")


def paper_plan(datasets, seeds=10, data_dir=None, epochs=150, cnn_epochs=None,
               include_vgg=False, compats=("spec", "authors"), rows=("mlp", "cnn")) -> Plan:
    """The paper's grid: its networks for each dataset (MNIST's for the stand-ins), its
    recipe (batch 64, lr_inv 512, the schedule, ``epochs`` at most with early stopping;
    ``cnn_epochs`` for the CNN rows if given), ``seeds`` seeds 1..N, spec and authors.
    ``rows``: the kinds of row to run (mlp, cnn); the VGG rows run with ``include_vgg``."""
    plan = Plan("train", source="--paper")
    for kind in rows:
        if kind not in PAPER_ROW_KINDS:
            raise SweepError(f"--rows {kind!r}: expected some of {', '.join(PAPER_ROW_KINDS)}")
    if not datasets:
        raise SweepError("--paper: no dataset")
    for ds in datasets:
        if ds not in PAPER_DATASET:
            raise SweepError(f"--paper: dataset {ds!r}: expected one of "
                             f"{', '.join(PAPER_DATASET)}")
        try:
            dataset_info(ds, data_dir)
        except (ValueError, OSError) as exc:
            raise SweepError(f"--paper: dataset {ds!r}: {exc}") from None
        for net, kind in paper_rows(ds):
            if kind == "vgg" and not include_vgg:
                plan.notes.append(f"{ds} {net}: not run (VGG rows need --include-vgg; "
                                  "meant for a cluster)")
                continue
            if kind not in rows and kind != "vgg":
                continue
            n_epochs = cnn_epochs if (kind != "mlp" and cnn_epochs) else epochs
            for compat in compats:
                for seed in range(1, seeds + 1):
                    plan.runs.append(resolve_train_run(ds, net, seed, "golden",
                                                       {"epochs": n_epochs, "compat": compat},
                                                       data_dir))
        if PAPER_DATASET[ds] == "cifar10":
            plan.notes.append("cifar10 VGG11B: no such architecture in nitrod (not run)")
            plan.notes.append("cifar10 MLP: 3072 inputs (the images' 3 channels); the paper's "
                              "MLP has 1024")
        if ds == "digits":
            plan.notes.append("digits: VGG8B does not fit 8x8 images (four 2x2 pools)")
    if include_vgg:
        plan.notes.append("VGG8B runs without the paper's random-crop augmentation (the golden "
                          "trainer has none)")
    return plan


# --------------------------------------------------------------------------
# Estimates
# --------------------------------------------------------------------------

#: simulated Trainer cycles per second in Verilator (README's measured 13-17 k, rounded)
SIM_CYCLES_PER_SECOND = 15_000.0
#: seconds of a board build, by family (README: iCE40 memory core ~1 min, ECP5 Trainer ~1 h)
BUILD_SECONDS = {("ice40", "memory"): 90, ("ice40", "trainer"): 600,
                 ("ecp5", "memory"): 300, ("ecp5", "trainer"): 3600}


def _measure_rate(spec, batch=64, budget_macs=4e9, work_macs=5e8, trials=2) -> float | None:
    """Training MACs per second of ``spec`` on this machine, one BLAS thread: the best of
    ``trials`` timings of about ``work_macs`` each (at least two steps, after a warm-up
    pass; the best, since other load only slows), or None when a step would exceed
    ``budget_macs``."""
    from golden.benchmark import bench_golden
    from golden.network import Network
    macs = Network(spec, seed=0).macs_per_sample()
    if macs * batch > budget_macs:
        return None
    steps = max(2, int(work_macs // (macs * batch)))
    best = max(bench_golden(batches=steps, batch=batch, threads=1, spec=spec)["samples_per_second"]
               for _ in range(trials))
    return best * macs


def _rate_key(run: Run) -> str:
    """What a run's speed depends on: the network's shape and the batch (not its decay
    constants or mode)."""
    s = run.config["spec"]
    return json.dumps({k: s[k] for k in ("input_shape", "classes", "layers", "decoder_dim")}
                      | {"batch": run.config["train"]["batch"]}, sort_keys=True)


def estimate(plan: Plan, log=None) -> dict:
    """Fill every run's ``estimate_s`` (all epochs run, no early stop) and return
    ``{"rates": {...}, "total_s": ...}``.  Golden runs: MACs per sample x (train samples + half
    the test samples) x epochs / the MAC rate measured here for that network (networks too
    large to time in a few seconds take the slowest CNN rate measured, or 2e9 MAC/s)."""
    from golden.network import Network, NetworkSpec
    rates, specs, total = {}, {}, 0.0
    for run in plan.runs:
        if run.kind == "build":
            from boards.boards import get_board
            fam = get_board(run.config["board"]).family
            run.estimate_s = BUILD_SECONDS.get((fam, run.config["core"]), 600)
            total += run.estimate_s
            continue
        key = _rate_key(run)
        if key not in specs:
            spec = NetworkSpec.from_json(json.dumps(run.config["spec"]))
            specs[key] = (spec, Network(spec, seed=0).macs_per_sample())
    for key, (spec, _) in specs.items():
        batch = json.loads(key)["batch"]
        rates[key] = _measure_rate(spec, batch)
        if log and rates[key]:
            log(f"# measured {','.join(spec.layers)} on {'x'.join(map(str, spec.input_shape))}: "
                f"{rates[key] / 1e9:.2f} GMAC/s")
    cnn_rates = [r for k, r in rates.items() if r and specs[k][0].is_cnn]
    fallback = min(cnn_rates) if cnn_rates else 2e9
    for run in plan.runs:
        if run.kind != "train":
            continue
        key = _rate_key(run)
        spec, macs = specs[key]
        info = dataset_info(run.config["dataset"], run.data_dir)
        epochs = run.config["train"]["epochs"]
        work = macs * (info["train"] + info["test"] / 2) * epochs
        if run.config["backend"] == "sim":
            side = (run.config["sim"]["side"] or 8)
            run.estimate_s = macs * info["train"] * epochs / side ** 2 * 1.2 / SIM_CYCLES_PER_SECOND
        else:
            run.estimate_s = work / (rates[key] or fallback)
        total += run.estimate_s
    return {"rates_gmacs": {",".join(specs[k][0].layers): (r / 1e9 if r else None)
                            for k, r in rates.items()},
            "total_s": total}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def estimate_table(plan: Plan, workers: int, out=None) -> str:
    """The plan grouped by row: runs, done, estimated time of one run and of the rest."""
    rows: dict = {}
    for run in plan.runs:
        key = _group_key(run)
        r = rows.setdefault(key, {"runs": 0, "done": 0, "one": run.estimate_s or 0, "todo": 0.0})
        r["runs"] += 1
        if out is not None and is_done(out, run.hash):
            r["done"] += 1
        else:
            r["todo"] += run.estimate_s or 0
    lines = ["| row | runs | done | one run (at most) | to run (at most) |", "|---|---|---|---|---|"]
    for key, r in rows.items():
        lines.append(f"| {_key_text(key)} | {r['runs']} | {r['done']} | {_duration(r['one'])} "
                     f"| {_duration(r['todo'])} |")
    todo = sum(r["todo"] for r in rows.values())
    lines.append(f"\nat most {_duration(todo)} of work left, about {_duration(todo / workers)} "
                 f"on {workers} worker(s)" + (" (early stopping usually ends training sooner)"
                                               if plan.kind == "train" else ""))
    return "\n".join(lines)


# --------------------------------------------------------------------------
# One run, in a worker
# --------------------------------------------------------------------------

def _code_version() -> str | None:
    import subprocess
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True, timeout=10, cwd=Path(__file__).resolve().parent)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_one(run: Run, out) -> dict:
    """Run ``run`` unless its directory is complete; returns its result row.

    The run is written in ``OUT/runs/.tmp-<hash>-<unique>`` and renamed to
    ``OUT/runs/<hash>`` once its marker is written: a run killed half way leaves only a
    temporary directory (removed by the next sweep), and two attempts of one run never write
    into the same directory; if another attempt finished first, its result stands."""
    out = Path(out)
    final = run_dir(out, run.hash)
    if (final / MARKER).is_file():
        return _result_row(run, final, skipped=True)
    tmp = out / "runs" / f".tmp-{run.hash}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    started = time.time()
    try:
        write_atomic(tmp / "config.json", json.dumps(
            {"hash": run.hash, "label": run.label, "config": run.config,
             "data_dir": run.data_dir}, indent=2, default=str) + "\n")
        status = (_train(run, tmp) if run.kind == "train" else _build(run, tmp, final))
        write_atomic(tmp / MARKER, json.dumps(
            {"hash": run.hash, "status": status, "seconds": round(time.time() - started, 2),
             "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": socket.gethostname(),
             "pid": os.getpid(), "code": _code_version()}, indent=2) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / MARKER).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)      # another attempt finished first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _result_row(run, final, skipped=False)


def _train(run: Run, tmp: Path) -> str:
    cfg, label = run.config, run.label
    logf = open(tmp / "train.log", "w")

    def log(line):
        logf.write(line + "\n")
        logf.flush()

    try:
        if cfg["backend"] == "golden":
            from golden.datasets import load_dataset
            from golden.network import NetworkSpec
            from golden.train import TrainConfig, train
            ds = load_dataset(cfg["dataset"], run.data_dir)
            spec = NetworkSpec.from_json(json.dumps(cfg["spec"]))
            train(ds, spec, TrainConfig(**cfg["train"]), out_dir=tmp, progress=False, log=log,
                  threads=1)
            return "ok"
        from contextlib import redirect_stderr, redirect_stdout
        from .accel_train import train_on_accelerator
        opts = {**{k: cfg["train"][k] for k in ("epochs", "batch", "lr_inv")},
                **{k: cfg["spec"][k] for k in ("relu_inv_slope", "decoder_dim", "fwd_decay_inv",
                                              "subnet_decay_inv", "conv_amp_extra",
                                              "int8_loss_error", "compat")},
                **cfg["sim"]}
        args = _network_args(label["network"], cfg["dataset"], run.data_dir, "sim", opts,
                             cfg["train"]["seed"])
        args.out = str(tmp)
        with redirect_stdout(logf), redirect_stderr(logf):
            status = train_on_accelerator(args, "sim")
        if status == 1:
            return "mismatch"
        if status != 0:
            raise RuntimeError(f"nitrod sim exited with status {status} (see train.log)")
        return "ok"
    finally:
        logf.close()


def _build(run: Run, tmp: Path, final: Path) -> str:
    from boards.build import build_board
    from boards.fit import FitError
    from hw.contract import Geometry
    from .board_build import annotate
    cfg = run.config
    geometry = Geometry(**cfg["geometry"])
    try:
        build_board(cfg["board"], tmp, core=cfg["core"], geometry=geometry, seed=cfg["seed"],
                    freq_mhz=cfg["freq"], nextpnr_opts=cfg["nextpnr_opts"],
                    annotate=annotate)
        status = "ok"
    except FitError:
        status = "refused"           # report.json says why: a result, not a failure
    # the report names the directory it was built in: point it at the final one
    report = tmp / "report.json"
    if report.exists():
        text = report.read_text().replace(str(tmp), str(final))
        write_atomic(report, text)
    return status


def _result_row(run: Run, final: Path, skipped: bool) -> dict:
    marker = json.loads((final / MARKER).read_text())
    row = {"hash": run.hash, **run.label, "status": marker.get("status", "ok"),
           "skipped": skipped, "seconds": marker.get("seconds")}
    if run.kind == "train":
        mpath = final / "metrics.json"
        if mpath.exists():
            m = json.loads(mpath.read_text())
            row.update(best_test_accuracy=m.get("best_test_accuracy"),
                       best_epoch=m.get("best_epoch"), epochs=m.get("epochs"),
                       final_test_accuracy=m.get("final_test_accuracy"),
                       samples_per_second=m.get("samples_per_second"),
                       train_seconds=m.get("train_seconds"),
                       mismatches=m.get("mismatches"))
    else:
        rpath = final / "report.json"
        if rpath.exists():
            r = json.loads(rpath.read_text())
            row.update(fmax_mhz=r.get("fmax_mhz"), target_mhz=r.get("target_mhz"),
                       timing_met=r.get("timing_met"), luts=r.get("luts"),
                       compute_samples_per_second=r.get("compute_samples_per_second"),
                       error=r.get("error"))
    return row


# --------------------------------------------------------------------------
# The sweep on Dask
# --------------------------------------------------------------------------

def local_cluster(workers: int | None = None):
    """A local Dask cluster of ``workers`` single-threaded worker processes (default: the
    cores this process may use)."""
    import logging
    from dask.distributed import LocalCluster
    n = workers or len(os.sched_getaffinity(0))
    return LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                        dashboard_address=":0", silence_logs=logging.ERROR)


def _clean_stale(out: Path) -> int:
    """Remove temporary run directories left by attempts that died (run only when no other
    sweep writes into ``out``)."""
    n = 0
    for p in (out / "runs").glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)
        n += 1
    return n


def run_sweep(plan: Plan, out, client=None, workers=None, progress=True, log=print,
              retries: int = 1) -> dict:
    """Run ``plan``'s unfinished runs on ``client`` (default: a new local cluster), then
    write the summary.  Returns ``{"rows": [...], "failed": [(run, error)], "ran": n,
    "skipped": n}``."""
    from dask.distributed import Client, as_completed
    out = Path(out).resolve()          # the workers may run elsewhere (a shared file system)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    _clean_stale(out)
    write_atomic(out / "sweep.json", json.dumps(
        {"kind": plan.kind, "source": plan.source, "notes": plan.notes,
         "runs": [{"hash": r.hash, "label": r.label, "estimate_s": r.estimate_s}
                  for r in plan.runs]}, indent=2, default=str) + "\n")
    todo = [r for r in plan.runs if not is_done(out, r.hash)]
    skipped = len(plan.runs) - len(todo)
    log(f"{len(plan.runs)} runs: {skipped} already complete, {len(todo)} to run; "
        f"results in {out}")
    failed = []
    own = None
    if todo:
        if client is None:
            own = Client(local_cluster(workers))
            client = own
        try:
            futures = {}
            for run in sorted(todo, key=lambda r: -(r.estimate_s or 0)):   # longest first
                fut = client.submit(run_one, run, str(out), key=f"nitrod-run-{run.hash}",
                                    retries=retries, priority=int(run.estimate_s or 0))
                futures[fut] = run
            bar = None
            if progress:
                from tqdm import tqdm
                bar = tqdm(total=len(futures), unit="run", file=sys.stderr, dynamic_ncols=True)
            for fut in as_completed(futures):
                run = futures[fut]
                if fut.status == "error":
                    exc = fut.exception()
                    failed.append((run, f"{type(exc).__name__}: {exc}"))
                    log(f"run {run.hash} ({_label_text(run.label)}) failed: "
                        f"{type(exc).__name__}: {exc}")
                if bar is not None:
                    bar.set_postfix_str(_label_text(run.label)[:60])
                    bar.update(1)
            if bar is not None:
                bar.close()
        finally:
            if own is not None:
                cluster = own.cluster
                own.close()
                cluster.close()
    rows = [_result_row(r, run_dir(out, r.hash), skipped=False) for r in plan.runs
            if is_done(out, r.hash)]
    summarise(plan, rows, out, failed)
    return {"rows": rows, "failed": failed, "ran": len(todo) - len(failed), "skipped": skipped}


def _label_text(label: dict) -> str:
    return " ".join(str(v) for v in label.values())


# --------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------

def _group_key(run: Run) -> tuple:
    """A run's row in the summary: its label without the seed."""
    return tuple((k, v) for k, v in run.label.items() if k != "seed")


_PLAIN_FIELDS = ("dataset", "network", "backend", "compat", "board", "core", "geometry")


def _key_text(key: tuple) -> str:
    return " ".join(str(v) if k in _PLAIN_FIELDS else f"{k}={v}" for k, v in key)


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _by_group(plan, rows) -> dict:
    """``{group key: [rows]}`` in the plan's order (every group, even one without results)."""
    runs = {r.hash: r for r in plan.runs}
    groups = {k: [] for k in dict.fromkeys(_group_key(r) for r in plan.runs)}
    for row in rows:
        groups[_group_key(runs[row["hash"]])].append(row)
    return groups


def _train_groups(plan, rows):
    groups = []
    for key, rs in _by_group(plan, rows).items():
        d = dict(key)
        acc_m, acc_s = _mean_std([100 * r["best_test_accuracy"] for r in rs
                                  if r.get("best_test_accuracy") is not None])
        ep_m, ep_s = _mean_std([r.get("best_epoch") for r in rs])
        run_m, _ = _mean_std([r.get("epochs") for r in rs])
        sec_m, _ = _mean_std([r.get("train_seconds") for r in rs])
        paper = PAPER_RESULTS.get((d.get("network"), PAPER_DATASET.get(d.get("dataset"))))
        expected = sum(1 for r in plan.runs if _group_key(r) == key)
        mism = [r["mismatches"] for r in rs if r.get("mismatches") is not None]
        if mism:
            d["mismatches"] = sum(mism)         # sim runs with check: weights unlike golden's
        groups.append({**d, "runs": len(rs), "planned": expected, "best_mean": acc_m,
                       "best_std": acc_s, "best_epoch_mean": ep_m, "best_epoch_std": ep_s,
                       "epochs_mean": run_m, "train_seconds_mean": sec_m,
                       "epochs_max": _epochs_of(plan, key),
                       "paper": paper, "paper_dataset": PAPER_DATASET.get(d.get("dataset"))})
    return groups


def _epochs_of(plan, key):
    for r in plan.runs:
        if _group_key(r) == key:
            return r.config.get("train", {}).get("epochs")
    return None


def _build_groups(plan, rows):
    groups = []
    for key, rs in _by_group(plan, rows).items():
        fmax = sorted(r["fmax_mhz"] for r in rs if r.get("fmax_mhz") is not None)
        sps = sorted(r["compute_samples_per_second"] for r in rs
                     if r.get("compute_samples_per_second") is not None)
        groups.append({**dict(key), "runs": len(rs),
                       "seeds": ",".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"])),
                       "fmax_min": fmax[0] if fmax else None,
                       "fmax_median": statistics.median(fmax) if fmax else None,
                       "fmax_max": fmax[-1] if fmax else None,
                       "target_mhz": next((r["target_mhz"] for r in rs if r.get("target_mhz")), None),
                       "met": sum(1 for r in rs if r.get("timing_met")),
                       "sps_min": sps[0] if sps else None,
                       "sps_median": statistics.median(sps) if sps else None,
                       "sps_max": sps[-1] if sps else None,
                       "refused": sum(1 for r in rs if r.get("status") == "refused")})
    return groups


def _f(v, fmt="{:.2f}"):
    return "" if v is None else fmt.format(v)


def summary_markdown(plan, groups, failed, rows=()) -> str:
    lines = []
    if plan.kind == "train":
        lines += ["| dataset | network | backend | mode | other | runs | best test % (mean ± std) "
                  "| epoch of best (mean ± std) | epochs run (mean, of max) | train s/run | paper |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for g in groups:
            other = " ".join(f"{k}={v}" for k, v in g.items()
                             if k not in _TRAIN_GROUP_FIELDS)
            acc = (f"{g['best_mean']:.2f} ± {g['best_std']:.2f}" if g["best_mean"] is not None
                   else "")
            ep = (f"{g['best_epoch_mean']:.1f} ± {g['best_epoch_std']:.1f}"
                  if g["best_epoch_mean"] is not None else "")
            paper = (f"{g['paper']:.2f} ({g['paper_dataset']})" if g["paper"] is not None else "")
            lines.append(f"| {g['dataset']} | {g['network']} | {g['backend']} | {g['compat']} | "
                         f"{other} | {g['runs']}/{g['planned']} | {acc} | {ep} | "
                         f"{_f(g['epochs_mean'], '{:.1f}')} / {g['epochs_max']} | "
                         f"{_f(g['train_seconds_mean'], '{:.0f}')} | {paper} |")
        lines.append("\nbest test %: each run's best test accuracy over its epochs (the paper's "
                     "figure), mean and sample standard deviation over seeds; paper: NITRO-D "
                     "Table 1, mean of 10 runs on the full dataset named.")
    else:
        lines += ["| board | core | geometry | seeds | Fmax MHz min | median | max | clock MHz | "
                  "met | samples/s min | median | max |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for g in groups:
            lines.append(f"| {g['board']} | {g['core']} | {g['geometry']} | {g['seeds']} | "
                         f"{_f(g['fmax_min'])} | {_f(g['fmax_median'])} | {_f(g['fmax_max'])} | "
                         f"{_f(g['target_mhz'], '{:g}')} | {g['met']}/{g['runs']} | "
                         f"{_f(g['sps_min'], '{:.0f}')} | {_f(g['sps_median'], '{:.0f}')} | "
                         f"{_f(g['sps_max'], '{:.0f}')} |")
        lines.append("\nFmax: post-route, the core clock, over the placement seeds; samples/s: "
                     "the projected compute-only training throughput at the clock the build "
                     "runs (only where timing is met).")
    odd = [r for r in rows if r.get("status") not in (None, "ok")]
    if odd:
        lines.append("\nruns that completed with another status than ok:")
        lines += [f"* {r['hash']} {' '.join(str(r.get(k)) for k in _plot_fields(plan))} seed "
                  f"{r.get('seed')}: {r['status']}" for r in odd]
    for note in plan.notes:
        lines.append(f"\n* {note}")
    if failed:
        lines.append(f"\n{len(failed)} run(s) failed (rerun the sweep to retry them):")
        for run, err in failed:
            lines.append(f"* {run.hash} {_label_text(run.label)}: {err}")
    return "\n".join(lines) + "\n"


_TRAIN_GROUP_FIELDS = ("dataset", "network", "backend", "compat", "runs", "planned", "best_mean",
                       "best_std", "best_epoch_mean", "best_epoch_std", "epochs_mean",
                       "train_seconds_mean", "epochs_max", "paper", "paper_dataset")


def _csv(rows: list) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def summarise(plan: Plan, rows: list, out, failed=()) -> list:
    """Write ``summary.md``, ``summary.csv`` (one line per group), ``runs.csv`` (one per run)
    and ``summary.png``; returns the groups."""
    out = Path(out)
    groups = (_train_groups if plan.kind == "train" else _build_groups)(plan, rows)
    write_atomic(out / "summary.md", summary_markdown(plan, groups, list(failed), rows))
    write_atomic(out / "summary.csv", _csv(groups) if groups else "")
    write_atomic(out / "runs.csv", _csv(rows) if rows else "")
    if any(g["runs"] for g in groups):
        _plot(plan, groups, rows, out / "summary.png")
    return groups


def _plot(plan, groups, rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shown = [g for g in groups if g["runs"]]
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(shown) + 2), 5))
    names = [_key_text(tuple((k, g[k]) for k in g if k in _plot_fields(plan)))
             for g in shown]
    x = range(len(shown))
    if plan.kind == "train":
        ax.bar(x, [g["best_mean"] for g in shown], yerr=[g["best_std"] for g in shown],
               capsize=4, color=["C0" if g["compat"] == "spec" else "C1" for g in shown])
        for i, g in enumerate(shown):
            if g["paper"] is not None:
                ax.plot([i - 0.4, i + 0.4], [g["paper"]] * 2, "k--", lw=1)
        ax.set_ylabel("best test accuracy, % (mean ± std)")
        lo = min(g["best_mean"] - (g["best_std"] or 0) for g in shown)
        ax.set_ylim(max(0, lo - 5), 100)
        ax.set_title("best test accuracy over seeds\n(blue: spec, orange: --compat authors; "
                     "dashed: the paper's figure)", fontsize=10)
    else:
        by_group = _by_group(plan, rows)
        for i, g in enumerate(shown):
            key = tuple((k, g[k]) for k in ("board", "core", "geometry"))
            fm = [r["fmax_mhz"] for r in by_group.get(key, []) if r.get("fmax_mhz")]
            ax.plot([i] * len(fm), fm, "o", color="C0")
            if g["target_mhz"]:
                ax.plot([i - 0.3, i + 0.3], [g["target_mhz"]] * 2, "r-", lw=1)
        ax.set_ylabel("post-route Fmax, MHz (red: the core clock)")
        ax.set_title("post-route Fmax over placement seeds", fontsize=10)
    ax.set_xticks(list(x))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_fields(plan):
    return (("dataset", "network", "backend", "compat") if plan.kind == "train"
            else ("board", "core", "geometry"))


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", default=None, help="the sweep file (TOML)")
    p.add_argument("--paper", action="store_true",
                   help="the grid of the paper's table for --datasets (default: digits, "
                        "mnist5k and those of mnist, fashion, cifar10 found in --data-dir), "
                        "spec and --compat authors side by side")
    p.add_argument("--datasets", default=None, help="--paper: comma-separated datasets")
    p.add_argument("--data-dir", default=None, help="folder with the datasets' files")
    p.add_argument("--seeds", type=int, default=10, help="--paper: seeds 1..N (default 10)")
    p.add_argument("--epochs", type=int, default=150,
                   help="--paper: most epochs per run, early stopping as the paper (default 150)")
    p.add_argument("--cnn-epochs", type=int, default=None,
                   help="--paper: most epochs of the CNN rows (default --epochs)")
    p.add_argument("--rows", default="mlp,cnn",
                   help="--paper: the rows to run, mlp and/or cnn (default both; the VGG rows "
                        "with --include-vgg)")
    p.add_argument("--include-vgg", action="store_true",
                   help="--paper: also the VGG8B rows (hours to days per run in NumPy: meant "
                        "for a cluster)")
    p.add_argument("--out", default=None,
                   help="results folder (default runs/sweep-FILE, or runs/paper)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="an existing Dask scheduler (tcp://host:8786); its workers need nitrod "
                        "installed and --out on a shared file system")
    p.add_argument("--workers", type=int, default=None,
                   help="local cluster: worker processes (default: the cores)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the runs and the time estimate, run nothing")
    p.add_argument("--no-estimate", action="store_true",
                   help="skip measuring this machine's speed for the estimate")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _paper_datasets(args) -> list:
    if args.datasets:
        return [d.strip() for d in args.datasets.split(",") if d.strip()]
    found = ["digits", "mnist5k"]
    if args.data_dir:
        from golden.datasets import load_dataset
        for name in ("mnist", "fashion", "cifar10"):
            try:
                load_dataset(name, args.data_dir)
                found.append(name)
            except (ValueError, OSError):
                pass
    return found


def cmd_sweep(args) -> int:
    if args.paper == bool(args.file):
        print("nitrod sweep: give a sweep file or --paper (one of them)", file=sys.stderr)
        return 2
    for name in ("seeds", "epochs", "cnn_epochs", "workers"):
        v = getattr(args, name)
        if v is not None and v < 1:
            print(f"nitrod sweep: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    try:
        if args.paper:
            plan = paper_plan(_paper_datasets(args), seeds=args.seeds, data_dir=args.data_dir,
                              epochs=args.epochs, cnn_epochs=args.cnn_epochs,
                              include_vgg=args.include_vgg,
                              rows=tuple(r.strip() for r in args.rows.split(",") if r.strip()))
            out = Path(args.out or "runs/paper")
        else:
            plan = load_sweep_file(args.file, data_dir=args.data_dir)
            out = Path(args.out or f"runs/sweep-{Path(args.file).stem}")
    except SweepError as exc:
        print(f"nitrod sweep: {exc}", file=sys.stderr)
        return 2
    if not plan.runs:
        print("nitrod sweep: the grid has no run", file=sys.stderr)
        return 2
    client = None
    if args.scheduler and not args.dry_run:
        from dask.distributed import Client
        try:
            client = Client(args.scheduler, timeout="30s")
        except (OSError, TimeoutError, ValueError) as exc:
            print(f"nitrod sweep: cannot reach the scheduler {args.scheduler}: {exc}",
                  file=sys.stderr)
            return 2
        workers = max(1, sum(client.nthreads().values()))
    else:
        workers = args.workers or len(os.sched_getaffinity(0))
    try:
        if not args.no_estimate:
            est = estimate(plan, log=print)
            print(estimate_table(plan, workers, out))
            if args.dry_run:
                print(f"(dry run) at most {_duration(est['total_s'])} of work in all")
        for note in plan.notes:
            print(f"# {note}")
        if args.dry_run:
            print(f"(dry run) {len(plan.runs)} runs in the grid, "
                  f"{sum(is_done(out, r.hash) for r in plan.runs)} complete in {out}")
            return 0
        res = run_sweep(plan, out, client=client, workers=args.workers,
                        progress=not args.quiet)
    finally:
        if client is not None:
            client.close()
    print((out / "summary.md").read_text())
    print(f"wrote {out}/summary.md, summary.csv, runs.csv, summary.png; "
          f"{res['ran']} run(s) now, {res['skipped']} already complete")
    return 1 if res["failed"] else 0
