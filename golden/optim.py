"""IntegerSGD: NITRO-D's integer-only weight update."""

from __future__ import annotations

import numpy as np

from .arith import tdiv

__all__ = ["sgd_update", "IntegerSGD"]


def sgd_update(w: np.ndarray, g: np.ndarray, lr_inv: int, amp: int, decay_inv: int) -> np.ndarray:
    """One IntegerSGD step for one layer.

    ``W - (tdiv(G, lr_inv * amp) + (tdiv(W, decay_inv) if decay_inv > 0 else 0))``
    with ``G`` the gradient summed (not averaged) over the batch.
    """
    if lr_inv <= 0 or amp <= 0:
        raise ZeroDivisionError(f"lr_inv and amp must be positive, got {lr_inv}, {amp}")
    if decay_inv < 0:
        raise ValueError(f"decay_inv must be >= 0 (0 disables decay), got {decay_inv}")
    step = tdiv(g, lr_inv * amp)          # a new int64 array, updated in place below
    if decay_inv > 0:
        step += tdiv(w, decay_inv)
    return np.subtract(w, step, out=step)


class IntegerSGD:
    """Holds the run-time state of the optimiser (the current ``lr_inv``)."""

    def __init__(self, lr_inv: int = 512):
        if lr_inv <= 0:
            raise ValueError(f"lr_inv must be positive, got {lr_inv}")
        self.lr_inv = int(lr_inv)

    def step(self, w, g, amp: int, decay_inv: int):
        return sgd_update(w, g, self.lr_inv, amp, decay_inv)
