"""NITRO-D's building blocks: local-loss linear and conv blocks, forward-only
pools, and the output layer.

A block's forward part is IntegerLinear/IntegerConv2d -> NITRO Scaling ->
NITRO-ReLU. Its learning part is a local classifier (for conv blocks behind a
max-pool "decoder") whose error trains the block; no error signal ever crosses
a block boundary.

Training methods take an ``observe(kind, layer, array)`` callback (or None)
that sees every tensor crossing a boundary; :class:`golden.ranges.RangeTracker`
is one such observer.
"""

from __future__ import annotations

import numpy as np

from .arith import nitro_relu, nitro_relu_backward, nitro_scale
from .compat import matmul
from .init import kaiming_uniform
from .layers import (POOL_PAD_VALUE, PoolGeometry, avgpool2d, conv2d, conv2d_weight_grad,
                     decoder_pool_geometry, flatten, im2col, linear, linear_weight_grad, maxpool2d,
                     maxpool2d_backward)
from .optim import sgd_update

__all__ = ["LinearBlock", "ConvBlock", "Pool", "OutputLayer", "loss_error", "amplification",
           "conv_amplification"]


def amplification(classes: int) -> int:
    """NITRO Amplification Factor of a block's forward layer: ``2**6 * classes``."""
    return 64 * classes


def conv_amplification(classes: int, height: int, pool: PoolGeometry, extra: bool) -> int:
    """The amplification of a conv block's forward layer: :func:`amplification`, times the
    authors' unused extra factor ``max(1, height**2 // (kh*kw))`` (of the decoder pool
    ``pool``) when ``extra`` (``NetworkSpec.conv_amp_extra``)."""
    amp = amplification(classes)
    if extra:
        amp *= max(1, height ** 2 // (pool.kh * pool.kw))
    return amp


def loss_error(y_pred: np.ndarray, target: np.ndarray, int8_wrap: bool = False) -> np.ndarray:
    """``e = y_pred - target``, exact in [-159, 127] (int16).

    ``int8_wrap=True`` reproduces the authors' implementation, which stores the
    error in int8 and so wraps when ``y_pred < -96``.
    """
    e = y_pred.astype(np.int16) - target.astype(np.int16)
    if int8_wrap:
        e = e.astype(np.int8).astype(np.int16)
    return e


def _noop(kind, layer, array):
    pass


class _Block:
    """Shared local-classifier machinery of linear and conv blocks."""

    kind = "block"

    def __init__(self, name, classes, relu_inv_slope, decoder_in, fwd_decay_inv,
                 subnet_decay_inv, int8_loss_error, int32_wrap=False):
        self.name = name
        self.classes = classes
        self.a = relu_inv_slope
        self.decoder_in = decoder_in
        self.fwd_decay_inv = fwd_decay_inv
        self.subnet_decay_inv = subnet_decay_inv
        self.int8_loss_error = int8_loss_error
        self.int32_wrap = int32_wrap       # the authors' wrapping int32 accumulators
        self.w_local = None

    @property
    def layer_names(self):
        return (f"{self.name}.fwd", f"{self.name}.local")

    def weights(self):
        return {f"{self.name}.fwd": self.w, f"{self.name}.local": self.w_local}

    def load_weights(self, ws):
        for key, attr in ((f"{self.name}.fwd", "w"), (f"{self.name}.local", "w_local")):
            new = np.asarray(ws[key])
            old = getattr(self, attr)
            if new.shape != old.shape:
                raise ValueError(f"{key}: shape {new.shape} does not match {old.shape}")
            if new.dtype.kind not in "iu":
                raise TypeError(f"{key}: weights must be integers, got {new.dtype}")
            setattr(self, attr, new.astype(np.int64))

    def _local_step(self, flat, target, lr_inv, observe):
        """Local classifier forward, error, its own update; returns the error at its input."""
        name = f"{self.name}.local"
        wrap = self.int32_wrap
        zl = linear(flat, self.w_local, wrap)
        yl = nitro_scale(zl, self.decoder_in)
        e = loss_error(yl, target, self.int8_loss_error)
        d = matmul(e, self.w_local, wrap)          # with the weights of the forward pass
        g = linear_weight_grad(e, flat, wrap)
        self.w_local = sgd_update(self.w_local, g, lr_inv, 1, self.subnet_decay_inv)
        observe("forward_acc", name, zl)
        observe("activation", name, yl)
        observe("local_error", name, e)
        observe("backprop_error", name, d)
        observe("weight_grad", name, g)
        observe("weights", name, self.w_local)
        return d, yl


class LinearBlock(_Block):
    """IntegerLinear -> NITRO Scaling -> NITRO-ReLU, trained by a linear local classifier."""

    kind = "linear"

    def __init__(self, name, in_features, out_features, classes, rng, *, relu_inv_slope=4,
                 fwd_decay_inv=0, subnet_decay_inv=0, int8_loss_error=False, int32_wrap=False,
                 double_update=False):
        super().__init__(name, classes, relu_inv_slope, out_features, fwd_decay_inv,
                         subnet_decay_inv, int8_loss_error, int32_wrap)
        # the authors' CNNs run a linear block's learning part twice per step (golden/compat.py)
        self.double_update = double_update
        self.in_features, self.out_features = in_features, out_features
        self.amp = amplification(classes)
        self.w = kaiming_uniform(rng, (out_features, in_features), in_features)
        self.w_local = kaiming_uniform(rng, (classes, out_features), out_features)

    def in_shape(self):
        return (self.in_features,)

    def out_shape(self):
        return (self.out_features,)

    def forward(self, x):
        y = nitro_scale(linear(x, self.w, self.int32_wrap), self.in_features)
        return nitro_relu(y, self.a)

    def train_step(self, x, target, lr_inv, observe=_noop):
        name = f"{self.name}.fwd"
        z = linear(x, self.w, self.int32_wrap)
        y = nitro_scale(z, self.in_features)
        h = nitro_relu(y, self.a)
        observe("input", name, x)
        observe("forward_acc", name, z)
        observe("activation", name, h)
        self._learn(x, y, h, target, lr_inv, observe)
        if self.double_update:
            # The authors' CNN runs this block's learning part a second time in the same step,
            # on the tensors stored by the forward pass (its input x, scaled y, activation h),
            # with the once-updated weights: the local classifier's forward, error and
            # back-propagated error are recomputed with W_local', and both updates (gradient
            # step and decay) are applied again. Blocks are independent, so running it here
            # rather than after the other blocks gives the same result.
            self._learn(x, y, h, target, lr_inv, observe)
        return h

    def _learn(self, x, y, h, target, lr_inv, observe):
        """The learning part of a step: local classifier, its update, the error back through
        NITRO-ReLU (scaling passes it through) and the forward layer's update."""
        name = f"{self.name}.fwd"
        d, yl = self._local_step(h, target, lr_inv, observe)
        d = nitro_relu_backward(d, y, self.a)
        g = linear_weight_grad(d, x, self.int32_wrap)
        self.w = sgd_update(self.w, g, lr_inv, self.amp, self.fwd_decay_inv)
        observe("backprop_error", name, d)
        observe("weight_grad", name, g)
        observe("weights", name, self.w)


class ConvBlock(_Block):
    """IntegerConv2d(3x3, pad 1) -> NITRO Scaling -> NITRO-ReLU, trained by a
    max-pool decoder and a linear local classifier."""

    kind = "conv"

    def __init__(self, name, in_channels, out_channels, height, width, classes, rng, *,
                 relu_inv_slope=4, decoder_dim=2048, fwd_decay_inv=0, subnet_decay_inv=0,
                 conv_amp_extra=False, int8_loss_error=False, int32_wrap=False,
                 decoder_pool_zero_pad=False):
        self.pool = decoder_pool_geometry(out_channels, height, width, decoder_dim)
        # the spec pads the decoder pool with the most negative value; the authors' code with 0
        self.pool_pad_value = 0 if decoder_pool_zero_pad else POOL_PAD_VALUE
        decoder_in = out_channels * self.pool.out_h * self.pool.out_w
        super().__init__(name, classes, relu_inv_slope, decoder_in, fwd_decay_inv,
                         subnet_decay_inv, int8_loss_error, int32_wrap)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.height, self.width = height, width
        self.fan_in = in_channels * 9
        # conv_amp_extra: the authors' unused extra factor, offered as an option
        self.amp = conv_amplification(classes, height, self.pool, conv_amp_extra)
        self.w = kaiming_uniform(rng, (out_channels, in_channels, 3, 3), self.fan_in)
        self.w_local = kaiming_uniform(rng, (classes, decoder_in), decoder_in)

    def in_shape(self):
        return (self.in_channels, self.height, self.width)

    def out_shape(self):
        return (self.out_channels, self.height, self.width)

    def forward(self, x):
        y = nitro_scale(conv2d(x, self.w, wrap32=self.int32_wrap), self.fan_in)
        return nitro_relu(y, self.a)

    def train_step(self, x, target, lr_inv, observe=_noop):
        name = f"{self.name}.fwd"
        cols = im2col(x)
        z = conv2d(x, self.w, cols, self.int32_wrap)
        y = nitro_scale(z, self.fan_in)
        h = nitro_relu(y, self.a)
        observe("input", name, x)
        observe("forward_acc", name, z)
        observe("activation", name, h)
        pooled, pos = maxpool2d(h, self.pool, self.pool_pad_value)
        d, yl = self._local_step(flatten(pooled), target, lr_inv, observe)
        d = maxpool2d_backward(d.reshape(pooled.shape), pos, self.pool)
        d = nitro_relu_backward(d, y, self.a)
        g = conv2d_weight_grad(d, x, cols, self.int32_wrap)
        self.w = sgd_update(self.w, g, lr_inv, self.amp, self.fwd_decay_inv)
        observe("backprop_error", name, d)
        observe("weight_grad", name, g)
        observe("weights", name, self.w)
        return h


class Pool:
    """A forward-only k x k pool of the feature extractor (max or average)."""

    kind = "pool"
    layer_names = ()

    def __init__(self, name, op, channels, height, width, k=2):
        if op not in ("max", "avg"):
            raise ValueError(f"pool op must be 'max' or 'avg', got {op!r}")
        self.name, self.op, self.k = name, op, k
        self.channels = channels
        self.geom = PoolGeometry(height, width, k, k)

    def in_shape(self):
        return (self.channels, self.geom.h, self.geom.w)

    def out_shape(self):
        return (self.channels, self.geom.out_h, self.geom.out_w)

    def forward(self, x):
        if self.op == "max":
            return maxpool2d(x, self.geom)[0]
        return avgpool2d(x, self.geom).astype(x.dtype)

    def train_step(self, x, target, lr_inv, observe=_noop):
        return self.forward(x)

    def weights(self):
        return {}

    def load_weights(self, ws):
        pass


class OutputLayer:
    """IntegerLinear(in -> classes) -> NITRO Scaling; trained by its own error."""

    kind = "output"

    def __init__(self, in_features, classes, rng, *, subnet_decay_inv=0, int8_loss_error=False,
                 int32_wrap=False):
        self.name = "output"
        self.layer_names = ("output",)
        self.in_features, self.classes = in_features, classes
        self.subnet_decay_inv = subnet_decay_inv
        self.int8_loss_error = int8_loss_error
        self.int32_wrap = int32_wrap
        self.w = kaiming_uniform(rng, (classes, in_features), in_features)

    def weights(self):
        return {"output": self.w}

    def load_weights(self, ws):
        new = np.asarray(ws["output"])
        if new.shape != self.w.shape:
            raise ValueError(f"output: shape {new.shape} does not match {self.w.shape}")
        if new.dtype.kind not in "iu":
            raise TypeError(f"output: weights must be integers, got {new.dtype}")
        self.w = new.astype(np.int64)

    def forward(self, x):
        return nitro_scale(linear(x, self.w, self.int32_wrap), self.in_features)

    def train_step(self, x, target, lr_inv, observe=_noop):
        z = linear(x, self.w, self.int32_wrap)
        yhat = nitro_scale(z, self.in_features)
        e = loss_error(yhat, target, self.int8_loss_error)
        g = linear_weight_grad(e, x, self.int32_wrap)
        self.w = sgd_update(self.w, g, lr_inv, 1, self.subnet_decay_inv)
        observe("input", "output", x)
        observe("forward_acc", "output", z)
        observe("activation", "output", yhat)
        observe("local_error", "output", e)
        observe("weight_grad", "output", g)
        observe("weights", "output", self.w)
        return yhat
