"""Throughput of the golden trainer (``nitrod bench golden``)."""

from __future__ import annotations

import time

import numpy as np

from .datasets import one_hot
from .network import Network, NetworkSpec, mlp_layers
from .train import blas_threads

__all__ = ["bench_golden"]


def bench_golden(batches: int = 400, batch: int = 64, threads: int | None = 1, seed: int = 0) -> dict:
    """Training samples/s of MLP 784-100-50-10 at batch 64 on random int8 data
    (the arithmetic does not depend on the values, except through the exact
    matmul's float64/int64 choice, which random full-range data exercises)."""
    spec = NetworkSpec((1, 28, 28), 10, mlp_layers("100,50"))
    net = Network(spec, seed=seed)
    rng = np.random.default_rng(seed)
    n = 64 * batch
    x = rng.integers(-128, 128, size=(n, 1, 28, 28)).astype(np.int8)
    t = one_hot(rng.integers(0, 10, size=n), 10)
    with blas_threads(threads):
        for i in range(0, n, batch):            # warm-up: one pass
            net.train_step(x[i:i + batch], t[i:i + batch], 512)
        done = 0
        t0 = time.perf_counter()
        while done < batches:
            for i in range(0, n, batch):
                net.train_step(x[i:i + batch], t[i:i + batch], 512)
                done += 1
                if done == batches:
                    break
        dt = time.perf_counter() - t0
    sps = batches * batch / dt
    return {"samples_per_second": sps, "threads": threads, "batches": batches,
            "macs_per_sample": net.macs_per_sample(),
            "gmacs": sps * net.macs_per_sample() / 1e9}
