"""NITRO-D's integer arithmetic primitives.

Everything here works on NumPy integer arrays (or Python ints) and is exact.
These functions are the reference that every RTL unit in ``hw/`` is checked
against, so they are written to be obviously correct first and fast second.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "tdiv", "clip", "nitro_scale", "scale_factor",
    "RELU_MEAN_CORRECTION", "nitro_relu", "nitro_relu_backward",
    "exact_matmul", "matmul_bound", "FLOAT64_EXACT_LIMIT", "INT64_LIMIT",
    "ONE_HOT_VALUE", "ACT_MAX", "SCALE_SHIFT",
]

#: Largest magnitude a NITRO Scaling output may take (the int8 range minus -128).
ACT_MAX = 127

#: NITRO Scaling's divisor is ``2**SCALE_SHIFT * fan_in``.
SCALE_SHIFT = 8

#: One-hot targets are 32 for the true class and 0 elsewhere.
ONE_HOT_VALUE = 32

#: Mean correction ``c(a)`` of NITRO-ReLU for each supported inverse slope ``a``.
RELU_MEAN_CORRECTION = {3: 31, 4: 36, 5: 38, 7: 40, 8: 42, 10: 43, 15: 44, 16: 44, 20: 45}

#: Every integer of magnitude <= 2**53 is exact in float64.
FLOAT64_EXACT_LIMIT = 2 ** 53
INT64_LIMIT = 2 ** 63 - 1


def tdiv(a, d):
    """Integer division rounding toward zero (C semantics): ``tdiv(-7, 2) == -3``.

    ``a`` is an integer array or int, ``d`` a positive integer (or array of them).
    NumPy's ``//`` rounds toward minus infinity; for a negative dividend we
    instead compute the ceiling ``(a + d - 1) // d``, which equals truncation.
    """
    if isinstance(d, (int, np.integer)):
        d = int(d)
        if d <= 0:
            raise ZeroDivisionError(f"tdiv needs a positive divisor, got {d}")
        if isinstance(a, (int, np.integer)):
            q = abs(int(a)) // d
            return -q if a < 0 else q
    else:
        d = np.asarray(d)
        if d.dtype.kind not in "iu":
            raise TypeError(f"tdiv is integer-only, got divisor dtype {d.dtype}")
        if np.any(d <= 0):
            raise ZeroDivisionError(f"tdiv needs positive divisors, got {d!r}")
        d = d.astype(np.int64)
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"tdiv is integer-only, got dtype {a.dtype}")
    a = a.astype(np.int64, copy=False)
    if isinstance(d, int):
        if d == 1:
            return a.copy()
        # (a >> 63) is -1 for a negative a and 0 otherwise: add d - 1 to negatives only
        q = a >> 63
        q &= d - 1
        q += a
        q //= d
        return q
    return (a + (a < 0) * (d - 1)) // d


def clip(a, lo: int, hi: int):
    """Saturate ``a`` to ``[lo, hi]``."""
    return np.clip(a, lo, hi)


def scale_factor(fan_in: int) -> int:
    """NITRO Scaling's divisor ``SF = 2**SCALE_SHIFT * fan_in`` (``2**8 * fan_in``)."""
    if fan_in <= 0:
        raise ValueError(f"fan_in must be positive, got {fan_in}")
    return (1 << SCALE_SHIFT) * int(fan_in)


def nitro_scale(z, fan_in: int):
    """NITRO Scaling ``clip(tdiv(z, 2**8 * fan_in), -127, 127)`` as int16 (fits int8)."""
    return clip(tdiv(z, scale_factor(fan_in)), -ACT_MAX, ACT_MAX).astype(np.int16)


def _relu_c(a: int) -> int:
    try:
        return RELU_MEAN_CORRECTION[a]
    except KeyError:
        raise ValueError(f"NITRO-ReLU inverse slope must be one of "
                         f"{sorted(RELU_MEAN_CORRECTION)}, got {a}") from None


def nitro_relu(x, a: int = 4):
    """NITRO-ReLU forward: ``min(max(x,0),127) + tdiv(min(max(x,-127),0), a) - c(a)``."""
    c = _relu_c(a)
    x = np.asarray(x, dtype=np.int64)
    pos = np.clip(x, 0, ACT_MAX)
    neg = tdiv(np.clip(x, -ACT_MAX, 0), a)
    return (pos + neg - c).astype(np.int8)


def nitro_relu_backward(d, x, a: int = 4):
    """NITRO-ReLU backward with ``x`` the layer's (scaled) input.

    ``d`` where ``0 <= x < 127``; ``tdiv(d, a)`` where ``-127 <= x < 0``;
    0 where the input saturated (``x >= 127`` or ``x < -127``).
    """
    _relu_c(a)
    d = np.asarray(d, dtype=np.int64)
    x = np.asarray(x)
    out = np.where((x >= 0) & (x < ACT_MAX), d, 0)
    neg = (x < 0) & (x >= -ACT_MAX)
    if neg.any():
        out = np.where(neg, tdiv(d, a), out)
    return out


def matmul_bound(maxabs_a: int, maxabs_b: int, k: int) -> int:
    """Largest magnitude any partial sum of a length-``k`` dot product can reach."""
    return int(maxabs_a) * int(maxabs_b) * int(k)


def _maxabs(x: np.ndarray) -> int:
    if x.size == 0:
        return 0
    return max(int(x.max()), -int(x.min()))


def _maxabs_bound(x: np.ndarray) -> int:
    """An upper bound of max|x|: the dtype's own bound for 8/16-bit arrays
    (free), the measured value for wider ones."""
    if x.dtype.itemsize <= 2:
        info = np.iinfo(x.dtype)
        return max(int(info.max), -int(info.min))
    return _maxabs(x)


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact integer ``a @ b`` as int64, fast where it is provably safe.

    NumPy's integer matmul does not use BLAS. If ``max|a| * max|b| * k < 2**53``
    (``k`` the contraction length), every product and every partial sum of the
    dot products, in any summation order, is an integer of magnitude below
    2**53 and therefore exact in float64, so float64 BLAS returns the exact
    result. Otherwise we fall back to int64, after checking that the same bound
    stays below 2**63 (no wrap-around is possible); beyond that we raise.
    """
    if a.dtype.kind not in "iu" or b.dtype.kind not in "iu":
        raise TypeError(f"exact_matmul is integer-only, got {a.dtype} and {b.dtype}")
    k = a.shape[-1]
    bound = matmul_bound(_maxabs_bound(a), _maxabs_bound(b), k)
    if bound >= FLOAT64_EXACT_LIMIT and (a.dtype.itemsize <= 2 or b.dtype.itemsize <= 2):
        bound = matmul_bound(_maxabs(a), _maxabs(b), k)     # tighten with measured values
    if bound < FLOAT64_EXACT_LIMIT:
        return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    if bound > INT64_LIMIT:
        raise OverflowError(f"integer matmul could exceed int64: bound {bound} "
                            f"(k={k}); values have grown beyond what is representable")
    return a.astype(np.int64) @ b.astype(np.int64)
