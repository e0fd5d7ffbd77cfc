"""``compat="authors"``: reproducing the authors' published code instead of the spec.

The golden model follows the arithmetic specification by default (``compat="spec"``). The
authors' public implementation differs from it in a few places that change results; with
``compat="authors"`` the golden model reproduces each of them:

* ``int8_loss_error``: the loss error ``yhat - y`` is stored in int8 and wraps when
  ``yhat < -96`` (network-level; every network).
* ``int32_wrap``: matrix products (forward sums, errors back through local classifiers) and
  weight gradients summed over the batch are int32 accumulators that wrap (network-level).
* ``double_linear_update``: in CNNs (networks with any conv or pool layer), every linear
  block takes its local training step twice per batch: once as in the spec, then again on the
  same stored input with the once-updated weights, so the gradient step and the weight decay are
  applied a second time. Conv blocks and the output layer are updated once (network-level;
  it never applies to MLPs, which the authors' code trains with a separate model).
* ``decoder_pool_zero_pad``: the max-pool in front of a conv block's local classifier pads
  with 0 instead of the most negative value, so a padding cell can win a window whose real
  values are all negative (network-level; conv blocks whose decoder pool is padded).
* ``drop_last_batch``: the training loop drops the last partial batch of every epoch
  (``len // batch`` batches; a training-loop matter, on :class:`golden.train.TrainConfig`).

The network-level quirks are fields of :class:`golden.network.NetworkSpec`, so a checkpoint
records them; ``NetworkSpec(compat="authors")`` turns them all on, and each one can also be set
on its own (with ``compat="spec"``) to isolate it.
"""

from __future__ import annotations

import numpy as np

from .arith import exact_matmul

__all__ = ["COMPAT_MODES", "NETWORK_QUIRKS", "QUIRK_DESCRIPTIONS", "check_mode", "wrap_int32",
           "int32_matmul", "matmul"]

#: The two modes: the specification (default) and the authors' published code.
COMPAT_MODES = ("spec", "authors")

#: The network-level quirks (NetworkSpec fields), in the order they are reported.
NETWORK_QUIRKS = ("int8_loss_error", "int32_wrap", "double_linear_update", "decoder_pool_zero_pad")

#: One line on each quirk (network-level and the training loop's).
QUIRK_DESCRIPTIONS = {
    "int8_loss_error": "loss error stored in int8 (wraps when yhat < -96)",
    "int32_wrap": "int32 accumulators that wrap (matrix products, weight gradients)",
    "double_linear_update": "CNNs: every linear block updated twice per step",
    "decoder_pool_zero_pad": "conv blocks' decoder max-pool padded with 0",
    "drop_last_batch": "last partial batch of each epoch dropped",
}


def check_mode(mode: str) -> str:
    if mode not in COMPAT_MODES:
        raise ValueError(f"compat must be one of {COMPAT_MODES}, got {mode!r}")
    return mode


_INT32_SPAN = 1 << 32
_INT32_HALF = 1 << 31


def wrap_int32(a) -> np.ndarray:
    """Two's-complement wrap of integers to int32, returned as int64.

    Summing in a wrapping int32 accumulator, in any order, gives the exact sum wrapped once
    at the end (addition modulo 2**32 is associative), which is what this computes.
    """
    a = np.asarray(a, dtype=np.int64)
    return ((a + _INT32_HALF) & (_INT32_SPAN - 1)) - _INT32_HALF


def int32_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` accumulated in int32 with wrap-around, as int64 values in the int32 range.

    When the exact result fits int64 it is computed exactly (exact_matmul) and wrapped; when
    it could exceed int64, NumPy's int64 matmul (which wraps modulo 2**64) is wrapped to 32
    bits, still exact modulo 2**32.
    """
    if a.dtype.kind not in "iu" or b.dtype.kind not in "iu":
        raise TypeError(f"int32_matmul is integer-only, got {a.dtype} and {b.dtype}")
    try:
        return wrap_int32(exact_matmul(a, b))
    except OverflowError:
        return wrap_int32(a.astype(np.int64) @ b.astype(np.int64))


def matmul(a: np.ndarray, b: np.ndarray, wrap32: bool = False) -> np.ndarray:
    """Exact ``a @ b`` (the spec) or, with ``wrap32``, the authors' wrapping int32 one."""
    return int32_matmul(a, b) if wrap32 else exact_matmul(a, b)
