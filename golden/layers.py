"""NITRO-D layers as plain functions on integer arrays.

Forward functions return integer arrays; the backward functions that training
needs (through max pooling, average pooling and NITRO-ReLU) live beside them.
Images are laid out (batch, channel, row, column).
"""

from __future__ import annotations

import math

import numpy as np

from .arith import tdiv
from .compat import matmul

__all__ = [
    "linear", "linear_weight_grad", "im2col", "conv2d", "conv2d_weight_grad",
    "maxpool2d", "maxpool2d_backward", "avgpool2d", "avgpool2d_backward",
    "flatten", "decoder_pool_geometry", "PoolGeometry", "POOL_PAD_VALUE",
]

#: The "most negative value" used to pad max-pool windows. Activations are
#: NITRO-ReLU outputs (int8, never below -127), so padding never wins a window
#: that holds at least one real element.
POOL_PAD_VALUE = -128


# --- IntegerLinear -----------------------------------------------------------

def linear(x: np.ndarray, w: np.ndarray, wrap32: bool = False) -> np.ndarray:
    """IntegerLinear without bias: ``z = x @ W.T`` with ``W`` of shape (out, in).

    ``wrap32``: accumulate in a wrapping int32 like the authors' code (golden/compat.py).
    """
    return matmul(x, w.T, wrap32)


def linear_weight_grad(d: np.ndarray, x: np.ndarray, wrap32: bool = False) -> np.ndarray:
    """Gradient of IntegerLinear's weights summed over the batch: ``G = d.T @ x``."""
    return matmul(d.T, x, wrap32)


# --- IntegerConv2d (3x3, stride 1, zero padding 1) ---------------------------

def im2col(x: np.ndarray) -> np.ndarray:
    """Patches of a zero-padded image batch as rows.

    Returns shape (B*H*W, C*9); row ``(m, i, j)`` holds ``xpad[m, c, i+k, j+l]``
    in (c, k, l) order, matching ``W[f, c, k, l].reshape(F, C*9)``.
    """
    b, c, h, w = x.shape
    xpad = np.zeros((b, c, h + 2, w + 2), dtype=x.dtype)
    xpad[:, :, 1:-1, 1:-1] = x
    win = np.lib.stride_tricks.sliding_window_view(xpad, (3, 3), axis=(2, 3))
    # win: (B, C, H, W, 3, 3) -> (B, H, W, C, 3, 3)
    return np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(b * h * w, c * 9)


def conv2d(x: np.ndarray, w: np.ndarray, cols: np.ndarray | None = None,
           wrap32: bool = False) -> np.ndarray:
    """IntegerConv2d: ``z[m,f,i,j] = sum_{c,k,l} W[f,c,k,l] * xpad[m,c,i+k,j+l]``."""
    b, _, h, wd = x.shape
    f = w.shape[0]
    if cols is None:
        cols = im2col(x)
    z = matmul(cols, w.reshape(f, -1).T, wrap32)        # (B*H*W, F)
    return z.reshape(b, h, wd, f).transpose(0, 3, 1, 2)


def conv2d_weight_grad(d: np.ndarray, x: np.ndarray, cols: np.ndarray | None = None,
                       wrap32: bool = False) -> np.ndarray:
    """``G[f,c,k,l] = sum_{m,i,j} d[m,f,i,j] * xpad[m,c,i+k,j+l]``."""
    b, c, h, w = x.shape
    f = d.shape[1]
    if cols is None:
        cols = im2col(x)
    dmat = d.transpose(1, 0, 2, 3).reshape(f, b * h * w)
    return matmul(dmat, cols, wrap32).reshape(f, c, 3, 3)


# --- Pooling -----------------------------------------------------------------

class PoolGeometry:
    """A k x k (or kh x kw) pool with stride equal to the kernel and padding."""

    def __init__(self, h: int, w: int, kh: int, kw: int, ph: int = 0, pw: int = 0):
        self.h, self.w, self.kh, self.kw, self.ph, self.pw = h, w, kh, kw, ph, pw
        self.out_h = (h + 2 * ph - kh) // kh + 1
        self.out_w = (w + 2 * pw - kw) // kw + 1
        if self.out_h < 1 or self.out_w < 1:
            raise ValueError(f"pool {kh}x{kw} does not fit a {h}x{w} input")
        # every window must hold at least one real element
        if (self.out_h - 1) * kh - ph >= h or (self.out_w - 1) * kw - pw >= w:
            raise ValueError(f"pool {kh}x{kw} padding ({ph},{pw}) leaves an empty window")

    def __repr__(self):
        return (f"PoolGeometry({self.h}x{self.w} -> {self.out_h}x{self.out_w}, "
                f"kernel {self.kh}x{self.kw}, padding {self.ph},{self.pw})")

    def _grid(self, x: np.ndarray, pad_value: int) -> np.ndarray:
        """The input padded and cropped to ``(B, C, out_h*kh, out_w*kw)`` (``x`` itself when
        it already has that shape)."""
        b, c = x.shape[:2]
        hh, ww = self.out_h * self.kh, self.out_w * self.kw
        if self.ph == 0 and self.pw == 0 and hh == self.h and ww == self.w:
            return x
        grid = np.full((b, c, hh, ww), pad_value, dtype=x.dtype)
        rh, rw = min(self.h, hh - self.ph), min(self.w, ww - self.pw)
        grid[:, :, self.ph:self.ph + rh, self.pw:self.pw + rw] = x[:, :, :rh, :rw]
        return grid

    def offsets(self, x: np.ndarray, pad_value: int):
        """``(index, view)`` for each position of the window in row-major order: ``view`` is
        the (B, C, out_h, out_w) strided view of that position in every window."""
        b, c = x.shape[:2]
        g = self._grid(x, pad_value).reshape(b, c, self.out_h, self.kh, self.out_w, self.kw)
        for i in range(self.kh):
            for j in range(self.kw):
                yield i * self.kw + j, g[:, :, :, i, :, j]

    def windows(self, x: np.ndarray, pad_value: int) -> np.ndarray:
        """(B, C, out_h, out_w, kh*kw) view of the padded, cropped input."""
        b, c = x.shape[:2]
        g = self._grid(x, pad_value).reshape(b, c, self.out_h, self.kh, self.out_w, self.kw)
        return g.transpose(0, 1, 2, 4, 3, 5).reshape(b, c, self.out_h, self.out_w, self.kh * self.kw)

    def _place(self, g: np.ndarray) -> np.ndarray:
        """``(B, C, out_h*kh, out_w*kw)`` gradients back on the (B, C, h, w) input (the
        inverse of :meth:`_grid`: padding dropped, cropped positions 0)."""
        b, c = g.shape[:2]
        if g.shape[2:] == (self.h, self.w) and self.ph == 0 and self.pw == 0:
            return g
        out = np.zeros((b, c, self.h, self.w), dtype=g.dtype)
        rh, rw = min(self.h, g.shape[2] - self.ph), min(self.w, g.shape[3] - self.pw)
        out[:, :, :rh, :rw] = g[:, :, self.ph:self.ph + rh, self.pw:self.pw + rw]
        return out

    def scatter(self, d: np.ndarray, pos: np.ndarray | None, dtype) -> np.ndarray:
        """Inverse of :meth:`windows` for gradients.

        With ``pos`` (the position in each window, row-major) the error goes to that position
        only; with ``pos=None`` ``d`` already has a trailing kh*kw axis.
        """
        b, c = d.shape[:2]
        full = np.zeros((b, c, self.out_h, self.kh, self.out_w, self.kw), dtype=dtype)
        for i in range(self.kh):
            for j in range(self.kw):
                k = i * self.kw + j
                if pos is None:
                    full[:, :, :, i, :, j] = d[..., k]
                else:
                    np.copyto(full[:, :, :, i, :, j], d, where=pos == k)
        return self._place(full.reshape(b, c, self.out_h * self.kh, self.out_w * self.kw))


def maxpool2d(x: np.ndarray, geom: PoolGeometry, pad_value: int = POOL_PAD_VALUE):
    """Max pooling; returns (pooled, argmax) with argmax the first maximum of each
    window in row-major order (what the backward pass needs).

    The windows are scanned position by position (a strict ``>`` keeps the first maximum),
    each position a strided view over all windows: no copy of the windows is made."""
    best = pos = None
    for k, view in geom.offsets(x, pad_value):
        if best is None:
            best = view.copy()
            pos = np.zeros(best.shape, dtype=np.int64)
            continue
        better = view > best
        np.copyto(best, view, where=better)
        np.copyto(pos, k, where=better)
    return best, pos


def maxpool2d_backward(d: np.ndarray, pos: np.ndarray, geom: PoolGeometry) -> np.ndarray:
    """Send each window's error to its (first) maximum, zero elsewhere."""
    return geom.scatter(np.asarray(d), pos, np.int64)


def avgpool2d(x: np.ndarray, geom: PoolGeometry) -> np.ndarray:
    """Average pooling ``tdiv(sum, kh*kw)`` (no padding)."""
    win = geom.windows(x, 0).astype(np.int64)
    return tdiv(win.sum(axis=-1), geom.kh * geom.kw)


def avgpool2d_backward(d: np.ndarray, geom: PoolGeometry) -> np.ndarray:
    """Spread ``tdiv(d, kh*kw)`` over every position of the window."""
    share = tdiv(np.asarray(d, dtype=np.int64), geom.kh * geom.kw)
    return geom.scatter(np.repeat(share[..., None], geom.kh * geom.kw, axis=-1), None, np.int64)


def flatten(x: np.ndarray) -> np.ndarray:
    """Row-major flatten of everything but the batch axis (channel, row, column)."""
    return x.reshape(x.shape[0], -1)


def decoder_pool_geometry(c: int, h: int, w: int, decoder_dim: int) -> PoolGeometry:
    """Max-pool in front of a conv block's local classifier.

    The kernel doubles kh, then kw, alternately, until
    ``C * ceil(H/kh) * ceil(W/kw) <= decoder_dim``; padding is
    ``(kh * (ceil(H/kh) - H//kh)) // 2`` rows (likewise columns).
    """
    kh = kw = 1
    turn_h = True
    while c * math.ceil(h / kh) * math.ceil(w / kw) > decoder_dim:
        if turn_h:
            kh *= 2
        else:
            kw *= 2
        turn_h = not turn_h
        if kh > 2 * h and kw > 2 * w:
            raise ValueError(f"decoder_dim {decoder_dim} is smaller than the {c} channels")
    ph = (kh * (math.ceil(h / kh) - h // kh)) // 2
    pw = (kw * (math.ceil(w / kw) - w // kw)) // 2
    return PoolGeometry(h, w, kh, kw, ph, pw)
