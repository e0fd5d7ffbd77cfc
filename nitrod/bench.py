"""``nitrod bench``: performance figures (golden samples/s; a core's cycles per step)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from .accel_train import SimStats, core_name, geometry_of

__all__ = ["cmd_bench_golden", "cmd_bench_sim", "golden_bench_spec"]


def golden_bench_spec(args):
    """The network ``nitrod bench golden`` times: ``--model mlp`` (784-HIDDEN-CLASSES) or
    ``--model cnn --arch NAME|LAYERS`` on ``--input-shape`` (default 1x8x8 for the ``small``
    CNN, which is the digits network, else 1x28x28)."""
    from golden.network import ARCHITECTURES, NetworkSpec, mlp_layers, parse_layers
    arch = getattr(args, "arch", "small")
    text = getattr(args, "input_shape", None) or (
        "1x8x8" if args.model == "cnn" and arch == "small" else "1x28x28")
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--input-shape {text!r}: expected CxHxW, e.g. 1x28x28") from None
    if len(shape) != 3:
        raise ValueError(f"--input-shape {text!r}: expected CxHxW, e.g. 1x28x28")
    if args.model == "mlp":
        return NetworkSpec(shape, args.classes, mlp_layers(args.hidden))
    layers, extra = ARCHITECTURES.get(arch, (arch, {}))
    return NetworkSpec(shape, args.classes, parse_layers(layers), fwd_decay_inv=30000,
                       decoder_dim=extra.get("decoder_dim", 2048))


def cmd_bench_golden(args) -> int:
    """Training samples/s of the golden model (default MLP 784-100-50-10 at batch 64)."""
    from golden.benchmark import bench_golden
    spec = golden_bench_spec(args)
    batches = args.batches or (400 if args.model == "mlp" else 20)
    r = bench_golden(batches=batches, batch=args.batch, threads=args.threads, spec=spec)
    shape = "x".join(map(str, spec.input_shape))
    print(f"{args.model.upper()} {','.join(spec.layers)} on {shape}, batch {args.batch}, "
          f"{r['threads']} BLAS thread(s): {r['macs_per_sample']} MACs/sample, "
          f"{r['gmacs']:.2f} GMAC/s")
    print(f"{r['samples_per_second']:.0f} samples/s")
    return 0


def _bench_run(args, spec, geometry, server: str) -> tuple[dict, str]:
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
            shape = spec.input_shape if spec.is_cnn else (args.inputs,)
            x = rng.integers(-127, 128, size=(args.batch,) + shape).astype(np.int8)
            y = rng.integers(0, args.classes, size=args.batch)
            backend.train_step(x, one_hot(y, args.classes), 512)
    finally:
        backend.close()
    m = stats.metrics()
    m["simulator_start_seconds"] = start
    m["sim_server"] = backend.bus.server
    m["step_cycles"] = list(stats.cycles)
    return m, core_name(backend)


def _model_cycles(args, spec, geometry):
    """The cycles of a step by the simulated core's cycle model (None without one)."""
    from nitrod.backends import core_choice
    from nitrod.compiler import compile_network

    choice = core_choice(getattr(args, "board", None), geometry)
    plan = compile_network(spec, choice.geometry, args.batch)
    return choice.core.program_cycles(choice.geometry, plan.program(512, args.batch))


def cmd_bench_sim(args) -> int:
    """Cycles of one training step of MLP 784-100-50-10 at batch 64 (random data) on the
    simulated Trainer vs the lower bound, MAC utilisation and simulated cycles per second
    (``--sim-server both``: under each server, which must agree on every step's cycles)."""
    from golden.network import NetworkSpec

    hidden = [int(v) for v in args.hidden]          # options.int_list: checked by the parser
    if args.model == "cnn":
        try:
            spec = golden_bench_spec(args)
        except ValueError as exc:
            print(f"nitrod bench sim: {exc}", file=sys.stderr)
            return 2
    else:
        spec = NetworkSpec((1, 1, args.inputs), args.classes, tuple(f"l{n}" for n in hidden))
    geometry = geometry_of(args)
    choice = getattr(args, "sim_server", None) or "native"
    servers = ["native", "cocotb"] if choice == "both" else [choice]
    runs = {}
    for server in servers:
        runs[server], core = _bench_run(args, spec, geometry, server)
    m = dict(runs[servers[0]])
    if spec.is_cnn:
        m["network"] = (f"CNN {','.join(spec.layers)} on {'x'.join(map(str, spec.input_shape))}, "
                        f"{args.classes} classes")
    else:
        m["network"] = f"MLP {args.inputs}-{'-'.join(map(str, hidden))}-{args.classes}"
    m["batch"] = args.batch
    m["sim_cycles_per_second_by_server"] = {k: r["sim_cycles_per_second"] for k, r in runs.items()}
    model = _model_cycles(args, spec, geometry)
    if model is not None:
        m["model_cycles_per_step"] = model
    print(f"{m['network']}, batch {args.batch}, {core}, {args.steps} steps:")
    print(f"  cycles per step        {m['cycles_per_batch']:.0f}"
          + (f"  (the core's cycle model: {model})" if model is not None else ""))
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
            ratio = a["sim_cycles_per_second"] / b["sim_cycles_per_second"]
            print(f"  native / cocotb        {ratio:.1f}x")
        if a["step_cycles"] != b["step_cycles"]:
            print(f"nitrod bench sim: the servers disagree on the cycles per step: native "
                  f"{a['step_cycles']}, cocotb {b['step_cycles']}", file=sys.stderr)
            status = 1
    if args.json:
        Path(args.json).write_text(json.dumps(m, indent=2))
    return status
