"""The plan: the runs of a sweep file or of the paper's grid, resolved and checked."""

from __future__ import annotations

import argparse
import json
import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .store import config_hash

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


def network_args(network: str, dataset: str, data_dir, backend: str, options: dict, seed: int):
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
    args = network_args(network, dataset, data_dir, backend, options, seed)
    info = dataset_info(dataset, data_dir)
    spec = spec_from_args(args, _Shape(info["input_shape"], info["classes"]))
    cfg = train_config(args, **_train_overrides(options))
    config = {"kind": "train", "dataset": dataset, "backend": backend,
              "spec": json.loads(spec.to_json()), "train": asdict(cfg)}
    if backend == "sim":
        from nitrod.compiler import hardware_refusal
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


def label_text(label: dict) -> str:
    """A run's label as one line."""
    return " ".join(str(v) for v in label.values())
