"""``nitrod sim`` and ``nitrod board train``: training on an accelerator (simulated or a board).

``nitrod sim`` runs golden/train.py's loop (same batches, order and schedule as
``nitrod train``) with the ``sim`` backend (nitrod/backends.py): every step is computed by the
core's gateware in Verilator (the Trainer, or the SerialTrainer with ``--board icebreaker``;
MLPs and CNNs); after every epoch its weights are read back and the NumPy network scores the test
split with them.  ``--check`` trains the golden model beside it and compares every weight
after every batch, stopping at the first difference (layer, index, both values).
``--steps N`` stops after N training steps (a quick check of a long run: no epoch is scored
then).  ``--side`` and ``--depth MEM=WORDS`` set the simulated core's geometry (a CNN needs
deep memories: ``nitrod.board_build.network_max_batch``).  ``metrics.json`` adds to ``nitrod
train``'s: ``mismatches``, ``cycles_per_batch``, ``mac_utilisation`` (useful MACs / (S*S *
cycles)), ``sim_cycles_per_second`` and the geometry.  ``--waves-batch N`` replays batch N
(counted from 0 over the whole run) in a second simulator with waveform tracing from the
weights it started from, writes ``waves.vcd`` and checks that the replay ends with the same
weights.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from .compiler import CNN_CORES_NEEDED, hardware_refusal
from .options import check_applicable, prepare_out, spec_from_args, train_config

__all__ = ["cmd_sim", "cmd_board_train", "train_on_accelerator", "SimStats", "first_difference",
           "geometry_of", "core_name", "runs_cnn_of", "link_baud"]


def first_difference(got: dict, want: dict):
    """``(layer, index, got, want)`` of the first differing weight, or None."""
    for name in want:
        a, b = np.asarray(got[name]), np.asarray(want[name])
        if a.shape != b.shape:
            return name, None, a.shape, b.shape
        bad = np.argwhere(a != b)
        if len(bad):
            idx = tuple(int(i) for i in bad[0])
            return name, idx, int(a[idx]), int(b[idx])
    return None


class SimStats:
    """Cycles and wall time of the accelerator's steps."""

    def __init__(self, backend):
        self.backend = backend
        self.cycles: list[int] = []
        self.samples: list[int] = []
        self.useful_macs = 0
        self.seconds = 0.0
        self._inner = backend.train_step
        backend.train_step = self.train_step

    def train_step(self, x, target, lr_inv):
        t0 = time.perf_counter()
        yhat = self._inner(x, target, lr_inv)
        self.seconds += time.perf_counter() - t0
        self.cycles.append(int(self.backend.last_cycles))
        self.samples.append(len(x))
        self.useful_macs += self.backend.plan.useful_macs(len(x))
        return yhat

    def state(self) -> dict:
        """What a resumed run needs to go on counting (saved in the checkpoint)."""
        return {"cycles": list(self.cycles), "samples": list(self.samples),
                "useful_macs": self.useful_macs, "seconds": self.seconds}

    def restore(self, state: dict) -> None:
        self.cycles = [int(c) for c in state["cycles"]]
        self.samples = [int(m) for m in state["samples"]]
        self.useful_macs = int(state["useful_macs"])
        self.seconds = float(state["seconds"])

    def metrics(self) -> dict:
        g = self.backend.geometry
        full = [c for c, m in zip(self.cycles, self.samples) if m == self.backend.batch]
        total = sum(self.cycles)
        pes = self.backend.mac_elements
        bound = self.backend.plan.useful_macs(self.backend.batch) / pes
        per_batch = float(np.mean(full)) if full else (float(np.mean(self.cycles)) if self.cycles else 0)
        return {
            "backend": self.backend.name,
            "geometry": {k: getattr(g, k) for k in g.__dataclass_fields__},
            "steps": len(self.cycles),
            "cycles_total": total,
            "cycles_per_batch": per_batch,
            "cycles_lower_bound_per_batch": bound,
            "cycles_over_bound": per_batch / bound if bound else None,
            "mac_utilisation": self.useful_macs / (pes * total) if total else 0.0,
            "sim_cycles_per_second": total / self.seconds if self.seconds else 0.0,
            "sim_seconds": self.seconds,
        }


class _Mismatch(Exception):
    pass


class _StepLimit(Exception):
    """``--steps N``: the N-th step is done."""


def geometry_of(args):
    """The geometry of ``--board`` (its trainer's) or ``Geometry()``, with ``--side`` and
    ``--depth MEM=WORDS`` (:class:`OptionError` names a bad one)."""
    from hw.contract import Geometry, check_geometry

    from .options import OptionError
    board = getattr(args, "board", None)
    if board:
        from boards.boards import get_board
        g = get_board(board).geometry
    else:
        g = Geometry()
    if getattr(args, "side", None):
        g = g.replace(side=args.side)
    if getattr(args, "depth", None):
        from boards.build import parse_depths
        try:
            g = g.replace(**parse_depths(args.depth))
            check_geometry(g)
        except ValueError as exc:
            raise OptionError(str(exc)) from None
    return g


def runs_cnn_of(args, kind: str) -> bool:
    """Whether the core ``kind`` opens runs CNN programs: its class's ``RUNS_CNN`` (the
    Trainer's for ``nitrod sim`` without ``--board``; a board's core only with ``--board``)."""
    board = getattr(args, "board", None)
    if kind == "board" and not board:
        return False
    from nitrod.backends import core_choice
    return bool(core_choice(board, None).core.RUNS_CNN)


def core_name(backend) -> str:
    """What runs the steps: the Trainer's array, or the SerialTrainer's one multiplier."""
    S = backend.geometry.side
    macs = backend.mac_elements
    if macs == S * S:
        return f"Trainer {S} x {S} ({macs} MACs)"
    return f"SerialTrainer ({S} x {S} tiles, {macs} MAC)"


def link_baud(args) -> int:
    """``--baud``, else ``--board``'s bitstream's (boards/boards.py), else the default."""
    if getattr(args, "baud", None):
        return args.baud
    board = getattr(args, "board", None)
    if board:
        from boards.boards import get_board
        return get_board(board).baud
    from hw.contract.link import DEFAULT_BAUD
    return DEFAULT_BAUD


def cmd_sim(args) -> int:
    """``nitrod sim``: train on the simulated core (over its bus, or its UART link)."""
    return train_on_accelerator(args, "sim-uart" if args.link == "uart" else "sim")


def cmd_board_train(args) -> int:
    """``nitrod board train``: train on a board over its serial port."""
    return train_on_accelerator(args, "board")


def train_on_accelerator(args, kind: str) -> int:
    """The training loop of ``nitrod train`` on an accelerator backend ``kind`` ("sim",
    "sim-uart" or "board"), with ``--check`` against golden."""
    from golden.datasets import load_dataset
    from golden.network import Network
    from golden.train import CHECKPOINT_FILE, load_train_state, train, write_files_atomically
    from nitrod.backends import open_backend

    where = "the board" if kind == "board" else "the simulator"
    prog = "nitrod board train" if kind == "board" else "nitrod sim"
    runs_cnn = runs_cnn_of(args, kind)
    if args.model != "mlp" and not runs_cnn:
        print(f"{prog}: {CNN_CORES_NEEDED}", file=sys.stderr)
        return 2
    check_applicable(args)
    log = (lambda s: None) if args.quiet else print
    ds = load_dataset(args.dataset, args.data_dir)
    spec = spec_from_args(args, ds)
    geometry = geometry_of(args)
    refusal = hardware_refusal(spec, runs_cnn)
    if refusal:
        print(f"{prog}: {refusal}", file=sys.stderr)
        return 2
    out = prepare_out(args)          # before the simulator or the board is opened
    model = "CNN" if spec.is_cnn else "MLP"
    print(f"dataset {ds.name}: {len(ds.x_train)} train / {len(ds.x_test)} test; "
          f"{model} {','.join(spec.layers)}; connecting to {where} ...", flush=True)
    t0 = time.perf_counter()
    if kind == "board":
        options = {"port": args.port, "baud": link_baud(args), "timeout": args.timeout,
                   "retries": args.retries, "board": getattr(args, "board", None)}
    else:
        options = {"geometry": geometry, "board": getattr(args, "board", None),
                   "sim_server": getattr(args, "sim_server", None)}
    backend = open_backend(kind, spec, batch=args.batch, seed=args.seed, **options)
    print(f"{where} ready in {time.perf_counter() - t0:.1f} s: {core_name(backend)}", flush=True)
    print(backend.plan.describe())
    stats = SimStats(backend)
    ref = Network(spec, seed=args.seed) if args.check else None
    if ref is not None and args.resume:
        ref.load_weights(load_train_state(out / CHECKPOINT_FILE)[0].weights())
    state = {"batch": 0, "mismatches": 0, "first": None, "waves": None}
    waves_batch = args.waves_batch

    inner = backend.train_step

    def train_step(x, target, lr_inv):
        if waves_batch is not None and state["batch"] == waves_batch:
            state["waves"] = {"weights": backend.weights(), "x": x.copy(), "t": target.copy(),
                              "lr_inv": lr_inv}
        return inner(x, target, lr_inv)

    backend.train_step = train_step

    max_steps = getattr(args, "steps", None)

    def after_step(epoch, b, x, target, lr_inv, yhat):
        if state["waves"] is not None and "after" not in state["waves"]:
            state["waves"]["after"] = backend.weights()
        state["batch"] += 1
        if ref is not None:
            check_step(epoch, b, x, target, lr_inv, yhat)
        if max_steps is not None and state["batch"] >= max_steps:
            raise _StepLimit

    def check_step(epoch, b, x, target, lr_inv, yhat):
        want_yhat = ref.train_step(x, target, lr_inv)
        diff = first_difference(backend.weights(), ref.weights())
        if diff is None and not np.array_equal(yhat, want_yhat):
            i = tuple(int(v) for v in np.argwhere(yhat != want_yhat)[0])
            diff = ("output predictions", i, int(yhat[i]), int(want_yhat[i]))
        if diff is not None:
            state["mismatches"] += 1
            state["first"] = {"epoch": epoch, "batch": b, "layer": diff[0],
                              "index": diff[1], "sim": diff[2], "golden": diff[3]}
            raise _Mismatch(diff)

    def extra():
        return {**stats.metrics(), "mismatches": state["mismatches"],
                "checked": ref is not None, "first_mismatch": state["first"]}

    try:
        res = train(ds, spec, train_config(args), out_dir=out, progress=not args.quiet,
                    log=log, backend=backend, after_step=after_step, extra_metrics=extra,
                    resume=args.resume, interruptible=True,
                    extra_state=(stats.state, stats.restore))
    except _StepLimit:
        backend.close()
        m = extra()
        if out:
            write_files_atomically(out, {"metrics.json": json.dumps(m, indent=2).encode()})
        print(f"stopped after {m['steps']} steps (--steps); {_run_summary(m)}")
        return 0
    except _Mismatch:
        f = state["first"]
        print(f"MISMATCH at epoch {f['epoch']} batch {f['batch']}: {f['layer']}{f['index']} is "
              f"{f['sim']} on the simulator, {f['golden']} in the golden model", file=sys.stderr)
        if out:
            write_files_atomically(out, {"metrics.json": json.dumps(extra(), indent=2).encode()})
        _close_quietly(backend)
        return 1
    except BaseException:
        _close_quietly(backend)
        raise
    backend.close()
    m = res.metrics
    if waves_batch is not None:
        m["waves"] = _replay_with_waves(spec, args, geometry, state["waves"], out, waves_batch)
        if out:
            write_files_atomically(out, {"metrics.json": json.dumps(m, indent=2).encode()})
    print(f"best test accuracy {100 * m['best_test_accuracy']:.2f}% (epoch {m['best_epoch']}); "
          f"{_run_summary(m)}")
    if out:
        print(f"wrote {out}/metrics.json, learning_curves.png, checkpoint.npz")
    return 0


def _close_quietly(backend) -> None:
    """Close ``backend`` after an error (a simulator that the same Ctrl-C stopped cannot be
    closed cleanly: the error that is being raised is the one to report)."""
    try:
        backend.close()
    except Exception:
        pass


def _replay_with_waves(spec, args, geometry, snap, out, index):
    from nitrod.backends import open_backend

    if snap is None:
        print(f"--waves-batch {index}: the run had fewer batches", file=sys.stderr)
        return None
    # the same core as the run (--board's, or the Trainer), now with waveform tracing
    be = open_backend("sim", spec, batch=args.batch, seed=args.seed, geometry=geometry,
                      waves=True, board=getattr(args, "board", None),
                      sim_server=getattr(args, "sim_server", None))
    bus = be.bus
    try:
        be.load_weights(snap["weights"])
        be.train_step(snap["x"], snap["t"], snap["lr_inv"])
        same = first_difference(be.weights(), snap["after"]) is None
    finally:
        bus.close()
    vcd = Path(bus.run.test_dir) / "dump.vcd"
    dest = None
    if out and vcd.exists():
        out.mkdir(parents=True, exist_ok=True)
        dest = out / "waves.vcd"
        shutil.move(str(vcd), dest)
    print(f"waveform of batch {index}: {dest or vcd} (replay {'identical' if same else 'DIFFERS'})")
    return {"batch": index, "file": str(dest or vcd), "replay_identical": same}


def _run_summary(m: dict) -> str:
    """A simulated run's check and speed in one line (``nitrod sim``'s last line)."""
    return (f"mismatches {m['mismatches'] if m['checked'] else 'not checked'}; "
            f"{m['cycles_per_batch']:.0f} cycles/batch ({m['cycles_over_bound']:.3f}x the bound "
            f"{m['cycles_lower_bound_per_batch']:.0f}), MAC utilisation "
            f"{m['mac_utilisation']:.3f}, {m['sim_cycles_per_second'] / 1e3:.0f} k simulated "
            f"cycles/s")
