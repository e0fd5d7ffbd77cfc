"""The datapath's value widths, each justified by measured ranges, in one place.

The largest magnitudes come from the golden model (``nitrod ranges``), measured with
``nitrod ranges --dataset mnist5k --model mlp --hidden 100,50 --epochs 100 --seed 42`` (65
epochs run, early stop; docs/ARCHITECTURE.md has the table).  Every width is guarded in
hardware by a sticky overflow flag (or saturates where the arithmetic says so), never wrapped
silently.  The memories' lane widths (:class:`hw.contract.memory_map.Geometry`) are built from
these; the units take their widths as parameters with these as defaults.
"""

__all__ = ["ACTIVATION_WIDTH", "LOSS_ERROR_WIDTH", "WEIGHT_WIDTH", "BACKERR_WIDTH", "ACC_WIDTH"]

#: Inputs and activations: normalised inputs are int8, NITRO Scaling saturates to [-127, 127]
#: and NITRO-ReLU's outputs lie in [-73, 96]: 8 bits.
ACTIVATION_WIDTH = 8
#: Local and output errors ``e = y_pred - y`` lie in [-159, 127] by construction: 9 bits.
LOSS_ERROR_WIDTH = 9
#: Weights: the largest |W| measured is 12,247 (15 bits signed) after 65 epochs, and the
#: authors saw more than 17,000 at 100 epochs, still growing.  18 bits (+-131,071) give about
#: 10x headroom and are exactly one ECP5 MULT18X18D operand.
WEIGHT_WIDTH = 18
#: Back-propagated errors ``d = e @ Wl``: the largest measured is 104,771 (18 bits signed);
#: 24 bits give 64x headroom (the worst case is 9 + 18 + log2(classes) bits).
BACKERR_WIDTH = 24
#: Accumulators: forward sums (measured 28 bits) and weight gradients (measured 27 bits); the
#: worst cases are 8 + 18 + log2(784) = 36 and 24 + 8 + log2(64) = 38 bits.  48 bits cover
#: both with margin.
ACC_WIDTH = 48
