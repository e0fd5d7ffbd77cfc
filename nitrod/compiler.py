"""Host-side compiler: an MLP's training step -> a Trainer memory map and program.

``compile_mlp(spec, geometry, batch)`` lays an MLP (layer tokens ``l<N>`` only) out in the
Trainer's memories (hw/contract/isa.py defines the machine) and returns a :class:`Plan`, which
builds the program and packs/unpacks everything the host moves over the bus.

Notation: ``S`` = ``geometry.side``; a count ``F`` padded to whole tiles is
``Fp = ceil(F/S)*S``; ``M`` = the batch capacity, ``Mp = ceil(M/S)*S``.

Layouts (every padded value is zero when the host writes it)
------------------------------------------------------------
* feature-major ``V`` (M x F) in ACT: word ``(mb, f)`` = ``[V[mb*S+i, f] for i]`` at
  ``base + mb*Fp + f`` (X_fm, H_fm, E_fm);
* sample-major ``V`` in ACT / ERR / CODE: word ``(fb, m)`` = ``[V[m, fb*S+j] for j]`` at
  ``base + fb*Mp + m`` (X_sm, H_sm, E_sm, D_sm, ReLU codes);
* a weight matrix ``W`` (N x K, forward layers, local classifiers C x N, output C x K) in
  WGT: word ``(nb, k)`` = ``[W[nb*S+j, k] for j]`` at ``base + nb*Kp + k``;
* a local classifier transposed (WlT): word ``(nb, c)`` = ``[Wl[c, nb*S+i] for i]`` at
  ``base + nb*Cp + c``;
* LABEL[m] = the label of sample m, :data:`PAD_LABEL` (255) for padding samples.

All of these are one "row-blocked" layout of a matrix: word ``(rb, col)`` holds rows
``rb*S .. rb*S+S-1`` of column ``col``, at ``base + rb*cols_p + col`` (feature-major = V,
sample-major = V.T, W = W, WlT = Wl.T).

Memory map
----------
ACT: ``x_fm``, ``x_sm``, the hidden activations in two ping-pong buffers (block ``i`` writes
buffer ``i % 2``; ``block<i>.h_fm`` / ``block<i>.h_sm`` name the buffer block ``i`` uses) and
``e_fm`` (shared by the blocks).  WGT: ``block<i>.fwd``, ``block<i>.local``,
``block<i>.local_t`` per block, then ``output``.  ERR: ``e_sm`` (shared; ``output.e_sm`` is the
same words, written last, so the output layer's errors stay readable after a run), ``d_sm``.
CODE: ``code``.  LABEL: ``labels``.  PROG: ``program``.

Program (per hidden block, then the output layer, then END)
------------------------------------------------------------
FORWARD (H = ReLU(Scale(V W^T))), LOSS (E = Scale(H Wl^T) - targets), BACKWARD
(D = ReLU'(E Wl)), SGD of Wl (from E^T H, amp 1, also rewriting WlT) and SGD of W (from
D^T V, amp 64*classes); the output layer is LOSS and SGD (amp 1).  The divisors are golden's
fan-ins (block: in_features; local classifier: out_features; output: in_features).

``program(lr_inv)`` runs every product over the whole padded batch Mp (one program for any
batch); ``program(lr_inv, m)`` is trimmed to a batch of ``m`` samples (sample tiles
``ceil(m/S)``, SGD contracting over ``m``), which saves beats on partial batches and never reads
a padding sample's rows, so it does not depend on the LOSS padding rule below.

Padding: every instruction carries ``row_len`` and ``col_len`` (the real rows and columns of
its result), and the Trainer writes 0 for every padded row and lane (isa.py), so every padded
word in every memory stays exactly 0: padded neurons do not train as phantom ones (NITRO-ReLU(0)
is ``-c(a)``, not 0).  Padded samples also carry label 255, whose errors LOSS forces to 0.
Products contract over the real K (not Kp).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from golden.blocks import amplification
from golden.network import NetworkSpec
from hw.contract import (ADDRESS_WIDTH, ONE_HOT_VALUE, PAD_LABEL, RELU_MEAN_CORRECTION, Geometry,
                         Op, Region, empty_instruction, pack_instruction, pack_lanes,
                         unpack_lanes)

__all__ = ["compile_mlp", "Plan", "Allocation", "CompileError", "DoesNotFit",
           "hardware_refusal", "HARDWARE_QUIRKS"]

#: Instruction address/stride fields are ADDRESS_WIDTH bits.
ADDR_LIMIT = 1 << ADDRESS_WIDTH

ReadWords = Callable[[Region, int, int], list]


#: The authors' network-level quirks (golden/compat.py) that the trainer cores reproduce: none.
#: (Dropping the last partial batch is the training loop's, so it applies to every backend.)
HARDWARE_QUIRKS = frozenset()

_HARDWARE_LACKS = {
    "int8_loss_error": "the int8 loss error (it keeps the exact 9-bit error)",
    "int32_wrap": "int32 wrapping accumulators (its accumulators do not wrap)",
    "double_linear_update": "the CNNs' double update of linear blocks",
    "decoder_pool_zero_pad": "the 0-padded decoder pool",
}


def hardware_refusal(spec: NetworkSpec) -> str | None:
    """Why the trainer cores cannot train ``spec`` exactly (the authors' quirks they do not
    reproduce), or None."""
    missing = [q for q in spec.active_quirks() if q not in HARDWARE_QUIRKS]
    if not missing:
        return None
    what = [_HARDWARE_LACKS[q] for q in missing]
    what = ", ".join(what[:-1]) + " nor " + what[-1] if len(what) > 1 else what[0]
    if spec.compat == "authors":
        return (f"--compat authors: the Trainer does not implement {what}; of the authors' "
                "quirks only dropping the last partial batch (the training loop's) would apply")
    return f"the Trainer does not implement {what}"


class CompileError(ValueError):
    """The network cannot be compiled for the Trainer."""


class DoesNotFit(CompileError):
    """The network (or batch, or learning rate) exceeds what this Trainer instance offers."""


class Allocation(NamedTuple):
    """A named span of words in one memory."""
    region: Region
    base: int
    words: int


def _ceil_to(n: int, s: int) -> int:
    return -(-n // s) * s


def _blocked(mat: np.ndarray, rows_p: int, cols_p: int, s: int) -> np.ndarray:
    """The row-blocked layout of ``mat`` zero-padded to (rows_p, cols_p): (rows_p/s*cols_p, s)."""
    p = np.zeros((rows_p, cols_p), dtype=np.int64)
    p[:mat.shape[0], :mat.shape[1]] = mat
    return p.reshape(rows_p // s, s, cols_p).transpose(0, 2, 1).reshape(-1, s)


def _unblocked(lanes: np.ndarray, rows_p: int, cols_p: int, s: int) -> np.ndarray:
    """Inverse of :func:`_blocked`: (rows_p, cols_p)."""
    return lanes.reshape(rows_p // s, cols_p, s).transpose(0, 2, 1).reshape(rows_p, cols_p)


class _Layer(NamedTuple):
    name: str           # golden's layer name: "block<i>" or "output"
    k: int              # in features
    n: int              # out features (classes for the output layer)
    v_fm: str           # regions of the input
    v_sm: str


class Plan:
    """A compiled MLP: memory map, program builder, host-side packing.

    Attributes
    ----------
    geometry : Geometry          the Trainer it was compiled for
    spec : NetworkSpec
    batch : int                  batch capacity M (a step trains 1..M samples)
    padded_batch : int           Mp = ceil(M/S)*S, the samples every product runs over
    classes : int
    layer_sizes : tuple[int]     feature counts: input, hidden..., classes
    regions : dict[str, Allocation]   name -> (Region, base, words); aliases share words
    """

    def __init__(self, spec: NetworkSpec, geometry: Geometry, batch: int, sizes: list[int]):
        self.spec, self.geometry, self.batch = spec, geometry, int(batch)
        s = self.side = geometry.side
        self.padded_batch = mp = _ceil_to(self.batch, s)
        self.classes = c = spec.classes
        self.layer_sizes = tuple(sizes)
        self.slope = spec.relu_inv_slope
        self._cp = _ceil_to(c, s)
        hidden = sizes[1:-1]
        self.blocks = len(hidden)
        self.regions: dict[str, Allocation] = {}
        self._alias: dict[str, str] = {}
        top = {r: 0 for r in Region if r != Region.REGS}

        def alloc(name, region, words):
            self.regions[name] = Allocation(region, top[region], words)
            top[region] += words

        def alias(name, other):
            self.regions[name] = self.regions[other]
            self._alias[name] = other

        k0p = _ceil_to(sizes[0], s)
        nmax_p = max([_ceil_to(n, s) for n in hidden], default=0)
        # ACT
        alloc("x_fm", Region.ACT, mp // s * k0p)
        alloc("x_sm", Region.ACT, k0p // s * mp)
        for buf in range(min(2, self.blocks)):
            alloc(f"h_fm.{buf}", Region.ACT, mp // s * nmax_p)
            alloc(f"h_sm.{buf}", Region.ACT, nmax_p // s * mp)
        if self.blocks:
            alloc("e_fm", Region.ACT, mp // s * self._cp)
        # WGT, in golden's layer order
        self.layers: list[_Layer] = []
        v_fm, v_sm = "x_fm", "x_sm"
        for i, n in enumerate(hidden):
            k = sizes[i]
            name = f"block{i}"
            kp, np_ = _ceil_to(k, s), _ceil_to(n, s)
            alloc(f"{name}.fwd", Region.WGT, np_ // s * kp)
            alloc(f"{name}.local", Region.WGT, self._cp // s * np_)
            alloc(f"{name}.local_t", Region.WGT, np_ // s * self._cp)
            self.layers.append(_Layer(name, k, n, v_fm, v_sm))
            v_fm, v_sm = f"{name}.h_fm", f"{name}.h_sm"
        kout = sizes[self.blocks]
        alloc("output", Region.WGT, self._cp // s * _ceil_to(kout, s))
        self.layers.append(_Layer("output", kout, c, v_fm, v_sm))
        # per-block views of the ping-pong buffers (after the WGT walk named them)
        for i in range(self.blocks):
            alias(f"block{i}.h_fm", f"h_fm.{i % 2}")
            alias(f"block{i}.h_sm", f"h_sm.{i % 2}")
        # ERR, CODE, LABEL, PROG
        alloc("e_sm", Region.ERR, self._cp // s * mp)
        alias("output.e_sm", "e_sm")
        if self.blocks:
            alloc("d_sm", Region.ERR, nmax_p // s * mp)
            alloc("code", Region.CODE, nmax_p // s * mp)
        alloc("labels", Region.LABEL, mp)
        alloc("program", Region.PROG, 5 * self.blocks + 3)
        self.used = {r: top[r] for r in top}

    # --- properties ------------------------------------------------------------
    @property
    def layer_names(self) -> list[str]:
        """golden's ``Network.weights()`` keys, in memory order."""
        out = []
        for layer in self.layers:
            out += [layer.name] if layer.name == "output" else [f"{layer.name}.fwd",
                                                                 f"{layer.name}.local"]
        return out

    def _base(self, name: str) -> int:
        return self.regions[name].base

    # --- program ---------------------------------------------------------------
    def program(self, lr_inv: int, m: int | None = None) -> list[dict]:
        """The training step's program (one dict per instruction, every field present,
        validated with ``isa.pack_instruction``), ending with END.

        With ``m`` (1..batch) the program is trimmed to a batch of ``m`` samples: the
        sample tiles run to ``ceil(m/S)`` and the SGD products contract over ``m`` samples
        (fewer beats for a partial batch; the layouts are unchanged).  Without it every
        product runs over the whole padded batch ``Mp`` (one program for any batch).
        """
        g, s, mp, cp, c = self.geometry, self.side, self.padded_batch, self._cp, self.classes
        lr_inv = int(lr_inv)
        if lr_inv < 1:
            raise CompileError(f"lr_inv must be >= 1, got {lr_inv}")
        if m is None:
            rows, samples = mp // s, mp
        else:
            m = int(m)
            if not 1 <= m <= self.batch:
                raise ValueError(f"m = {m}: the plan takes batches of 1..{self.batch}")
            rows, samples = -(-m // s), m
        amp_max = amplification(c) if self.blocks else 1
        if lr_inv * amp_max >= 1 << g.d_g_width:
            raise DoesNotFit(f"d_g = lr_inv * amp = {lr_inv} * {amp_max} = {lr_inv * amp_max:,} "
                             f"needs more than the trainer's {g.d_g_width} bits (D_G_WIDTH)")
        spec = self.spec
        prog = []

        def emit(op, **f):
            ins = empty_instruction(op, **f)
            pack_instruction(ins)
            prog.append(ins)

        for layer in self.layers:
            kp = _ceil_to(layer.k, s)
            v_fm, v_sm = self._base(layer.v_fm), self._base(layer.v_sm)
            if layer.name == "output":
                w, e_sm = self._base("output"), self._base("output.e_sm")
                emit(Op.LOSS, a_base=v_fm, a_tile_stride=kp, a_k_stride=1,
                     b_base=w, b_tile_stride=kp, b_k_stride=1, k_len=layer.k,
                     tiles_r=rows, tiles_c=cp // s, row_base=e_sm, tc_stride=mp,
                     divisor=layer.k, row_len=samples, col_len=c)
                emit(Op.SGD, b_src=1, a_base=v_sm, a_tile_stride=mp, a_k_stride=1,
                     b_base=e_sm, b_tile_stride=mp, b_k_stride=1, k_len=samples,
                     tiles_r=kp // s, tiles_c=cp // s, row_base=w, tc_stride=kp,
                     d_g=lr_inv, d_w=spec.subnet_decay_inv, row_len=layer.k, col_len=c)
                continue
            n, np_ = layer.n, _ceil_to(layer.n, s)
            nm = layer.name
            w, wl = self._base(f"{nm}.fwd"), self._base(f"{nm}.local")
            wlt = self._base(f"{nm}.local_t")
            h_fm, h_sm = self._base(f"{nm}.h_fm"), self._base(f"{nm}.h_sm")
            e_fm, e_sm, d_sm, code = (self._base("e_fm"), self._base("e_sm"), self._base("d_sm"),
                                      self._base("code"))
            emit(Op.FORWARD, inv_slope=self.slope, a_base=v_fm, a_tile_stride=kp, a_k_stride=1,
                 b_base=w, b_tile_stride=kp, b_k_stride=1, k_len=layer.k,
                 tiles_r=rows, tiles_c=np_ // s, row_base=h_sm, tc_stride=mp, aux_base=code,
                 col_en=1, col_base=h_fm, col_tr_stride=np_, divisor=layer.k,
                 row_len=samples, col_len=n)
            emit(Op.LOSS, a_base=h_fm, a_tile_stride=np_, a_k_stride=1,
                 b_base=wl, b_tile_stride=np_, b_k_stride=1, k_len=n,
                 tiles_r=rows, tiles_c=cp // s, row_base=e_sm, tc_stride=mp,
                 col_en=1, col_base=e_fm, col_tr_stride=cp, divisor=n,
                 row_len=samples, col_len=c)
            emit(Op.BACKWARD, inv_slope=self.slope, a_base=e_fm, a_tile_stride=cp, a_k_stride=1,
                 b_base=wlt, b_tile_stride=cp, b_k_stride=1, k_len=c,
                 tiles_r=rows, tiles_c=np_ // s, row_base=d_sm, tc_stride=mp, aux_base=code,
                 row_len=samples, col_len=n)
            emit(Op.SGD, b_src=1, a_base=h_sm, a_tile_stride=mp, a_k_stride=1,
                 b_base=e_sm, b_tile_stride=mp, b_k_stride=1, k_len=samples,
                 tiles_r=np_ // s, tiles_c=cp // s, row_base=wl, tc_stride=np_,
                 col_en=1, col_base=wlt, col_tr_stride=cp,
                 d_g=lr_inv * 1, d_w=spec.subnet_decay_inv, row_len=n, col_len=c)
            emit(Op.SGD, b_src=1, a_base=v_sm, a_tile_stride=mp, a_k_stride=1,
                 b_base=d_sm, b_tile_stride=mp, b_k_stride=1, k_len=samples,
                 tiles_r=kp // s, tiles_c=np_ // s, row_base=w, tc_stride=kp,
                 d_g=lr_inv * amplification(c), d_w=spec.fwd_decay_inv,
                 row_len=layer.k, col_len=n)
        emit(Op.END)
        return prog

    def program_words(self, lr_inv: int, m: int | None = None) -> list[int]:
        """:meth:`program` packed with ``isa.pack_instruction`` (what goes into PROG)."""
        return [pack_instruction(i) for i in self.program(lr_inv, m)]

    # --- weights ---------------------------------------------------------------
    def _weight_views(self):
        """(layer name, region name, weight shape, rows_p, cols_p, transposed) of every
        weight region (transposed: the region holds the layer's matrix transposed)."""
        s, cp = self.side, self._cp
        for layer in self.layers:
            kp = _ceil_to(layer.k, s)
            if layer.name == "output":
                yield "output", "output", (layer.n, layer.k), cp, kp, False
                continue
            np_ = _ceil_to(layer.n, s)
            yield f"{layer.name}.fwd", f"{layer.name}.fwd", (layer.n, layer.k), np_, kp, False
            local = (self.classes, layer.n)
            yield f"{layer.name}.local", f"{layer.name}.local", local, cp, np_, False
            yield f"{layer.name}.local", f"{layer.name}.local_t", local, np_, cp, True

    def pack_weights(self, weights: dict) -> list[tuple[Region, int, list[int]]]:
        """golden ``Network.weights()`` -> ``[(Region.WGT, base, words), ...]`` covering every
        weight region (local classifiers twice: Wl and WlT), padding zero."""
        missing = set(self.layer_names) - set(weights)
        if missing:
            raise KeyError(f"missing weights for {sorted(missing)}")
        out = []
        width = self.geometry.wgt_width
        for layer, region, shape, rows_p, cols_p, transposed in self._weight_views():
            w = np.asarray(weights[layer])
            if w.shape != shape:
                raise ValueError(f"{layer}: shape {w.shape}, the plan expects {shape}")
            if w.dtype.kind not in "iu":
                raise TypeError(f"{layer}: weights must be integers, got {w.dtype}")
            m = w.T if transposed else w
            words = pack_lanes(_blocked(m, rows_p, cols_p, self.side), width, f"weight {layer}")
            out.append((Region.WGT, self._base(region), words))
        return out

    def unpack_weights(self, read_words: ReadWords) -> dict[str, np.ndarray]:
        """Read every layer's weights back (from W / Wl / Wout, not WlT) as int64 arrays
        keyed like golden's ``Network.weights()``.  ``read_words(region, base, count)``
        returns ``count`` packed words."""
        out = {}
        for layer, region, shape, rows_p, cols_p, transposed in self._weight_views():
            if transposed:
                continue
            a = self.regions[region]
            lanes = unpack_lanes(read_words(a.region, a.base, a.words), self.geometry.wgt_width,
                                 self.side)
            out[layer] = _unblocked(lanes, rows_p, cols_p, self.side)[:shape[0], :shape[1]].copy()
        return out

    # --- batches ---------------------------------------------------------------
    def pack_batch(self, x, labels) -> list[tuple[Region, int, list[int]]]:
        """An int8 batch ``x`` (m x features, or m x input_shape) and its labels (m,) ->
        ``[(ACT, x_fm), (ACT, x_sm), (LABEL, labels)]`` words, padding samples zero with
        label 255.  ``1 <= m <= batch``."""
        x = np.asarray(x)
        labels = np.asarray(labels)
        k0 = self.layer_sizes[0]
        if x.ndim > 2 and x.shape[1:] == self.spec.input_shape:
            x = x.reshape(x.shape[0], -1)
        if x.ndim != 2 or x.shape[1] != k0:
            raise ValueError(f"x must be (m, {k0}) (or (m, {self.spec.input_shape})), "
                             f"got {x.shape}")
        m = x.shape[0]
        if not 1 <= m <= self.batch:
            raise ValueError(f"batch of {m} samples: the plan takes 1..{self.batch}")
        if x.dtype.kind not in "iu":
            raise ValueError(f"x must be integers (int8), got {x.dtype}")
        if x.min() < -128 or x.max() > 127:
            raise ValueError(f"x must lie in the int8 range, got {x.min()}..{x.max()}")
        if labels.shape != (m,) or labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be {m} integers, got shape {labels.shape} "
                             f"dtype {labels.dtype}")
        if labels.min() < 0 or labels.max() >= self.classes:
            raise ValueError(f"labels must lie in 0..{self.classes - 1}")
        s, mp, k0p = self.side, self.padded_batch, _ceil_to(k0, self.side)
        w = self.geometry.act_width
        x = x.astype(np.int64)
        lab = np.full(mp, PAD_LABEL, dtype=np.int64)
        lab[:m] = labels
        return [
            (Region.ACT, self._base("x_fm"), pack_lanes(_blocked(x, mp, k0p, s), w, "x")),
            (Region.ACT, self._base("x_sm"), pack_lanes(_blocked(x.T, k0p, mp, s), w, "x")),
            (Region.LABEL, self._base("labels"), [int(v) for v in lab]),
        ]

    def unpack_yhat(self, read_words: ReadWords, labels) -> np.ndarray:
        """The output layer's predictions ``yhat`` (m x classes, int64) of the last run,
        from its errors: ``yhat = e + 32 * onehot(labels)``; ``m = len(labels)``."""
        labels = np.asarray(labels, dtype=np.int64)
        m = len(labels)
        if not 1 <= m <= self.batch:
            raise ValueError(f"{m} labels: the plan takes 1..{self.batch}")
        a = self.regions["output.e_sm"]
        lanes = unpack_lanes(read_words(a.region, a.base, a.words), self.geometry.err_width,
                             self.side)
        e = _unblocked(lanes, self._cp, self.padded_batch, self.side).T[:m, :self.classes]
        yhat = e.copy()
        yhat[np.arange(m), labels] += ONE_HOT_VALUE
        return yhat

    # --- figures ---------------------------------------------------------------
    def useful_macs(self, m: int) -> int:
        """MACs of one step on ``m`` samples, as golden's ``Network.macs_per_sample() * m``."""
        total = 0
        for layer in self.layers:
            if layer.name == "output":
                total += 2 * layer.k * layer.n
            else:
                total += 2 * layer.k * layer.n + 3 * layer.n * self.classes
        return total * int(m)

    def engine_beats(self, m: int | None = None) -> int:
        """Sum over ``program(lr_inv, m)`` of tiles_r * tiles_c * k_len (MAC-array beats,
        no stalls)."""
        return sum(i["tiles_r"] * i["tiles_c"] * i["k_len"] for i in self.program(1, m))

    def describe(self) -> str:
        """The memory map as a table, and each memory's words used / depth."""
        g = self.geometry
        sizes = "-".join(str(v) for v in self.layer_sizes)
        lines = [f"MLP {sizes}, batch {self.batch} (padded {self.padded_batch}), "
                 f"S = {self.side}",
                 f"{'region':<18} {'memory':<6} {'base':>7} {'words':>8}"]
        for name, a in sorted(self.regions.items(), key=lambda kv: (kv[1].region, kv[1].base,
                                                                      kv[0])):
            note = f"  (= {self._alias[name]})" if name in self._alias else ""
            lines.append(f"{name:<18} {a.region.name:<6} {a.base:>7} {a.words:>8}{note}")
        lines.append("")
        lines.append(f"{'memory':<6} {'used':>8} {'depth':>8}")
        for r in (Region.ACT, Region.WGT, Region.ERR, Region.CODE, Region.LABEL, Region.PROG):
            used, depth = self.used[r], g.depth(r)
            lines.append(f"{r.name:<6} {used:>8,} {depth:>8,}  {100 * used / depth:5.1f}%")
        return "\n".join(lines)

    def __repr__(self):
        return (f"Plan({'-'.join(map(str, self.layer_sizes))}, batch={self.batch}, "
                f"side={self.side})")


def compile_mlp(spec: NetworkSpec, geometry: Geometry, batch: int) -> Plan:
    """Lay out an MLP's training step for ``geometry`` with batch capacity ``batch``.

    Raises CompileError for what the Trainer cannot run (non-MLP layers, an unsupported
    ReLU slope, int8-wrapped loss errors) and DoesNotFit when a memory, the divisor, the
    label memory, the program memory or a constant's width is too small.
    """
    if not isinstance(spec, NetworkSpec):
        raise CompileError(f"expected a golden.network.NetworkSpec, got {type(spec).__name__}")
    others = [t for t in spec.layers if not t.startswith("l")]
    if others:
        raise CompileError(f"the Trainer runs MLPs only (layers l<N>); {spec.layers} has "
                           f"{', '.join(others)}")
    refusal = hardware_refusal(spec)
    if refusal:
        raise CompileError(refusal)
    if spec.relu_inv_slope not in RELU_MEAN_CORRECTION:
        raise CompileError(f"ReLU inverse slope {spec.relu_inv_slope} is not supported "
                           f"({sorted(RELU_MEAN_CORRECTION)})")
    batch = int(batch)
    if batch < 1:
        raise CompileError(f"batch must be >= 1, got {batch}")
    g = geometry
    if g.act_width < 9 or g.err_width < 9:
        raise DoesNotFit(f"the loss error needs 9-bit ACT and ERR lanes; the trainer has "
                         f"{g.act_width} and {g.err_width}")
    c = spec.classes
    s = g.side
    if c > PAD_LABEL or _ceil_to(c, s) > PAD_LABEL:
        raise DoesNotFit(f"{c} classes (padded to {_ceil_to(c, s)}): LABEL holds classes "
                         f"below {PAD_LABEL} (the padding label) only")
    k0 = int(np.prod(spec.input_shape))
    sizes = [k0] + [int(t[1:]) for t in spec.layers] + [c]
    plan = Plan(spec, g, batch, sizes)

    # divisors (Scaler fan-ins)
    for layer in plan.layers:
        divs = [(layer.k, f"{layer.name} forward" if layer.name != "output" else "output")]
        if layer.name != "output":
            divs.append((layer.n, f"{layer.name} local classifier"))
        for d, what in divs:
            if d > g.divisor_max:
                raise DoesNotFit(f"{what}: Scaler divisor (fan-in) {d:,} exceeds the trainer's "
                                 f"DIVISOR_MAX {g.divisor_max:,}")
    for name in ("fwd_decay_inv", "subnet_decay_inv"):
        v = getattr(spec, name)
        if v >= 1 << g.d_w_width:
            raise DoesNotFit(f"{name} = {v:,} needs more than the trainer's {g.d_w_width} bits "
                             f"(D_W_WIDTH)")
    if plan.padded_batch > g.label_depth:
        raise DoesNotFit(f"LABEL needs {plan.padded_batch:,} words (batch {batch} padded to "
                         f"{plan.padded_batch}), the trainer has {g.label_depth:,}")
    short = []
    for r in (Region.ACT, Region.WGT, Region.ERR, Region.CODE, Region.PROG):
        if plan.used[r] > g.depth(r):
            short.append(f"{r.name} needs {plan.used[r]:,} words, the trainer has {g.depth(r):,}")
    if short:
        raise DoesNotFit("; ".join(short))
    for r in (Region.ACT, Region.WGT, Region.ERR, Region.CODE):
        if plan.used[r] > ADDR_LIMIT:
            raise DoesNotFit(f"{r.name} needs {plan.used[r]:,} words, beyond the 16-bit "
                             f"address fields of the instructions")
    plan.program(1)     # every field in range
    return plan
