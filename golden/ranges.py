"""Largest magnitudes seen during training, per tensor kind and per layer.

These figures fix the hardware widths (see docs/ARCHITECTURE.md). A
:class:`RangeTracker` is an ``observe(kind, layer, array)`` callback for
:meth:`golden.network.Network.train_step`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RangeTracker", "KINDS", "bits_signed"]

#: Tensor kinds in the order they are reported.
KINDS = {
    "input": "inputs of forward layers (normalised data / activations)",
    "forward_acc": "forward accumulators z = x @ W.T (before scaling)",
    "activation": "scaled outputs and NITRO-ReLU activations",
    "local_error": "local / output errors e = y_pred - target",
    "backprop_error": "back-propagated errors d (through local classifiers and ReLU)",
    "weight_grad": "weight gradients G summed over the batch",
    "weights": "weights after each update",
}


def bits_signed(maxabs: int) -> int:
    """Width of the smallest two's-complement integer holding [-maxabs, maxabs]."""
    return int(maxabs).bit_length() + 1


class RangeTracker:
    def __init__(self):
        self.by_kind: dict[str, int] = {}
        self.by_layer: dict[tuple[str, str], int] = {}

    def __call__(self, kind: str, layer: str, array: np.ndarray) -> None:
        if kind not in KINDS:
            raise KeyError(f"unknown tensor kind {kind!r}")
        if array.size == 0:
            return
        m = max(int(array.max()), -int(array.min()))
        if m > self.by_kind.get(kind, -1):
            self.by_kind[kind] = m
        if m > self.by_layer.get((kind, layer), -1):
            self.by_layer[(kind, layer)] = m

    def as_dict(self) -> dict:
        return {
            "by_kind": {k: {"maxabs": self.by_kind[k], "signed_bits": bits_signed(self.by_kind[k])}
                        for k in KINDS if k in self.by_kind},
            "by_layer": {f"{k}/{layer}": v for (k, layer), v in sorted(self.by_layer.items())},
        }

    def table(self) -> str:
        lines = [f"{'kind':<16}{'max |value|':>14}{'signed bits':>13}  layer with the max"]
        for k in KINDS:
            if k not in self.by_kind:
                continue
            m = self.by_kind[k]
            top = max((v, layer) for (kk, layer), v in self.by_layer.items() if kk == k)[1]
            lines.append(f"{k:<16}{m:>14}{bits_signed(m):>13}  {top}")
        return "\n".join(lines)
