"""``nitrod sim`` and ``nitrod bench sim``: training on the Verilator-simulated Trainer.

``nitrod sim`` runs golden/train.py's loop (same batches, order and schedule as
``nitrod train``) with the ``sim`` backend (nitrod/backends.py): every step is computed by the
Trainer's gateware in Verilator; after every epoch its weights are read back and the NumPy
network scores the test split with them.  ``--check`` trains the golden model beside it and
compares every weight after every batch, stopping at the first difference (layer, index, both
values).  ``metrics.json`` adds to ``nitrod train``'s: ``mismatches``, ``cycles_per_batch``,
``mac_utilisation`` (useful MACs / (S*S * cycles)), ``sim_cycles_per_second`` and the
geometry.  ``--waves-batch N`` replays batch N (counted from 0 over the whole run) in a second
simulator with waveform tracing from the weights it started from, writes ``waves.vcd`` and
checks that the replay ends with the same weights.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["cmd_sim", "cmd_bench_sim", "SimStats", "first_difference"]


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

    def metrics(self) -> dict:
        g = self.backend.geometry
        full = [c for c, m in zip(self.cycles, self.samples) if m == self.backend.batch]
        total = sum(self.cycles)
        pes = getattr(self.backend, "mac_elements", g.side * g.side)
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


def _geometry(args):
    """The geometry of ``--board`` (its trainer's) or ``Geometry()``, with ``--side``."""
    from nitrod.isa import Geometry
    board = getattr(args, "board", None)
    if board:
        from boards.boards import get_board
        g = get_board(board).geometry
    else:
        g = Geometry()
    over = {}
    if getattr(args, "side", None):
        over["side"] = args.side
    if over:
        g = Geometry(**{**{k: getattr(g, k) for k in g.__dataclass_fields__}, **over})
    return g


def _core_name(backend) -> str:
    """What runs the steps: the Trainer's array, or the SerialTrainer's one multiplier."""
    S = backend.geometry.side
    macs = getattr(backend, "mac_elements", S * S)
    if macs == S * S:
        return f"Trainer {S} x {S} ({macs} MACs)"
    return f"SerialTrainer ({S} x {S} tiles, {macs} MAC)"


def cmd_sim(args, kind: str | None = None) -> int:
    """``nitrod sim`` (kind "sim", or "sim-uart" with ``--link uart``) and ``nitrod board
    train`` (kind "board"): the same training loop on any accelerator backend."""
    from golden.datasets import load_dataset
    from golden.network import Network
    from golden.train import train
    from nitrod.backends import open_backend
    from nitrod.cli import _spec_from_args, _train_config

    kind = kind or ("sim-uart" if getattr(args, "link", "bus") == "uart" else "sim")
    where = "the board" if kind == "board" else "the simulator"
    if args.model != "mlp":
        print("nitrod sim: the Trainer runs MLPs (--model mlp)", file=sys.stderr)
        return 2
    ds = load_dataset(args.dataset, args.data_dir)
    spec = _spec_from_args(args, ds)
    geometry = _geometry(args)
    out = Path(args.out) if args.out else None
    print(f"dataset {ds.name}: {len(ds.x_train)} train / {len(ds.x_test)} test; "
          f"MLP {','.join(spec.layers)}; connecting to {where} ...", flush=True)
    t0 = time.perf_counter()
    options = ({"port": args.port} if kind == "board" else
               {"geometry": geometry, "board": getattr(args, "board", None),
                "sim_server": getattr(args, "sim_server", None)})
    backend = open_backend(kind, spec, batch=args.batch, seed=args.seed, **options)
    print(f"{where} ready in {time.perf_counter() - t0:.1f} s: {_core_name(backend)}", flush=True)
    print(backend.plan.describe())
    stats = SimStats(backend)
    ref = Network(spec, seed=args.seed) if args.check else None
    state = {"batch": 0, "mismatches": 0, "first": None, "waves": None}
    waves_batch = args.waves_batch

    inner = backend.train_step

    def train_step(x, target, lr_inv):
        if waves_batch is not None and state["batch"] == waves_batch:
            state["waves"] = {"weights": backend.weights(), "x": x.copy(), "t": target.copy(),
                              "lr_inv": lr_inv}
        return inner(x, target, lr_inv)

    backend.train_step = train_step

    def after_step(epoch, b, x, target, lr_inv, yhat):
        if state["waves"] is not None and "after" not in state["waves"]:
            state["waves"]["after"] = backend.weights()
        state["batch"] += 1
        if ref is None:
            return
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
        res = train(ds, spec, _train_config(args), out_dir=out, progress=not args.quiet,
                    backend=backend, after_step=after_step, extra_metrics=extra)
    except _Mismatch:
        f = state["first"]
        print(f"MISMATCH at epoch {f['epoch']} batch {f['batch']}: {f['layer']}{f['index']} is "
              f"{f['sim']} on the simulator, {f['golden']} in the golden model", file=sys.stderr)
        if out:
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.json").write_text(json.dumps(extra(), indent=2))
        backend.close()
        return 1
    except BaseException:
        backend.close()
        raise
    backend.close()
    m = res.metrics
    if waves_batch is not None:
        m["waves"] = _replay_with_waves(spec, args, geometry, state["waves"], out, waves_batch)
        if out:
            (out / "metrics.json").write_text(json.dumps(m, indent=2))
    print(f"best test accuracy {100 * m['best_test_accuracy']:.2f}% (epoch {m['best_epoch']}); "
          f"mismatches {m['mismatches'] if m['checked'] else 'not checked'}; "
          f"{m['cycles_per_batch']:.0f} cycles/batch ({m['cycles_over_bound']:.3f}x the bound), "
          f"MAC utilisation {m['mac_utilisation']:.3f}, "
          f"{m['sim_cycles_per_second'] / 1e3:.0f} k simulated cycles/s")
    if out:
        print(f"wrote {out}/metrics.json, learning_curves.png, checkpoint.npz")
    return 0


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


def _bench_run(args, spec, geometry, hidden, server: str) -> tuple[dict, str]:
    """``args.steps`` training steps on random data (the same for every server)."""
    from golden.datasets import one_hot
    from nitrod.backends import open_backend

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    backend = open_backend("sim", spec, batch=args.batch, seed=0, geometry=geometry,
                           board=getattr(args, "board", None), sim_server=server)
    start = time.perf_counter() - t0
    stats = SimStats(backend)
    try:
        for _ in range(args.steps):
            x = rng.integers(-127, 128, size=(args.batch, args.inputs)).astype(np.int8)
            y = rng.integers(0, args.classes, size=args.batch)
            backend.train_step(x, one_hot(y, args.classes), 512)
    finally:
        backend.close()
    m = stats.metrics()
    m["simulator_start_seconds"] = start
    m["sim_server"] = backend.bus.server
    m["step_cycles"] = list(stats.cycles)
    return m, _core_name(backend)


def cmd_bench_sim(args) -> int:
    """Cycles of one training step of MLP 784-100-50-10 at batch 64 (random data) on the
    simulated Trainer vs the lower bound, MAC utilisation and simulated cycles per second
    (``--sim-server both``: under each server, which must agree on every step's cycles)."""
    from golden.network import NetworkSpec

    hidden = [int(v) for v in args.hidden.split(",")]
    spec = NetworkSpec((1, 1, args.inputs), args.classes, tuple(f"l{n}" for n in hidden))
    geometry = _geometry(args)
    choice = getattr(args, "sim_server", None) or "native"
    servers = ["native", "cocotb"] if choice == "both" else [choice]
    runs = {}
    for server in servers:
        runs[server], core = _bench_run(args, spec, geometry, hidden, server)
    m = dict(runs[servers[0]])
    m["network"] = f"{args.inputs}-{'-'.join(map(str, hidden))}-{args.classes}"
    m["batch"] = args.batch
    m["sim_cycles_per_second_by_server"] = {k: r["sim_cycles_per_second"] for k, r in runs.items()}
    print(f"MLP {m['network']}, batch {args.batch}, {core}, {args.steps} steps:")
    print(f"  cycles per step        {m['cycles_per_batch']:.0f}")
    print(f"  lower bound            {m['cycles_lower_bound_per_batch']:.0f}  "
          f"(useful MACs / MAC elements)")
    print(f"  cycles / bound         {m['cycles_over_bound']:.3f}")
    print(f"  MAC utilisation        {m['mac_utilisation']:.3f}")
    for server, r in runs.items():
        print(f"  simulated cycles/s     {r['sim_cycles_per_second']:.0f}  ({server} server, "
              f"{r['sim_seconds']:.2f} s for {r['steps']} steps; started in "
              f"{r['simulator_start_seconds']:.1f} s)")
    status = 0
    if len(runs) == 2:
        a, b = runs["native"], runs["cocotb"]
        if b["sim_cycles_per_second"]:
            print(f"  native / cocotb        {a['sim_cycles_per_second'] / b['sim_cycles_per_second']:.1f}x")
        if a["step_cycles"] != b["step_cycles"]:
            print(f"nitrod bench sim: the servers disagree on the cycles per step: native "
                  f"{a['step_cycles']}, cocotb {b['step_cycles']}", file=sys.stderr)
            status = 1
    if args.json:
        Path(args.json).write_text(json.dumps(m, indent=2))
    return status
