"""A NITRO-D network described by a layer list.

Layer tokens (comma separated):
    ``c<N>``   conv block with N filters (3x3, padding 1)
    ``p`` / ``p<k>``  forward-only k x k max-pool (default 2) of the feature extractor
    ``a`` / ``a<k>``  forward-only k x k average pool
    ``l<N>``   linear block with N units (the input is flattened before the first one)
The output layer (IntegerLinear -> NITRO Scaling onto the classes) is implicit.

MLP 784-100-50-10 is ``l100,l50``; VGG8B is
``c128,c256,p,c256,c512,p,c512,p,c512,p,l1024`` with ``decoder_dim=4096``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass

import numpy as np

from .blocks import ConvBlock, LinearBlock, OutputLayer, Pool
from .compat import NETWORK_QUIRKS, check_mode
from .layers import flatten

__all__ = ["NetworkSpec", "Network", "parse_layers", "ARCHITECTURES", "mlp_layers"]

#: Named layer lists. ``small`` is the default CNN for 8x8 inputs (digits).
ARCHITECTURES = {
    "small": ("c32,c64,p,l64", {}),
    "vgg8b": ("c128,c256,p,c256,c512,p,c512,p,c512,p,l1024", {"decoder_dim": 4096}),
}

_TOKEN = re.compile(r"^(c|l|p|a)(\d*)$")


def parse_layers(text: str) -> tuple[str, ...]:
    """Validate a comma-separated layer list and return its tokens."""
    tokens = tuple(t.strip().lower() for t in text.split(",") if t.strip())
    if not tokens:
        raise ValueError("empty layer list")
    for t in tokens:
        m = _TOKEN.match(t)
        if not m:
            raise ValueError(f"bad layer token {t!r}: expected c<N>, l<N>, p[<k>] or a[<k>]")
        kind, num = m.groups()
        if kind in "cl" and (not num or int(num) <= 0):
            raise ValueError(f"layer {t!r} needs a positive size, e.g. {kind}64")
        if kind in "pa" and num and int(num) < 2:
            raise ValueError(f"pool {t!r} needs a kernel of at least 2")
    return tokens


def mlp_layers(hidden) -> tuple[str, ...]:
    """Layer list of an MLP with the given hidden sizes (``"100,50"`` or a list)."""
    if isinstance(hidden, str):
        hidden = [h for h in hidden.split(",") if h.strip()]
    sizes = [int(h) for h in hidden]
    if not sizes or min(sizes) <= 0:
        raise ValueError(f"hidden sizes must be positive integers, got {hidden!r}")
    return tuple(f"l{n}" for n in sizes)


@dataclass(frozen=True)
class NetworkSpec:
    """Everything needed to rebuild a network (and its checkpoints) exactly."""

    input_shape: tuple[int, int, int]        # (channels, rows, columns)
    classes: int
    layers: tuple[str, ...]
    relu_inv_slope: int = 4
    decoder_dim: int = 2048
    fwd_decay_inv: int = 12000
    subnet_decay_inv: int = 3000
    conv_amp_extra: bool = False
    int8_loss_error: bool = False
    # The authors' code instead of the spec (golden/compat.py): "authors" turns on every quirk
    # below (and int8_loss_error); with "spec" each can be set on its own.
    compat: str = "spec"
    int32_wrap: bool = False
    double_linear_update: bool = False
    decoder_pool_zero_pad: bool = False

    def __post_init__(self):
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(self, "layers", parse_layers(",".join(self.layers)))
        check_mode(self.compat)
        if self.compat == "authors":
            for name in NETWORK_QUIRKS:
                object.__setattr__(self, name, True)
        if len(self.input_shape) != 3 or min(self.input_shape) <= 0:
            raise ValueError(f"input_shape must be (C, H, W), got {self.input_shape}")
        if self.classes < 2:
            raise ValueError(f"need at least 2 classes, got {self.classes}")
        for name in ("fwd_decay_inv", "subnet_decay_inv"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 disables decay)")

    @property
    def is_cnn(self) -> bool:
        """Whether the layer list has conv or pool layers (the authors' code trains it with its
        CNN model; an MLP has linear blocks only)."""
        return any(t[0] != "l" for t in self.layers)

    def active_quirks(self) -> tuple[str, ...]:
        """The network-level quirks of the authors' code that change this network's training
        (double_linear_update only in CNNs with a linear block, decoder_pool_zero_pad only
        where a conv block's decoder pool is padded)."""
        out = []
        for name in NETWORK_QUIRKS:
            if not getattr(self, name):
                continue
            if name == "double_linear_update" and not (
                    self.is_cnn and any(t[0] == "l" for t in self.layers)):
                continue
            if name == "decoder_pool_zero_pad" and not _has_padded_decoder_pool(self):
                continue
            out.append(name)
        return tuple(out)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "NetworkSpec":
        d = json.loads(text)
        d["input_shape"] = tuple(d["input_shape"])
        d["layers"] = tuple(d["layers"])
        return cls(**d)


class Network:
    """The chain of blocks and pools plus the output layer, with its weights."""

    def __init__(self, spec: NetworkSpec, seed: int = 0):
        self.spec = spec
        rng = np.random.default_rng(seed)
        c, h, w = spec.input_shape
        flat = None          # feature count once flattened
        self.stages = []
        nblock = 0
        common = dict(relu_inv_slope=spec.relu_inv_slope, fwd_decay_inv=spec.fwd_decay_inv,
                      subnet_decay_inv=spec.subnet_decay_inv, int8_loss_error=spec.int8_loss_error,
                      int32_wrap=spec.int32_wrap)
        for i, tok in enumerate(spec.layers):
            kind, num = tok[0], tok[1:]
            if kind in "cpa" and flat is not None:
                raise ValueError(f"layer {i} ({tok}): conv and pool layers must come before "
                                 "the first linear block")
            if kind == "c":
                blk = ConvBlock(f"block{nblock}", c, int(num), h, w, spec.classes, rng,
                                decoder_dim=spec.decoder_dim, conv_amp_extra=spec.conv_amp_extra,
                                decoder_pool_zero_pad=spec.decoder_pool_zero_pad, **common)
                c = int(num)
                nblock += 1
            elif kind in "pa":
                k = int(num) if num else 2
                if h < k or w < k:
                    raise ValueError(f"layer {i} ({tok}): a {k}x{k} pool does not fit {h}x{w}")
                blk = Pool(f"pool{i}", "max" if kind == "p" else "avg", c, h, w, k)
                h, w = blk.geom.out_h, blk.geom.out_w
            else:
                if flat is None:
                    flat = c * h * w
                blk = LinearBlock(f"block{nblock}", flat, int(num), spec.classes, rng,
                                  double_update=spec.double_linear_update and spec.is_cnn,
                                  **common)
                flat = int(num)
                nblock += 1
            self.stages.append(blk)
        if flat is None:
            flat = c * h * w
        self.output = OutputLayer(flat, spec.classes, rng, subnet_decay_inv=spec.subnet_decay_inv,
                                  int8_loss_error=spec.int8_loss_error, int32_wrap=spec.int32_wrap)

    # --- weights -------------------------------------------------------------
    def layers(self):
        """All trainable layers, in the order the hardware stores them."""
        return [s for s in self.stages if s.kind != "pool"] + [self.output]

    def weights(self) -> dict[str, np.ndarray]:
        out = {}
        for s in self.layers():
            out.update(s.weights())
        return out

    def load_weights(self, ws: dict[str, np.ndarray]) -> None:
        missing = set(self.weights()) - set(ws)
        if missing:
            raise KeyError(f"missing weights for {sorted(missing)}")
        for s in self.layers():
            s.load_weights(ws)

    # --- computation ---------------------------------------------------------
    def _prepare(self, x):
        x = np.asarray(x)
        if x.dtype != np.int8:
            raise TypeError(f"network input must be normalised int8, got {x.dtype}")
        if x.shape[1:] != self.spec.input_shape:
            raise ValueError(f"input shape {x.shape[1:]} does not match {self.spec.input_shape}")
        return x

    def _to_stage(self, stage, x):
        if stage.kind in ("linear", "output") and x.ndim > 2:
            return flatten(x)
        return x

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Inference: the output layer's scaled predictions ``yhat`` (int16 in [-127, 127])."""
        x = self._prepare(x)
        for s in self.stages:
            x = s.forward(self._to_stage(s, x))
        return self.output.forward(self._to_stage(self.output, x))

    def eval_batch(self, budget: int = 1 << 21) -> int:
        """Samples per chunk in :meth:`predict`: as many as keep the largest intermediate
        tensor (a conv block's output, or its patch matrix) within ``budget`` elements, at
        most 1024.  Each sample's forward pass is independent, so the chunk changes the speed
        only (large conv chunks thrash the caches: about 2x slower at 1024 on 28x28)."""
        sizes = [int(np.prod(self.spec.input_shape))]
        for s in self.stages:
            if s.kind == "conv":
                sizes += [int(np.prod(s.out_shape())), 9 * int(np.prod(s.in_shape()))]
        return max(1, min(1024, budget // max(sizes)))

    def predict(self, x: np.ndarray, batch: int | None = None) -> np.ndarray:
        """Class predictions: argmax of ``yhat`` (first index on ties), ``batch`` samples at a
        time (default :meth:`eval_batch`)."""
        batch = batch or self.eval_batch()
        out = [self.forward(x[i:i + batch]).argmax(axis=1) for i in range(0, len(x), batch)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def train_step(self, x: np.ndarray, target: np.ndarray, lr_inv: int, observe=None) -> np.ndarray:
        """One NITRO-D training step on a batch; returns the output layer's ``yhat``.

        ``target`` is the one-hot matrix (32 on the true class). Every block
        computes its forward pass with the weights of this step, then trains
        itself from its local error; no error crosses a block boundary.
        """
        x = self._prepare(x)
        if observe is None:
            observe = _noop
        for s in self.stages:
            x = s.train_step(self._to_stage(s, x), target, lr_inv, observe)
        return self.output.train_step(self._to_stage(self.output, x), target, lr_inv, observe)

    def describe(self) -> str:
        parts = [f"input {self.spec.input_shape}"]
        for s in self.stages:
            if s.kind == "conv":
                parts.append(f"{s.name}: conv {s.in_channels}->{s.out_channels} "
                             f"@{s.height}x{s.width}, local pool {s.pool.kh}x{s.pool.kw} "
                             f"-> {s.decoder_in}->{s.classes}")
            elif s.kind == "linear":
                parts.append(f"{s.name}: linear {s.in_features}->{s.out_features}, "
                             f"local {s.out_features}->{s.classes}")
            else:
                parts.append(f"{s.name}: {s.op}pool {s.k}x{s.k} -> {s.out_shape()}")
        parts.append(f"output: linear {self.output.in_features}->{self.output.classes}")
        return "\n".join(parts)

    def macs_per_sample(self) -> int:
        """Multiply-accumulates of one training sample (forward, local classifiers,
        back-propagation through local classifiers, weight gradients)."""
        total = 0
        for s in self.stages:
            if s.kind == "linear":
                fwd = s.in_features * s.out_features
            elif s.kind == "conv":
                fwd = s.fan_in * s.out_channels * s.height * s.width
            else:
                continue
            local = s.decoder_in * s.classes
            total += 2 * fwd + 3 * local
        total += 2 * self.output.in_features * self.output.classes
        return total


def _has_padded_decoder_pool(spec: NetworkSpec) -> bool:
    """Whether a conv block of ``spec`` has a padded decoder pool."""
    from .layers import decoder_pool_geometry
    c, h, w = spec.input_shape
    for tok in spec.layers:
        kind, num = tok[0], tok[1:]
        if kind == "c":
            c = int(num)
            g = decoder_pool_geometry(c, h, w, spec.decoder_dim)
            if g.ph or g.pw:
                return True
        elif kind in "pa":
            k = int(num) if num else 2
            h, w = h // k, w // k
        else:
            break
    return False


def _noop(kind, layer, array):
    pass
