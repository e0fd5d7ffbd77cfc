"""``nitrod bench``: performance figures (golden samples/s; a core's cycles per step)."""

from __future__ import annotations

import json
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


def cmd_bench_sim(args) -> int:
    """Cycles of one training step of MLP 784-100-50-10 at batch 64 (random data) on the
    simulated Trainer vs the lower bound, MAC utilisation and simulated cycles per second."""
    from golden.datasets import one_hot
    from golden.network import NetworkSpec
    from nitrod.backends import open_backend

    hidden = [int(v) for v in args.hidden.split(",")]
    spec = NetworkSpec((1, 1, args.inputs), args.classes, tuple(f"l{n}" for n in hidden))
    geometry = geometry_of(args)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    backend = open_backend("sim", spec, batch=args.batch, seed=0, geometry=geometry,
                           board=getattr(args, "board", None))
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
    m["network"] = f"{args.inputs}-{'-'.join(map(str, hidden))}-{args.classes}"
    m["batch"] = args.batch
    print(f"MLP {m['network']}, batch {args.batch}, {core_name(backend)}, {args.steps} steps:")
    print(f"  cycles per step        {m['cycles_per_batch']:.0f}")
    print(f"  lower bound            {m['cycles_lower_bound_per_batch']:.0f}  "
          f"(useful MACs / MAC elements)")
    print(f"  cycles / bound         {m['cycles_over_bound']:.3f}")
    print(f"  MAC utilisation        {m['mac_utilisation']:.3f}")
    print(f"  simulated cycles/s     {m['sim_cycles_per_second']:.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(m, indent=2))
    return 0
