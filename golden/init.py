"""Integer Kaiming-uniform initialisation for NITRO-ReLU (a = 4, gain 1372/1000)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["kaiming_bound", "kaiming_uniform"]


def kaiming_bound(fan_in: int) -> int:
    """``min(64, (1372 * 128 * 1732) // (isqrt(fan_in) * 10**6))``."""
    if fan_in <= 0:
        raise ValueError(f"fan_in must be positive, got {fan_in}")
    return min(64, (1372 * 128 * 1732) // (math.isqrt(fan_in) * 10 ** 6))


def kaiming_uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """Weights uniform over the integers in ``[-bound, bound]``, as int64."""
    bound = kaiming_bound(fan_in)
    return rng.integers(-bound, bound + 1, size=shape, dtype=np.int64)
