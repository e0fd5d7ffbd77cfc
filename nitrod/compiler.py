"""Host-side compiler: a NITRO-D network's training step -> a trainer's memory map and program.

``compile_network(spec, geometry, batch)`` lays any ``golden.network.NetworkSpec`` (``c<N>``
conv blocks, ``p[k]``/``a[k]`` pools, ``l<N>`` linear blocks, the output layer) out in a
trainer's memories (hw/contract/isa.py defines the machine) and returns a :class:`Plan`, which
builds the program and packs/unpacks everything the host moves over the bus.  The program
computes golden's ``Network.train_step`` bit for bit (nitrod/isa_model.py runs it; so do
the Trainer and the SerialTrainer; a core without ``RUNS_CNN`` runs MLP programs only:
:func:`hardware_refusal`).

Notation: ``S`` = ``geometry.side``; a count ``F`` padded to whole tiles is
``Fp = ceil(F/S)*S``; ``M`` = the batch capacity, ``Mp = ceil(M/S)*S``, ``G = Mp/S`` sample
groups.

Layouts (every padded value is zero when the host writes it)
------------------------------------------------------------
A *grid* holds a feature map (C channels of H x W; an MLP's vectors are 1 x 1 maps of C
features) with a border of ``b`` positions on each side (``b`` = 1 when a conv block reads it:
its zero padding; else 0): ``Hg = H + 2b`` by ``Wg = W + 2b`` positions, position ``(y, x)``
(valid coordinates) at ``pos = (y+b)*Wg + (x+b)``, ``PB = G*Cp = (Cp/S)*Mp`` words each:

* feature-major (fm, ACT): word ``(g, c, y, x)`` = ``[V[g*S+i, c, y, x] for i]`` (S samples) at
  ``base + pos*PB + g*Cp + c``;
* sample-major (sm, ACT / ERR / CODE): word ``(m, ct, y, x)`` = ``[V[m, ct*S+j, y, x] for j]``
  (S channels of one sample) at ``base + pos*PB + ct*Mp + m``.

Both are "position-outermost": a position's ``S x S`` blocks ``(g, ct)`` hold the same values
in both layouts (fm by channel, sm by sample), so the rows and the columns of a product over
positions move by the same ``y_out``/``x_out`` (hw/contract/isa.py).  For 1 x 1 maps they are
the MLP's layouts: fm ``base + g*Fp + f``, sm ``base + fb*Mp + m``.

Weights (WGT), lanes = the layer's outputs:

* a conv block's W (F x C x 3 x 3): word ``(ft, kk, ll, c)`` = ``[W[ft*S+j, c, kk, ll] for j]``
  at ``base + ft*9*Cp + (kk*3+ll)*Cp + c``;
* a layer reading a grid (linear blocks, local classifiers, the output layer; N x (C*H*W),
  golden's features in (c, y, x) order): word ``(p, nt, c)`` = ``[W[nt*S+j, c*H*W + p] for j]``
  at ``base + p*(Np/S)*Cp + nt*Cp + c`` (``p = y*W + x``): the hardware's feature order is
  ``(y, x, c)``, each position's channels padded to Cp; for 1 x 1 maps the MLP's
  ``base + nb*Kp + k``;
* a local classifier transposed (WlT): word ``(p, ct, cls)`` = ``[Wl[cls, (ct*S+i)*H*W + p]
  for i]`` at ``base + p*(Cp/S)*Clsp + ct*Clsp + cls`` (the same words per position as Wl);
* ``identity`` (average pools): word ``(ct, c)`` = ``[256 if c == ct*S+j else 0 for j]`` at
  ``base + ct*Cp + c``, for the largest Cp an average pool reads.

LABEL[m] = the label of sample m, :data:`PAD_LABEL` (255) for padding samples.

Memory map
----------
ACT: ``x_fm``, ``x_sm`` (the input grid), then every stage's output grid with a border (a
conv block reads it: ``block<i>.h_fm``, ``block<i>.h_sm``, ``pool<j>.h_fm``, ``pool<j>.h_sm``)
in its own words (borders are never written, so they stay 0: no other grid shares them), the
other stages' outputs (no border) in two ping-pong buffers ``h_fm.0``, ``h_sm.0``, ``h_fm.1``,
``h_sm.1`` (the n-th of them in buffer ``n % 2``, aliased as ``block<i>.h_fm`` ...: a stage's
output is read by the next stage only; an MLP's hidden layers as before), the conv blocks'
decoder-pooled features ``pooled_fm``/``pooled_sm`` (shared, no border) and ``e_fm`` (shared
by the blocks).  WGT: ``block<i>.fwd``, ``block<i>.local``,
``block<i>.local_t`` per block, ``output``, then ``identity``.  ERR: ``e_sm`` (shared;
``output.e_sm`` is the same words, written last, so the output layer's errors stay readable
after a run), ``d_sm`` (every block's back-propagated error, in its output grid's sm layout).
CODE: ``code`` (every block's ReLU codes, the same layout).  LABEL: ``labels``.  PROG:
``program``.  The grids' borders must be 0 before the first run (the SPRAM of the iCE40 starts
undefined): :meth:`Plan.pack_init`.

Program (per stage, in golden's order, then END)
-------------------------------------------------
* conv block: FORWARD (H = ReLU(Scale(conv(X, W), 9C)): tiles (y, x, g, ft), beats (kk, ll,
  c); h in sm by rows, fm by columns, codes); if the decoder pool's kernel is not 1 x 1, POOL
  (fm -> ``pooled_fm``) and POOL_CODE (sm -> ``pooled_sm``, codes kept at each window's
  maximum only), one of each per class of windows of the same valid shape (a padded pool's
  border windows); LOSS (E = Scale(pooled Wl^T) - targets); BACKWARD (D = ReLU'(E Wl) at every
  position of each window: ``tile_b``, ``y_repeat``/``x_repeat``; the codes leave D at the
  windows' maxima only: maxpool2d_backward then nitro_relu_backward); SGD of Wl (from E^T
  pooled, amp 1, also rewriting WlT); SGD of W (G[(kk, ll, c), f] = sum over (m, y, x) of
  xpad * D: tiles (kk, ll, ct, ft), beats (y, x, m), over the positions the decoder windows
  cover: D is 0 elsewhere);
* ``p[k]``: POOL fm and POOL sm into the next grid; ``a[k]``: SCALE (``identity`` * 256,
  divisor k*k: the average exactly) writing sm by rows and fm by columns;
* linear block: FORWARD, LOSS, BACKWARD, SGD of Wl, SGD of W (the input's positions on the
  spatial levels when it is a feature map); the output layer: LOSS and SGD (amp 1).
Every product reads the weights of the forward pass: a layer's SGD comes after every read of
it.  The divisors are golden's fan-ins.

``program(lr_inv)`` runs every product over the whole padded batch Mp (one program for any
batch); ``program(lr_inv, m)`` is trimmed to a batch of ``m`` samples (sample groups
``ceil(m/S)``, SGD contracting over ``m``), which saves beats on partial batches and never
reads a padding sample's rows, so it does not depend on the LOSS padding rule.  (The pools
walk every group: they read only words an earlier instruction or the host wrote.)

Padding: every instruction carries ``row_len`` and ``col_len`` (the real rows and columns of
its result), and the cores write 0 for every padded row and lane (isa.py), so every padded
word in every memory stays exactly 0: padded neurons do not train as phantom ones (NITRO-ReLU(0)
is ``-c(a)``, not 0).  Padded samples also carry label 255, whose errors LOSS forces to 0.
Products contract over the real K (not Kp).

Not in this design: micro-batching (a batch larger than the memories hold, in slices), grids
sharing words between stages (their borders would need zeroing).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from golden.blocks import amplification, conv_amplification
from golden.layers import PoolGeometry, decoder_pool_geometry
from golden.network import NetworkSpec
from hw.contract import (ADDRESS_WIDTH, ONE_HOT_VALUE, PAD_LABEL, POOL_OPS, RELU_MEAN_CORRECTION,
                         SCALE_SHIFT, Geometry, Op, Region, beat_count, empty_instruction,
                         pack_instruction, pack_lanes, signed_range, tile_count, unpack_lanes)

__all__ = ["compile_network", "Plan", "Allocation", "CompileError", "DoesNotFit",
           "hardware_refusal", "HARDWARE_QUIRKS", "CNN_CORES_NEEDED", "PRODUCTS"]

#: What each instruction of a step computes, in the order a block runs them: a block's
#: forward product (conv or linear); the local classifiers' and the output layer's products
#: (predictions -> errors); the errors back through a local classifier; the local
#: classifiers' and the output layer's weight updates; a block's weight update; the pools
#: (between blocks and the decoder's; no useful MACs).
PRODUCTS = ("forward", "loss", "backward", "classifier sgd", "block sgd", "pool")

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

#: Why a core whose class does not declare ``RUNS_CNN`` cannot train a CNN (its programs use
#: the spatial levels and the ops POOL, POOL_CODE and SCALE).
CNN_CORES_NEEDED = ("CNN programs need a core with the spatial loop levels and the POOL, "
                    "POOL_CODE and SCALE ops of hw/contract/isa.py (a core class with "
                    "RUNS_CNN: the Trainer); this core runs MLPs only "
                    "(--model mlp)")


def _quirk_refusal(spec: NetworkSpec) -> str | None:
    missing = [q for q in spec.active_quirks() if q not in HARDWARE_QUIRKS]
    if not missing:
        return None
    what = [_HARDWARE_LACKS[q] for q in missing]
    what = ", ".join(what[:-1]) + " nor " + what[-1] if len(what) > 1 else what[0]
    if spec.compat == "authors":
        return (f"--compat authors: the Trainer does not implement {what}; of the authors' "
                "quirks only dropping the last partial batch (the training loop's) would apply")
    return f"the Trainer does not implement {what}"


def hardware_refusal(spec: NetworkSpec, runs_cnn: bool = False) -> str | None:
    """Why a trainer core cannot train ``spec`` exactly (the authors' quirks the cores do
    not reproduce; a CNN on a core that does not run CNN programs, ``runs_cnn`` False: the
    class attribute ``TrainerCore.RUNS_CNN``: :data:`CNN_CORES_NEEDED`), or None."""
    return _quirk_refusal(spec) or (CNN_CORES_NEEDED if spec.is_cnn and not runs_cnn
                                    else None)


class CompileError(ValueError):
    """The network cannot be compiled for the trainer."""


class DoesNotFit(CompileError):
    """The network (or batch, or learning rate) exceeds what this trainer instance offers."""


class Allocation(NamedTuple):
    """A named span of words in one memory."""
    region: Region
    base: int
    words: int


def _ceil_to(n: int, s: int) -> int:
    return -(-n // s) * s


class _Grid:
    """A feature map of ``c`` channels, ``h`` x ``w`` positions with a border of ``b``, laid
    out for side ``s`` and ``mp`` samples (module docstring).  ``fm_c``: the channels of
    each sample group's fm words at a position (default ``Cp``; the input's fm, which only
    the host writes, holds just ``C`` when a conv block reads it)."""

    def __init__(self, c: int, h: int, w: int, b: int, s: int, mp: int, fm_c: int = 0):
        self.c, self.h, self.w, self.b = c, h, w, b
        self.cp = _ceil_to(c, s)
        self.ct = self.cp // s
        self.hg, self.wg = h + 2 * b, w + 2 * b
        self.pb = mp // s * self.cp            # words per position (sm; fm but for fm_c)
        self.words = self.hg * self.wg * self.pb
        self.ys, self.xs = self.wg * self.pb, self.pb     # strides of y and x
        self.fm_c = fm_c or self.cp
        self.fm_pb = mp // s * self.fm_c
        self.fm_words = self.hg * self.wg * self.fm_pb
        self.fm_ys, self.fm_xs = self.wg * self.fm_pb, self.fm_pb

    def at(self, y: int, x: int) -> int:
        """Word offset of position (y, x) (valid coordinates; down to -b)."""
        return ((y + self.b) * self.wg + x + self.b) * self.pb

    def fm_at(self, y: int, x: int) -> int:
        """:meth:`at` in the fm layout."""
        return ((y + self.b) * self.wg + x + self.b) * self.fm_pb

    @property
    def features(self) -> int:
        return self.c * self.h * self.w


class _Stage(NamedTuple):
    """A stage of the network: a conv or linear block, a pool, or the output layer."""
    name: str           # golden's: "block<i>", "pool<j>", "output"
    kind: str           # "conv", "linear", "max", "avg", "output"
    src: str            # the grid it reads
    dst: str | None     # the grid it writes (None: the output layer)
    n: int = 0          # out channels / features (classes for the output layer)
    k: int = 0          # pools: the kernel
    pool: PoolGeometry | None = None    # conv blocks: the decoder pool
    amp: int = 1        # forward layer's amplification


def _window_classes(n_out: int, k: int, pad: int, size: int) -> list[tuple[int, int, int, int]]:
    """The windows ``0..n_out-1`` (kernel ``k``, stride ``k``, ``pad`` leading padding, over
    ``size`` real positions) grouped by the real offsets they hold: ``(first window, windows,
    first offset, offsets)``; whole windows form one class, partial ones a class each."""
    out = []
    for p in range(n_out):
        lo = max(0, pad - p * k)
        hi = min(k, size + pad - p * k)
        if out and (lo, hi) == (0, k) and out[-1][2:] == (0, k) \
                and out[-1][0] + out[-1][1] == p:
            out[-1] = (out[-1][0], out[-1][1] + 1, 0, k)
        else:
            out.append((p, 1, lo, hi - lo))
    return out


class Plan:
    """A compiled network: memory map, program builder, host-side packing.

    Attributes
    ----------
    geometry : Geometry          the trainer it was compiled for
    spec : NetworkSpec
    batch : int                  batch capacity M (a step trains 1..M samples)
    padded_batch : int           Mp = ceil(M/S)*S, the samples every product runs over
    classes : int
    stages : list                the network's stages in golden's order
    regions : dict[str, Allocation]   name -> (Region, base, words); aliases share words
    used : dict[Region, int]     words used in each memory
    """

    def __init__(self, spec: NetworkSpec, geometry: Geometry, batch: int):
        self.spec, self.geometry, self.batch = spec, geometry, int(batch)
        s = self.side = geometry.side
        self.padded_batch = mp = _ceil_to(self.batch, s)
        self.classes = c = spec.classes
        self.slope = spec.relu_inv_slope
        self.is_cnn = spec.is_cnn
        self._cp = _ceil_to(c, s)
        self.regions: dict[str, Allocation] = {}
        self._alias: dict[str, str] = {}
        self.grids: dict[str, _Grid] = {}     # "x" and every stage's output, by name
        self.stages: list[_Stage] = []
        top = {r: 0 for r in Region if r != Region.REGS}

        def alloc(name, region, words):
            self.regions[name] = Allocation(region, top[region], words)
            top[region] += words

        def alias(name, other):
            self.regions[name] = self.regions[other]
            self._alias[name] = other

        # the stages and the grids they write
        cin, h, w = spec.input_shape
        if not self.is_cnn:                    # an MLP flattens its input (golden's order)
            cin, h, w = cin * h * w, 1, 1
        shape = {"x": (cin, h, w)}
        reader = {}                            # grid -> the kind of stage that reads it
        cur, nblock, linear = "x", 0, 0
        for i, tok in enumerate(spec.layers):
            kind, num = tok[0], tok[1:]
            if kind in "cpa" and linear:
                raise CompileError(f"layer {i} ({tok}): conv and pool layers must come before "
                                   "the first linear block")
            reader[cur] = {"c": "conv", "l": "linear"}.get(kind, "pool")
            if kind == "c":
                name, n = f"block{nblock}", int(num)
                pool = decoder_pool_geometry(n, h, w, spec.decoder_dim)
                amp = conv_amplification(c, h, pool, spec.conv_amp_extra)
                self.stages.append(_Stage(name, "conv", cur, name, n=n, pool=pool, amp=amp))
                cin = n
                nblock += 1
            elif kind in "pa":
                k = int(num) if num else 2
                name = f"pool{i}"
                geom = PoolGeometry(h, w, k, k)
                h, w = geom.out_h, geom.out_w
                self.stages.append(_Stage(name, "max" if kind == "p" else "avg", cur, name, k=k))
            else:
                name, n = f"block{nblock}", int(num)
                self.stages.append(_Stage(name, "linear", cur, name, n=n, amp=amplification(c)))
                cin, h, w = n, 1, 1
                nblock += 1
                linear += 1
            shape[name] = (cin, h, w)
            cur = name
        reader[cur] = "output"
        self.stages.append(_Stage("output", "output", cur, None, n=c))
        # grids: a border of 1 where a conv block reads
        for name, (ch, gh, gw) in shape.items():
            conv = reader[name] == "conv"
            fm_c = ch if name == "x" and conv else 0
            self.grids[name] = _Grid(ch, gh, gw, 1 if conv else 0, s, mp, fm_c)
        self.blocks = sum(st.kind in ("conv", "linear") for st in self.stages)

        # ACT: the input, the feature maps with a border (their own words), two ping-pong
        # buffers for the others (a stage's output is read by the next stage only), pooled,
        # e_fm
        x = self.grids["x"]
        alloc("x_fm", Region.ACT, x.fm_words)
        alloc("x_sm", Region.ACT, x.words)
        buffered = []                          # (grid, buffer)
        for st in self.stages[:-1]:
            g = self.grids[st.name]
            if g.b:
                alloc(f"{st.name}.h_fm", Region.ACT, g.words)
                alloc(f"{st.name}.h_sm", Region.ACT, g.words)
            else:
                buffered.append((st.name, len(buffered) % 2))
        for buf in range(min(2, len(buffered))):
            words = max(self.grids[name].words for name, b in buffered if b == buf)
            alloc(f"h_fm.{buf}", Region.ACT, words)
            alloc(f"h_sm.{buf}", Region.ACT, words)
        pooled = [self._pooled(st) for st in self.stages if st.kind == "conv"]
        pooled_words = max((q.words for q in pooled if q is not None), default=0)
        if pooled_words:
            alloc("pooled_fm", Region.ACT, pooled_words)
            alloc("pooled_sm", Region.ACT, pooled_words)
        if self.blocks:
            alloc("e_fm", Region.ACT, mp // s * self._cp)
        # WGT, in golden's layer order
        for st in self.stages:
            if st.kind in ("conv", "linear"):
                alloc(f"{st.name}.fwd", Region.WGT, self._fwd_words(st))
                q = self._local_grid(st)
                alloc(f"{st.name}.local", Region.WGT, q.h * q.w * self._cp // s * q.cp)
                alloc(f"{st.name}.local_t", Region.WGT, q.h * q.w * q.ct * self._cp)
        src = self.grids[self.stages[-1].src]
        alloc("output", Region.WGT, src.h * src.w * self._cp // s * src.cp)
        avg = [self.grids[st.src].cp for st in self.stages if st.kind == "avg"]
        self._ident_cp = max(avg, default=0)
        if avg:
            alloc("identity", Region.WGT, self._ident_cp // s * self._ident_cp)
        # views of the ping-pong buffers
        for name, buf in buffered:
            alias(f"{name}.h_fm", f"h_fm.{buf}")
            alias(f"{name}.h_sm", f"h_sm.{buf}")
        # ERR, CODE, LABEL, PROG
        alloc("e_sm", Region.ERR, self._cp // s * mp)
        alias("output.e_sm", "e_sm")
        if self.blocks:
            d_words = max(self.grids[st.name].words for st in self.stages
                          if st.kind in ("conv", "linear"))
            alloc("d_sm", Region.ERR, d_words)
            alloc("code", Region.CODE, d_words)
        alloc("labels", Region.LABEL, mp)
        alloc("program", Region.PROG, len(self.program(1, check=False)))
        self.used = {r: top[r] for r in top}

    # --- geometry of the stages ----------------------------------------------------------
    def _pooled(self, st: _Stage) -> _Grid | None:
        """A conv block's decoder-pooled grid (None for a 1 x 1 kernel)."""
        p = st.pool
        if p.kh == 1 and p.kw == 1:
            return None
        return _Grid(st.n, p.out_h, p.out_w, 0, self.side, self.padded_batch)

    def _local_grid(self, st: _Stage) -> _Grid:
        """The grid a block's local classifier reads."""
        return (self._pooled(st) if st.kind == "conv" else None) or self.grids[st.name]

    def _fwd_words(self, st: _Stage) -> int:
        s, src = self.side, self.grids[st.src]
        np_ = _ceil_to(st.n, s)
        if st.kind == "conv":
            return np_ // s * 9 * src.cp
        return src.h * src.w * np_ // s * src.cp

    @property
    def layer_names(self) -> list[str]:
        """golden's ``Network.weights()`` keys, in memory order."""
        out = []
        for st in self.stages:
            if st.kind in ("conv", "linear"):
                out += [f"{st.name}.fwd", f"{st.name}.local"]
        return out + ["output"]

    def _base(self, name: str) -> int:
        return self.regions[name].base

    def _fm(self, grid: str) -> int:
        """Base of grid ``grid``'s feature-major words."""
        return self._base("x_fm" if grid == "x" else f"{grid}.h_fm")

    def _sm(self, grid: str) -> int:
        """Base of grid ``grid``'s sample-major words."""
        return self._base("x_sm" if grid == "x" else f"{grid}.h_sm")

    # --- program ---------------------------------------------------------------
    def program(self, lr_inv: int, m: int | None = None, *, check: bool = True) -> list[dict]:
        """The training step's program (one dict per instruction, every field present,
        validated with ``isa.pack_instruction``), ending with END.

        With ``m`` (1..batch) the program is trimmed to a batch of ``m`` samples: the
        sample groups run to ``ceil(m/S)`` and the SGD products contract over ``m`` samples
        (fewer beats for a partial batch; the layouts are unchanged).  Without it every
        product runs over the whole padded batch ``Mp`` (one program for any batch).
        ``check``: validate every field (``DoesNotFit`` names the first that does not fit).
        """
        return self._program(lr_inv, m, check)[0]

    def instruction_products(self, m: int | None = None) -> list[str]:
        """The product (one of :data:`PRODUCTS`) each instruction of ``program(lr_inv, m)``
        computes, END excluded."""
        return [p for p, _ in self._program(1, m, False)[1]]

    def instruction_stages(self, m: int | None = None) -> list[str]:
        """The stage (golden's layer name: ``block<i>``, ``pool<j>``, ``output``) each
        instruction of ``program(lr_inv, m)`` belongs to, END excluded."""
        return [st for _, st in self._program(1, m, False)[1]]

    def _program(self, lr_inv, m, check):
        g, s, mp, c = self.geometry, self.side, self.padded_batch, self.classes
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
        amp_max = max([st.amp for st in self.stages], default=1)
        if lr_inv * amp_max >= 1 << g.d_g_width:
            raise DoesNotFit(f"d_g = lr_inv * amp = {lr_inv} * {amp_max} = {lr_inv * amp_max:,} "
                             f"needs more than the trainer's {g.d_g_width} bits (D_G_WIDTH)")
        spec = self.spec
        prog, products = [], []
        product = stage = None    # what the instructions emitted next compute, and where

        def level(d, tiles=1, repeat=1, beats=1, stride=0, b_stride=0, out=0):
            """The fields of spatial level ``d``; a level that runs once is all 0."""
            f = {f"{d}_tiles": tiles if tiles > 1 else 0,
                 f"{d}_repeat": repeat if repeat > 1 else 0,
                 f"{d}_beats": beats if beats > 1 else 0,
                 f"{d}_stride": stride if tiles > 1 or beats > 1 else 0,
                 f"{d}_b_stride": b_stride if beats > 1 else 0,
                 f"{d}_out": out if tiles * repeat > 1 else 0}
            return f

        def emit(op, y=None, x=None, **f):
            ins = empty_instruction(op, **f, **(y or {}), **(x or {}))
            try:
                if check:
                    pack_instruction(ins)
            except ValueError as exc:
                raise DoesNotFit(f"instruction {len(prog)} ({Op(op).name}): {exc}") from None
            prog.append(ins)
            products.append((product, stage))

        e_sm, e_fm = self._base("e_sm"), (self._base("e_fm") if self.blocks else 0)
        d_sm = self._base("d_sm") if self.blocks else 0
        code = self._base("code") if self.blocks else 0
        common = dict(rows=rows, samples=samples)

        for st in self.stages:
            stage = st.name
            if st.kind == "output":
                src = self.grids[st.src]
                w = self._base("output")
                product = "loss"
                self._flat_product(emit, level, Op.LOSS, src, self._fm(st.src), w, st.n, e_sm,
                                   None, divisor=src.features, **common)
                product = "classifier sgd"
                self._flat_sgd(emit, level, src, self._sm(st.src), e_sm, w, None, st.n,
                               d_g=lr_inv, d_w=spec.subnet_decay_inv, **common)
            elif st.kind in ("max", "avg"):
                product = "pool"
                self._pool(emit, level, st, **common)
            else:
                src, h = self.grids[st.src], self.grids[st.name]
                wf, wl = self._base(f"{st.name}.fwd"), self._base(f"{st.name}.local")
                wlt = self._base(f"{st.name}.local_t")
                product = "forward"
                if st.kind == "conv":
                    self._conv_forward(emit, level, st, src, h, wf, code, **common)
                    q = self._pooled(st)
                    if q is not None:
                        product = "pool"
                        self._decoder_pools(emit, level, st, h, q, code)
                    else:
                        q = h
                else:
                    self._flat_product(emit, level, Op.FORWARD, src, self._fm(st.src), wf,
                                       st.n, self._sm(st.dst), self._fm(st.dst), code=code,
                                       divisor=src.features, **common)
                    q = h
                q_fm = self._base("pooled_fm") if q is not h else self._fm(st.dst)
                q_sm = self._base("pooled_sm") if q is not h else self._sm(st.dst)
                product = "loss"
                self._flat_product(emit, level, Op.LOSS, q, q_fm, wl, c, e_sm, e_fm,
                                   divisor=q.features, **common)
                product = "backward"
                self._backward(emit, level, st, h, q, wlt, e_fm, d_sm, code, **common)
                product = "classifier sgd"
                self._flat_sgd(emit, level, q, q_sm, e_sm, wl, wlt, c, d_g=lr_inv,
                               d_w=spec.subnet_decay_inv, **common)
                product = "block sgd"
                if st.kind == "conv":
                    self._conv_sgd(emit, level, st, src, h, wf, d_sm, lr_inv * st.amp, **common)
                else:
                    self._flat_sgd(emit, level, src, self._sm(st.src), d_sm, wf, None, st.n,
                                   d_g=lr_inv * st.amp, d_w=spec.fwd_decay_inv, **common)
        product = None
        emit(Op.END)
        return prog, products[:-1]

    def _flat_product(self, emit, level, op, src, fm, w, n, row_base, col_base, *, rows,
                      samples, divisor, code=0):
        """A product over a grid's features (flattened in the hardware's order (y, x, c)):
        FORWARD of a linear block, LOSS of a local classifier or the output layer.  Rows: the
        samples; columns: the ``n`` outputs; the grid's positions on the beats' levels."""
        s, mp = self.side, self.padded_batch
        np_ = _ceil_to(n, s)
        per_pos = np_ // s * src.cp            # the weights' words per position
        a_base = fm + src.at(0, 0)
        f = dict(a_base=a_base, a_tile_stride=src.cp, a_k_stride=1, b_base=w,
                 b_tile_stride=src.cp, b_k_stride=1, k_len=src.c, tiles_r=rows,
                 tiles_c=np_ // s, row_base=row_base, tc_stride=mp, divisor=divisor,
                 row_len=samples, col_len=n)
        if col_base is not None:
            f.update(col_en=1, col_base=col_base, col_tr_stride=np_)
        if op == Op.FORWARD:
            f.update(inv_slope=self.slope, aux_base=code)
        emit(op, level("y", beats=src.h, stride=src.ys, b_stride=src.w * per_pos),
             level("x", beats=src.w, stride=src.xs, b_stride=per_pos), **f)

    def _flat_sgd(self, emit, level, src, sm, b_base, w, wt, n, *, rows, samples, d_g, d_w):
        """SGD of a layer reading a grid: rows = its (position, channel) weights, columns =
        its ``n`` outputs, beats = the samples; ``wt``: also write the transposed copy."""
        s, mp = self.side, self.padded_batch
        np_ = _ceil_to(n, s)
        per_pos = np_ // s * src.cp
        a_base = sm + src.at(0, 0)
        f = dict(b_src=1, a_base=a_base, a_tile_stride=mp, a_k_stride=1, b_base=b_base,
                 b_tile_stride=mp, b_k_stride=1, k_len=samples, tiles_r=src.ct,
                 tiles_c=np_ // s, row_base=w, tc_stride=src.cp, d_g=d_g, d_w=d_w,
                 row_len=src.c, col_len=n)
        if wt is not None:
            f.update(col_en=1, col_base=wt, col_tr_stride=np_)
        emit(Op.SGD, level("y", tiles=src.h, stride=src.ys, out=src.w * per_pos),
             level("x", tiles=src.w, stride=src.xs, out=per_pos), **f)

    def _conv_forward(self, emit, level, st, src, h, wf, code, *, rows, samples):
        s, mp = self.side, self.padded_batch
        emit(Op.FORWARD,
             level("y", tiles=h.h, beats=3, stride=src.fm_ys, b_stride=3 * src.cp, out=h.ys),
             level("x", tiles=h.w, beats=3, stride=src.fm_xs, b_stride=src.cp, out=h.xs),
             inv_slope=self.slope, a_base=self._fm(st.src) + src.fm_at(-1, -1),
             a_tile_stride=src.fm_c, a_k_stride=1, b_base=wf, b_tile_stride=9 * src.cp,
             b_k_stride=1, k_len=src.c, tiles_r=rows, tiles_c=_ceil_to(st.n, s) // s,
             row_base=self._sm(st.dst) + h.at(0, 0), tc_stride=mp, aux_base=code + h.at(0, 0),
             col_en=1, col_base=self._fm(st.dst) + h.at(0, 0), col_tr_stride=h.cp,
             divisor=9 * src.c, row_len=samples, col_len=st.n)

    def _classes(self, st: _Stage):
        """A block's window classes: ``[(y class, x class)]`` of ``(first window, windows,
        first offset, offsets)`` (a 1 x 1 kernel: one class of the whole map)."""
        p, h = st.pool, self.grids[st.name]
        if p is None or (p.kh == 1 and p.kw == 1):
            return [((0, h.h, 0, 1), (0, h.w, 0, 1))], (1, 1, 0, 0)
        ys = _window_classes(p.out_h, p.kh, p.ph, p.h)
        xs = _window_classes(p.out_w, p.kw, p.pw, p.w)
        return [(cy, cx) for cy in ys for cx in xs], (p.kh, p.kw, p.ph, p.pw)

    def _decoder_pools(self, emit, level, st, h, q, code):
        s = self.side
        classes, (kh, kw, ph, pw) = self._classes(st)
        for op, src, dst in ((Op.POOL, self._fm(st.dst), self._base("pooled_fm")),
                             (Op.POOL_CODE, self._sm(st.dst), self._base("pooled_sm"))):
            for (py0, npy, dy0, ndy), (px0, npx, dx0, ndx) in classes:
                at = h.at(py0 * kh + dy0 - ph, px0 * kw + dx0 - pw)
                f = dict(a_base=src + at, a_tile_stride=s, tiles_r=h.pb // s, tiles_c=1,
                         k_len=1, row_base=dst + q.at(py0, px0), windows=1)
                if op == Op.POOL_CODE:
                    f.update(aux_base=code + at)
                emit(op, level("y", tiles=npy, beats=ndy, stride=h.ys, out=q.ys),
                     level("x", tiles=npx, beats=ndx, stride=h.xs, out=q.xs), **f)

    def _backward(self, emit, level, st, h, q, wlt, e_fm, d_sm, code, *, rows, samples):
        mp, cp = self.padded_batch, self._cp
        per_pos = q.ct * cp                   # WlT's words per position
        classes, (kh, kw, ph, pw) = self._classes(st)
        for (py0, npy, dy0, ndy), (px0, npx, dx0, ndx) in classes:
            at = h.at(py0 * kh + dy0 - ph, px0 * kw + dx0 - pw)
            emit(Op.BACKWARD,
                 level("y", tiles=npy, repeat=ndy, stride=q.w * per_pos, out=h.ys),
                 level("x", tiles=npx, repeat=ndx, stride=per_pos, out=h.xs),
                 inv_slope=self.slope, tile_b=int(npy * npx > 1), a_base=e_fm, a_tile_stride=cp, a_k_stride=1,
                 b_base=wlt + (py0 * q.w + px0) * per_pos, b_tile_stride=cp, b_k_stride=1,
                 k_len=self.classes, tiles_r=rows, tiles_c=h.ct, row_base=d_sm + at,
                 tc_stride=mp, aux_base=code + at, row_len=samples, col_len=h.c)

    def _conv_sgd(self, emit, level, st, src, h, wf, d_sm, d_g, *, rows, samples):
        mp = self.padded_batch
        p = st.pool
        hc, wc = min(h.h, p.out_h * p.kh - p.ph), min(h.w, p.out_w * p.kw - p.pw)
        emit(Op.SGD,
             level("y", tiles=3, beats=hc, stride=src.ys, b_stride=h.ys, out=3 * src.cp),
             level("x", tiles=3, beats=wc, stride=src.xs, b_stride=h.xs, out=src.cp),
             b_src=1, a_base=self._sm(st.src) + src.at(-1, -1), a_tile_stride=mp,
             a_k_stride=1, b_base=d_sm + h.at(0, 0), b_tile_stride=mp, b_k_stride=1,
             k_len=samples, tiles_r=src.ct, tiles_c=h.ct, row_base=wf, tc_stride=9 * src.cp,
             d_g=d_g, d_w=self.spec.fwd_decay_inv, row_len=src.c, col_len=st.n)

    def _pool(self, emit, level, st, *, rows, samples):
        s, mp = self.side, self.padded_batch
        src, dst, k = self.grids[st.src], self.grids[st.dst], st.k
        at, to = src.at(0, 0), dst.at(0, 0)
        if st.kind == "max":
            for a, r in ((self._fm(st.src), self._fm(st.dst)),
                         (self._sm(st.src), self._sm(st.dst))):
                emit(Op.POOL, level("y", tiles=dst.h, beats=k, stride=src.ys, out=dst.ys),
                     level("x", tiles=dst.w, beats=k, stride=src.xs, out=dst.xs),
                     a_base=a + at, a_tile_stride=s, tiles_r=src.pb // s, tiles_c=1,
                     k_len=1, row_base=r + to, windows=1)
            return
        # the average: the MAC array with B = 256 * identity, Scaler divisor k*k
        emit(Op.SCALE, level("y", tiles=dst.h, beats=k, stride=src.ys, out=dst.ys),
             level("x", tiles=dst.w, beats=k, stride=src.xs, out=dst.xs),
             windows=1, a_base=self._fm(st.src) + at, a_tile_stride=src.cp, a_k_stride=1,
             b_base=self._base("identity"), b_tile_stride=self._ident_cp, b_k_stride=1,
             k_len=src.c, tiles_r=rows, tiles_c=src.ct, row_base=self._sm(st.dst) + to,
             tc_stride=mp, col_en=1, col_base=self._fm(st.dst) + to, col_tr_stride=dst.cp,
             divisor=k * k, row_len=samples, col_len=src.c)

    def program_words(self, lr_inv: int, m: int | None = None) -> list[int]:
        """:meth:`program` packed with ``isa.pack_instruction`` (what goes into PROG)."""
        return [pack_instruction(i) for i in self.program(lr_inv, m)]

    # --- weights ---------------------------------------------------------------
    def _weight_views(self):
        """(layer name, region name, kind, golden shape, grid, n) of every weight region:
        kind "conv", "flat" (a layer reading ``grid``) or "flat_t" (a local classifier
        transposed)."""
        c = self.classes
        for st in self.stages:
            src = self.grids[st.src]
            if st.kind == "output":
                yield "output", "output", "flat", (c, src.features), src, c
            elif st.kind in ("conv", "linear"):
                fwd = f"{st.name}.fwd"
                if st.kind == "conv":
                    yield fwd, fwd, "conv", (st.n, src.c, 3, 3), src, st.n
                else:
                    yield fwd, fwd, "flat", (st.n, src.features), src, st.n
                q = self._local_grid(st)
                local = f"{st.name}.local"
                yield local, local, "flat", (c, q.features), q, c
                yield local, f"{st.name}.local_t", "flat_t", (c, q.features), q, c

    def _to_lanes(self, kind, w, grid, n) -> np.ndarray:
        """golden weights -> the region's words as lanes (module docstring)."""
        s = self.side
        np_ = _ceil_to(n, s)
        if kind == "conv":                     # (ft, kk, ll, c) lanes f
            a = np.zeros((np_, 9, grid.cp), dtype=np.int64)
            a[:n, :, :grid.c] = w.transpose(0, 2, 3, 1).reshape(n, 9, grid.c)
            return a.reshape(np_ // s, s, 9 * grid.cp).transpose(0, 2, 1).reshape(-1, s)
        hw = grid.h * grid.w
        if kind == "flat":                     # (p, nt, c) lanes n
            a = np.zeros((hw, np_, grid.cp), dtype=np.int64)
            a[:, :n, :grid.c] = w.reshape(n, grid.c, hw).transpose(2, 0, 1)
            return a.reshape(hw, np_ // s, s, grid.cp).transpose(0, 1, 3, 2).reshape(-1, s)
        a = np.zeros((hw, grid.cp, np_), dtype=np.int64)      # (p, ct, cls) lanes c
        a[:, :grid.c, :n] = w.reshape(n, grid.c, hw).transpose(2, 1, 0)
        return a.reshape(hw, grid.ct, s, np_).transpose(0, 1, 3, 2).reshape(-1, s)

    def _from_lanes(self, kind, lanes, grid, n) -> np.ndarray:
        """Inverse of :meth:`_to_lanes` ("conv" and "flat")."""
        s = self.side
        np_ = _ceil_to(n, s)
        if kind == "conv":
            a = lanes.reshape(np_ // s, 9 * grid.cp, s).transpose(0, 2, 1)
            a = a.reshape(np_, 9, grid.cp)[:n, :, :grid.c]
            return a.reshape(n, 3, 3, grid.c).transpose(0, 3, 1, 2).copy()
        hw = grid.h * grid.w
        a = lanes.reshape(hw, np_ // s, grid.cp, s).transpose(0, 1, 3, 2).reshape(hw, np_,
                                                                               grid.cp)
        return a[:, :n, :grid.c].transpose(1, 2, 0).reshape(n, grid.c * hw).copy()

    def pack_weights(self, weights: dict) -> list[tuple[Region, int, list[int]]]:
        """golden ``Network.weights()`` -> ``[(Region.WGT, base, words), ...]`` covering every
        weight region (local classifiers twice: Wl and WlT; the average pools' constant
        ``identity``), padding zero."""
        missing = set(self.layer_names) - set(weights)
        if missing:
            raise KeyError(f"missing weights for {sorted(missing)}")
        out = []
        width = self.geometry.wgt_width
        for layer, region, kind, shape, grid, n in self._weight_views():
            w = np.asarray(weights[layer])
            if w.shape != shape:
                raise ValueError(f"{layer}: shape {w.shape}, the plan expects {shape}")
            if w.dtype.kind not in "iu":
                raise TypeError(f"{layer}: weights must be integers, got {w.dtype}")
            lanes = self._to_lanes(kind, w.astype(np.int64), grid, n)
            out.append((Region.WGT, self._base(region), pack_lanes(lanes, width,
                                                                   f"weight {layer}")))
        if self._ident_cp:
            s, cpi = self.side, self._ident_cp
            ident = np.zeros((cpi // s, cpi, s), dtype=np.int64)
            for ct in range(cpi // s):
                ident[ct, ct * s + np.arange(s), np.arange(s)] = 1 << SCALE_SHIFT
            out.append((Region.WGT, self._base("identity"),
                        pack_lanes(ident.reshape(-1, s), width, "identity")))
        return out

    def unpack_weights(self, read_words: ReadWords) -> dict[str, np.ndarray]:
        """Read every layer's weights back (from W / Wl / Wout, not WlT) as int64 arrays
        keyed like golden's ``Network.weights()``.  ``read_words(region, base, count)``
        returns ``count`` packed words."""
        out = {}
        for layer, region, kind, shape, grid, n in self._weight_views():
            if kind == "flat_t":
                continue
            a = self.regions[region]
            lanes = unpack_lanes(read_words(a.region, a.base, a.words), self.geometry.wgt_width,
                                 self.side)
            out[layer] = self._from_lanes(kind, lanes, grid, n)
        return out

    # --- batches ---------------------------------------------------------------
    def pack_batch(self, x, labels) -> list[tuple[Region, int, list[int]]]:
        """An int8 batch ``x`` (m x input_shape; an MLP's also m x features) and its labels
        (m,) -> ``[(ACT, x_fm), (ACT, x_sm), (LABEL, labels)]`` words (the whole input grid,
        borders and padding samples zero, padding labels 255).  ``1 <= m <= batch``."""
        x = np.asarray(x)
        labels = np.asarray(labels)
        grid = self.grids["x"]
        if self.is_cnn:
            want = self.spec.input_shape
            if x.ndim != 4 or x.shape[1:] != want:
                raise ValueError(f"x must be (m, {want}), got {x.shape}")
        else:
            k0 = grid.c
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
        s, mp = self.side, self.padded_batch
        xp = np.zeros((mp, grid.cp, grid.h, grid.w), dtype=np.int64)
        xp[:m, :grid.c] = x.reshape(m, grid.c, grid.h, grid.w)
        b, g = grid.b, mp // s
        fm = np.zeros((grid.hg, grid.wg, g, grid.fm_c, s), dtype=np.int64)
        fm[b:b + grid.h, b:b + grid.w] = xp[:, :grid.fm_c].reshape(
            g, s, grid.fm_c, grid.h, grid.w).transpose(3, 4, 0, 2, 1)
        sm = np.zeros((grid.hg, grid.wg, grid.ct, mp, s), dtype=np.int64)
        sm[b:b + grid.h, b:b + grid.w] = xp.reshape(mp, grid.ct, s, grid.h, grid.w).transpose(
            3, 4, 1, 0, 2)
        w = self.geometry.act_width
        lab = np.full(mp, PAD_LABEL, dtype=np.int64)
        lab[:m] = labels
        return [
            (Region.ACT, self._base("x_fm"), pack_lanes(fm.reshape(-1, s), w, "x")),
            (Region.ACT, self._base("x_sm"), pack_lanes(sm.reshape(-1, s), w, "x")),
            (Region.LABEL, self._base("labels"), [int(v) for v in lab]),
        ]

    def pack_init(self) -> list[tuple[Region, int, list[int]]]:
        """Zero words for every ACT grid with a border (a conv block's input), which the
        programs read but never write: ``[(ACT, base, words), ...]`` to write once before
        the first run (the input grid is :meth:`pack_batch`'s).  Empty for an MLP."""
        out = []
        for name, grid in self.grids.items():
            if name != "x" and grid.b:
                for layout in ("h_fm", "h_sm"):
                    a = self.regions[f"{name}.{layout}"]
                    out.append((Region.ACT, a.base, [0] * a.words))
        return out

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
        s, mp = self.side, self.padded_batch
        e = lanes.reshape(self._cp // s, mp, s).transpose(1, 0, 2).reshape(mp, self._cp)
        yhat = e[:m, :self.classes].copy()
        yhat[np.arange(m), labels] += ONE_HOT_VALUE
        return yhat

    # --- figures ---------------------------------------------------------------
    def product_macs(self, m: int) -> dict[str, int]:
        """Useful MACs of one step on ``m`` samples per product (:data:`PRODUCTS`; the pools
        have none): they sum to :meth:`useful_macs`."""
        out = dict.fromkeys(PRODUCTS, 0)
        c = self.classes
        for st in self.stages:
            src = self.grids[st.src]
            if st.kind == "output":
                out["loss"] += src.features * c
                out["classifier sgd"] += src.features * c
            elif st.kind in ("conv", "linear"):
                if st.kind == "conv":
                    h = self.grids[st.name]
                    block = 9 * src.c * st.n * h.h * h.w
                    local = self._local_grid(st).features * c
                else:
                    block, local = src.features * st.n, st.n * c
                out["forward"] += block
                out["block sgd"] += block
                for k in ("loss", "backward", "classifier sgd"):
                    out[k] += local
        return {k: v * int(m) for k, v in out.items()}

    def useful_macs(self, m: int) -> int:
        """MACs of one step on ``m`` samples, as golden's ``Network.macs_per_sample() * m``."""
        return sum(self.product_macs(m).values())

    def engine_beats(self, m: int | None = None) -> int:
        """MAC-array beats of ``program(lr_inv, m)`` (every op but the pools): the sum of
        ``tile_count * beat_count`` (no stalls)."""
        return sum(tile_count(i) * beat_count(i) for i in self.program(1, m)
                   if i["op"] not in POOL_OPS and i["op"] != Op.END)

    def pool_beats(self, m: int | None = None) -> int:
        """The pools' words read per tile row (``tile_count * beat_count`` of POOL and
        POOL_CODE)."""
        return sum(tile_count(i) * beat_count(i) for i in self.program(1, m)
                   if i["op"] in POOL_OPS)

    def words_per_sample(self) -> dict[Region, float]:
        """The words of each memory this plan uses per sample of its padded batch (the
        weights, which do not grow with the batch, included)."""
        return {r: self.used[r] / self.padded_batch for r in (Region.ACT, Region.WGT,
                                                              Region.ERR, Region.CODE)}

    def describe(self) -> str:
        """The memory map as a table, and each memory's words used / depth."""
        g = self.geometry
        if self.is_cnn:
            what = f"CNN {','.join(self.spec.layers)} on {self.spec.input_shape}"
        else:
            sizes = [self.grids["x"].c] + [st.n for st in self.stages]
            what = f"MLP {'-'.join(str(v) for v in sizes)}"
        lines = [f"{what}, batch {self.batch} (padded {self.padded_batch}), S = {self.side}",
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
        return (f"Plan({','.join(self.spec.layers)}, batch={self.batch}, "
                f"side={self.side})")


def compile_network(spec: NetworkSpec, geometry: Geometry, batch: int) -> Plan:
    """Lay out a network's training step for ``geometry`` with batch capacity ``batch``.

    Raises CompileError for what the contract cannot express exactly (the authors' quirks, an
    unsupported ReLU slope, an average pool before the first conv block: its input may be
    -128, which the Scaler saturates to -127) and DoesNotFit when a memory, the divisor, the
    label memory, the program memory or an instruction field is too small (naming it).
    """
    if not isinstance(spec, NetworkSpec):
        raise CompileError(f"expected a golden.network.NetworkSpec, got {type(spec).__name__}")
    refusal = _quirk_refusal(spec)
    if refusal:
        raise CompileError(refusal)
    if spec.relu_inv_slope not in RELU_MEAN_CORRECTION:
        raise CompileError(f"ReLU inverse slope {spec.relu_inv_slope} is not supported "
                           f"({sorted(RELU_MEAN_CORRECTION)})")
    for tok in spec.layers:
        if tok[0] == "c":
            break
        if tok[0] == "a":
            raise CompileError(f"an average pool before the first conv block ({tok} in "
                               f"{','.join(spec.layers)}): its input may hold -128, which "
                               "the SCALE op saturates to -127")
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
    if spec.is_cnn and any(t[0] == "a" for t in spec.layers) \
            and (1 << SCALE_SHIFT) > signed_range(g.wgt_width)[1]:
        raise DoesNotFit(f"an average pool's identity ({1 << SCALE_SHIFT}) does not fit the "
                         f"{g.wgt_width}-bit WGT lanes")
    plan = Plan(spec, g, batch)

    # divisors (Scaler fan-ins)
    for st in plan.stages:
        src = plan.grids[st.src]
        divs = []
        if st.kind == "conv":
            divs = [(9 * src.c, f"{st.name} forward"),
                    (plan._local_grid(st).features, f"{st.name} local classifier")]
        elif st.kind == "linear":
            divs = [(src.features, f"{st.name} forward"), (st.n, f"{st.name} local classifier")]
        elif st.kind == "output":
            divs = [(src.features, "output")]
        elif st.kind == "avg":
            divs = [(st.k * st.k, f"{st.name} average pool")]
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
    plan.program(1)         # every field in range (the spatial levels' counts: 255 at most)
    return plan

