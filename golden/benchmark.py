"""Throughput of the golden trainer (``nitrod bench golden``)."""

from __future__ import annotations

import time

import numpy as np

from .datasets import one_hot
from .network import Network, NetworkSpec, mlp_layers
from .train import blas_threads

__all__ = ["bench_golden"]


def bench_golden(batches: int = 400, batch: int = 64, threads: int | None = 1, seed: int = 0,
                 spec: NetworkSpec | None = None) -> dict:
    """Training samples/s of ``spec`` (default MLP 784-100-50-10) at ``batch`` on random int8
    data (the arithmetic does not depend on the values, except through the exact matmul's
    float64/int64 choice, which random full-range data exercises).  One pass over 64 batches
    warms up first; then ``batches`` steps are timed."""
    if spec is None:
        spec = NetworkSpec((1, 28, 28), 10, mlp_layers("100,50"))
    if batches < 1 or batch < 1:
        raise ValueError("batches and batch must be >= 1")
    net = Network(spec, seed=seed)
    rng = np.random.default_rng(seed)
    pool = min(64, batches) * batch
    x = rng.integers(-128, 128, size=(pool, *spec.input_shape)).astype(np.int8)
    t = one_hot(rng.integers(0, spec.classes, size=pool), spec.classes)
    with blas_threads(threads):
        for i in range(0, pool, batch):            # warm-up: one pass
            net.train_step(x[i:i + batch], t[i:i + batch], 512)
        done = 0
        t0 = time.perf_counter()
        while done < batches:
            for i in range(0, pool, batch):
                net.train_step(x[i:i + batch], t[i:i + batch], 512)
                done += 1
                if done == batches:
                    break
        dt = time.perf_counter() - t0
    sps = batches * batch / dt
    return {"samples_per_second": sps, "threads": threads, "batches": batches, "batch": batch,
            "layers": list(spec.layers), "input_shape": list(spec.input_shape),
            "macs_per_sample": net.macs_per_sample(),
            "gmacs": sps * net.macs_per_sample() / 1e9}
