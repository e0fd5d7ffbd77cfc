"""The values that cross between the host, the memories and the datapath.

The arithmetic's own constants (the one-hot target value, the activations' saturation
bound, the ReLU slopes and their mean corrections) are golden's (``golden.arith``): the
contract re-exports them and adds the encodings the memories use.
"""

from __future__ import annotations

import enum

import numpy as np

from golden.arith import ACT_MAX, ONE_HOT_VALUE, RELU_MEAN_CORRECTION, SCALE_SHIFT

__all__ = ["ACT_MAX", "ONE_HOT_VALUE", "RELU_MEAN_CORRECTION", "SCALE_SHIFT", "SLOPES", "DEFAULT_SLOPE", "SLOPE_WIDTH", "ReluCode",
           "CODE_WIDTH", "relu_code", "relu_codes", "LABEL_WIDTH", "PAD_LABEL"]

#: The NITRO-ReLU inverse negative slopes the hardware supports, the default and the bits of
#: the instruction's ``inv_slope`` field that carries one.
SLOPES = tuple(sorted(RELU_MEAN_CORRECTION))
DEFAULT_SLOPE = 4
SLOPE_WIDTH = max(SLOPES).bit_length()


class ReluCode(enum.IntEnum):
    """What NITRO-ReLU's backward pass does with the error at an activation whose forward
    input was ``x`` (the CODE memory stores 2 bits instead of ``x``)."""
    PASS = 0    # 0 <= x < ACT_MAX: d_in = d
    DIV = 1     # -ACT_MAX <= x < 0: d_in = tdiv(d, a)
    ZERO = 2    # saturated input: d_in = 0


#: bits of a ReLU code (a CODE lane)
CODE_WIDTH = 2


def relu_code(x: int) -> ReluCode:
    """The code of one forward input ``x``."""
    if 0 <= x < ACT_MAX:
        return ReluCode.PASS
    if -ACT_MAX <= x < 0:
        return ReluCode.DIV
    return ReluCode.ZERO


def relu_codes(x) -> np.ndarray:
    """:func:`relu_code` of every element of an array (int64 codes)."""
    x = np.asarray(x)
    return np.where((x >= 0) & (x < ACT_MAX), ReluCode.PASS,
                    np.where((x < 0) & (x >= -ACT_MAX), ReluCode.DIV,
                             ReluCode.ZERO)).astype(np.int64)


#: bits of a LABEL word: a class index, or PAD_LABEL
LABEL_WIDTH = 8
#: the label of a padding sample (its loss error is forced to 0); classes are below it
PAD_LABEL = (1 << LABEL_WIDTH) - 1
