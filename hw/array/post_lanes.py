"""Post-processing lanes of the Trainer: what happens to each drained row of accumulators.

``S`` identical lanes, fed in lock-step with one tile row (``S`` accumulators) per item, run
the chain of the current instruction's ``op`` (``hw.contract.Op``):

=============  ==================================================  =====================
op             chain (per lane)                                    ``value`` out
=============  ==================================================  =====================
``FORWARD``    Scaler(divisor) -> NitroRelu(inv_slope)             ``h``; ``code`` too
``LOSS``       Scaler(divisor)                                     ``y`` (the writer
                                                                   subtracts the target)
``SCALE``      Scaler(divisor) (LOSS's chain)                      ``y``
``BACKWARD``   saturate acc to ``err_width`` (registered)          ``d``
               -> NitroReluBackward
``SGD``        SgdUpdate(w = ``wgt`` lane, g = acc, d_g, d_w)      ``w'``
=============  ==================================================  =====================

Rows may go through fewer units than there are lanes (``row_cycles`` = k > 1, free-running lanes
only): ``S / k`` Scaler, NitroRelu and SgdUpdate units; each FORWARD, LOSS or SGD row is
registered, handed to the units in k chunks of ``S / k`` values on k consecutive cycles, and
gathered again into one output row.  The SgdUpdate units are the largest part of the lanes (two
long divisions each, 41 and 21 bits wide), and these rows are sparse: a tile accumulates over its
``k_len`` beats (the batch for SGD, the fan-in for FORWARD and LOSS) and then drains S rows, so
k cycles per row hide behind the next tile's beats.  BACKWARD keeps S NitroReluBackward units
(its tiles over the classes are only a few beats long).  The producer must space those rows at
least k cycles apart (``i.ready`` is low in between; the Trainer throttles its front instead,
hw/trainers/trainer.py).

The ``op`` and the constants must stay still while items are in flight (the Trainer changes
them only between instructions, when the lanes are empty).  The lanes register ``op``'s
decode, so ``op`` must be set one cycle before the first item (the Trainer sets it many cycles
before: an instruction's first row leaves the MAC array after its first tile).  The units are
the ones tested against golden one by one (hw/units/scaler.py, hw/units/nitro_relu.py, hw/units/sgd_update.py).

Overflow: ``backerr`` pulses (one cycle after the item is taken) for every BACKWARD item with an
accumulator outside the signed
``err_width`` range (it is saturated); ``sgd_overflow`` is the lanes' sticky SgdUpdate flag
(``clear`` clears it).
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.contract import CODE_WIDTH, Op
from hw.replica import replicas
from hw.units.nitro_relu import NitroRelu, NitroReluBackward
from hw.units.scaler import Scaler
from hw.units.sgd_update import SgdUpdate

__all__ = ["PostLanes"]

#: quotient bits per stage of the NitroReluBackward lanes' long division: fewer stages and
#: fewer registers on the S lanes, at two compare-and-subtracts a stage
BACKWARD_BITS_PER_STAGE = 2


class PostLanes(wiring.Component):
    """``S`` lanes of post-processing, one chain per op (see module doc).

    Ports
    -----
    i : In(stream.Signature(in_layout))     ``acc`` (S x signed acc_width), ``wgt`` (S x
                                            signed wgt_width), ``code`` (S x 2 bits)
    o : Out(stream.Signature(out_layout))   ``value`` (S x signed value_width), ``code``
    op : In(3); divisor, inv_slope, d_g, d_w : In -- the instruction's constants
    backerr : Out(1) -- pulse, one cycle after a BACKWARD item entered with an out-of-range
        accumulator
    sgd_overflow : Out(1) -- sticky, cleared by ``clear``

    ``row_cycles`` = k: ``side / k`` Scaler, NitroRelu and SgdUpdate units, k cycles a row
    (module doc); ``side`` NitroReluBackward units.

    ``free_running=True``: the consumer promises ``o.ready == 1`` always (the Trainer's lanes
    feed a FIFO with a credit for every item in flight), so every unit advances every cycle
    and ``i.ready`` is 1 (with ``row_cycles`` = k > 1: low for k - 1 cycles after a FORWARD,
    LOSS or SGD item).  No ready signal then runs through the lanes and no clock enable
    fans out to their pipeline registers (a long, high-fanout path at 100 MHz on ECP5).
    """

    def __init__(self, side: int, *, acc_width: int = 48, act_width: int = 8,
                 wgt_width: int = 18, err_width: int = 24, fan_in_width: int = 14,
                 lr_div_max: int = 2**40, decay_max: int = 2**20, free_running: bool = False,
                 row_cycles: int = 1):
        self.side = side
        self.free_running = bool(free_running)
        bad_k = row_cycles < 1 or side % row_cycles
        if bad_k or (row_cycles > 1 and not self.free_running):
            self._MustUse__silence = True       # never built: no "unused" warning
            if bad_k:
                raise ValueError(f"row_cycles must divide the side {side}, got {row_cycles}")
            raise ValueError("row_cycles > 1 needs free_running lanes")
        #: cycles a FORWARD, LOSS or SGD row takes to enter its units (module doc)
        self.row_cycles = int(row_cycles)
        #: Scaler, NitroRelu and SgdUpdate units: ``side / row_cycles`` of each
        self.units = side // self.row_cycles
        self.acc_width, self.wgt_width, self.err_width = acc_width, wgt_width, err_width
        self.scalers = [Scaler(acc_width, fan_in_width=fan_in_width, out_width=act_width)
                        for _ in range(self.units)]
        self.relus = [NitroRelu(act_width, act_width) for _ in range(self.units)]
        # Two quotient bits per stage: the divisor (the slope, <= 31) is 5 bits wide, so a
        # stage is two chained 6-bit compare-and-subtracts, which fit 100 MHz (not 150), and
        # the 24-bit quotient shift register is kept in half as many stages.
        self.backwards = [NitroReluBackward(err_width, bits_per_stage=BACKWARD_BITS_PER_STAGE)
                          for _ in range(side)]
        self.sgds = [SgdUpdate(wgt_width, acc_width, lr_div_max=lr_div_max, decay_max=decay_max)
                     for _ in range(self.units)]
        self.value_width = max(err_width, wgt_width, act_width + 1)
        self.in_layout = data.StructLayout({
            "acc": data.ArrayLayout(signed(acc_width), side),
            "wgt": data.ArrayLayout(signed(wgt_width), side),
            "code": data.ArrayLayout(unsigned(CODE_WIDTH), side),
        })
        self.out_layout = data.StructLayout({
            "value": data.ArrayLayout(signed(self.value_width), side),
            "code": data.ArrayLayout(unsigned(CODE_WIDTH), side),
        })
        s0, g0 = self.scalers[0], self.sgds[0]
        # k > 1: the row register, k - 1 more chunks, the gathered-row register
        chunking = self.row_cycles + 1 if self.row_cycles > 1 else 0
        self.latency = {
            Op.FORWARD: s0.latency + self.relus[0].latency + chunking,
            Op.LOSS: s0.latency + chunking,
            Op.SCALE: s0.latency + chunking,
            Op.BACKWARD: 2 + self.backwards[0].latency,
            Op.SGD: g0.latency + chunking,
        }
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
            "op": In(3),
            "divisor": In(unsigned(s0.fan_in_width)),
            "inv_slope": In(unsigned(5)),
            "d_g": In(g0.d_g.shape()),
            "d_w": In(g0.d_w.shape()),
            "backerr": Out(1),
            "sgd_overflow": Out(1),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        S, U = self.side, self.units
        chunked = self.row_cycles > 1
        op = self.op
        # the op's decode is registered, a flag per op (module doc): ``op`` comes from the
        # Trainer's instruction register, away from the lanes, and its decode steers every
        # unit's valid, the gather and the range flags (the decode would sit between the
        # instruction register and every lane's flags); the output
        # multiplexer selects on a copy of the BACKWARD flag per lane (hw/replica.py)
        is_fwd, is_loss, is_bwd, is_sgd = (Signal(name=f"is_{n}")
                                           for n in ("fwd", "loss", "bwd", "sgd"))
        # SCALE (average pools) is LOSS's chain: the Scaler alone
        m.d.sync += [is_fwd.eq(op == Op.FORWARD), is_loss.eq((op == Op.LOSS) | (op == Op.SCALE)),
                     is_bwd.eq(op == Op.BACKWARD), is_sgd.eq(op == Op.SGD)]
        out_is_bwd = replicas(m, op == Op.BACKWARD, S, "out_is_bwd")
        for u in range(U):
            m.submodules[f"scaler{u}"] = self.scalers[u]
            m.submodules[f"relu{u}"] = self.relus[u]
            m.submodules[f"sgd{u}"] = self.sgds[u]
        for j in range(S):
            m.submodules[f"backward{j}"] = self.backwards[j]

        def all_of(signals):
            return Cat(*signals).all()

        sc_in_ready = all_of(s.i.ready for s in self.scalers)
        sc_out_valid = all_of(s.o.valid for s in self.scalers)
        re_in_ready = all_of(r.i.ready for r in self.relus)
        re_out_valid = all_of(r.o.valid for r in self.relus)
        bw_in_ready = all_of(b.i.ready for b in self.backwards)
        bw_out_valid = all_of(b.o.valid for b in self.backwards)
        sg_in_ready = all_of(g.i.ready for g in self.sgds)
        sg_out_valid = all_of(g.o.valid for g in self.sgds)

        # ---- input side: the item goes to the op's first unit -------------------------------
        in_ready = Signal()
        if chunked:
            free, unit_valid, unit_acc, unit_wgt = self._chunks(m, ~is_bwd)
            m.d.comb += in_ready.eq(is_bwd | free)
        else:
            unit_valid = self.i.valid
            unit_acc, unit_wgt = self.i.payload.acc, self.i.payload.wgt
            m.d.comb += in_ready.eq(Mux(is_fwd | is_loss, sc_in_ready,
                                        Mux(is_bwd, bw_in_ready, Mux(is_sgd, sg_in_ready, 0))))
        if self.free_running:
            sc_in_ready = re_in_ready = bw_in_ready = sg_in_ready = 1
            if not chunked:
                in_ready = 1
        m.d.comb += self.i.ready.eq(in_ready)
        take = self.i.valid & in_ready
        lo, hi = -(2 ** (self.err_width - 1)), 2 ** (self.err_width - 1) - 1
        # each lane's range check is registered and the OR over the lanes follows (so the
        # pulse comes one cycle after the take): the compares and the OR over S lanes in one
        # cycle, into the Trainer's sticky flag, would be one long path (the same compares
        # feed the BACKWARD saturation below).  The lanes' flags register every input and the
        # take is registered beside them, ANDed after the OR (not the take into every lane's
        # flag reset)
        above_now = [a > hi for a in self.i.payload.acc]
        below_now = [a < lo for a in self.i.payload.acc]
        lane_out_of_range = Signal(len(self.i.payload.acc))
        took_bwd = Signal()
        m.d.sync += [lane_out_of_range.eq(Cat(*(x | y for x, y in zip(above_now, below_now)))),
                     took_bwd.eq(take & is_bwd)]
        m.d.comb += self.backerr.eq(took_bwd & lane_out_of_range.any())

        # scaler -> relu handoff (FORWARD) or scaler -> output (LOSS)
        sc_out_ready = Mux(is_fwd, re_in_ready, is_loss & self.o.ready)
        o_ready = self.o.ready
        if self.free_running:
            sc_out_ready = o_ready = 1
        flags = SimpleNamespace(fwd=is_fwd, loss=is_loss, bwd=is_bwd, sgd=is_sgd)
        ready = SimpleNamespace(sc_in=sc_in_ready, sc_out_valid=sc_out_valid,
                                re_in=re_in_ready, re_out_valid=re_out_valid,
                                bw_in=bw_in_ready, bw_out_valid=bw_out_valid,
                                sg_in=sg_in_ready, sg_out_valid=sg_out_valid,
                                sc_out=sc_out_ready, o=o_ready)

        # ---- FORWARD, LOSS and SGD units (U of each) -------------------------------------------
        unit_out_valid, unit_value, unit_code = self._units(
            m, flags, unit_valid, unit_acc, unit_wgt, ready)
        if chunked:
            row_valid, row_value, row_code = self._gather(m, unit_out_valid, unit_value, unit_code)
        else:
            row_valid, row_value, row_code = unit_out_valid, unit_value, unit_code

        # ---- BACKWARD (S units) ----------------------------------------------------------------
        self._backward(m, flags, ready, above_now, below_now, lo, hi)

        # ---- output ----------------------------------------------------------------------------
        m.d.comb += self.o.valid.eq(Mux(is_bwd, bw_out_valid, row_valid))
        for j in range(S):
            m.d.comb += [
                self.o.payload.value[j].eq(Mux(out_is_bwd[j], self.backwards[j].o.payload,
                                               row_value[j])),
                self.o.payload.code[j].eq(row_code[j]),
            ]
        return m

    def _units(self, m, flags, unit_valid, unit_acc, unit_wgt, ready):
        """The U Scaler, NitroRelu and SgdUpdate units; returns their output's valid, values
        and codes (one per unit)."""
        U = self.units
        is_fwd, is_loss, is_sgd = flags.fwd, flags.loss, flags.sgd
        sc_in_ready, sc_out_valid = ready.sc_in, ready.sc_out_valid
        re_in_ready, re_out_valid = ready.re_in, ready.re_out_valid
        sg_in_ready, sg_out_valid = ready.sg_in, ready.sg_out_valid
        sc_out_ready, o_ready = ready.sc_out, ready.o
        unit_out_valid = Signal()
        m.d.comb += unit_out_valid.eq(Mux(is_fwd, re_out_valid, Mux(is_loss, sc_out_valid,
                                                                    is_sgd & sg_out_valid)))
        unit_value = [Signal(signed(self.value_width), name=f"unit_value{u}") for u in range(U)]
        unit_code = [Signal(CODE_WIDTH, name=f"unit_code{u}") for u in range(U)]
        for u in range(U):
            sc, re, sg = self.scalers[u], self.relus[u], self.sgds[u]
            m.d.comb += [
                sc.divisor.eq(self.divisor),
                re.inv_slope.eq(self.inv_slope),
                sg.d_g.eq(self.d_g),
                sg.d_w.eq(self.d_w),
                sg.clear.eq(self.clear),
                sc.i.valid.eq(unit_valid & (is_fwd | is_loss) & sc_in_ready),
                sc.i.payload.eq(unit_acc[u]),
                re.i.valid.eq(sc_out_valid & is_fwd & re_in_ready),
                re.i.payload.eq(sc.o.payload),
                sc.o.ready.eq(sc_out_ready if self.free_running else sc_out_ready & sc_out_valid),
                re.o.ready.eq(1 if self.free_running else is_fwd & o_ready & re_out_valid),
                sg.i.valid.eq(unit_valid & is_sgd & sg_in_ready),
                sg.i.payload.w.eq(unit_wgt[u]),
                sg.i.payload.g.eq(unit_acc[u]),
                sg.o.ready.eq(1 if self.free_running else is_sgd & o_ready & sg_out_valid),
            ]
            with m.If(is_fwd):
                m.d.comb += [unit_value[u].eq(re.o.payload.h),
                             unit_code[u].eq(re.o.payload.code)]
            with m.Elif(is_loss):
                m.d.comb += unit_value[u].eq(sc.o.payload)
            with m.Elif(is_sgd):
                m.d.comb += unit_value[u].eq(sg.o.payload)
        m.d.comb += self.sgd_overflow.eq(Cat(*(sg.overflow for sg in self.sgds)).any())
        return unit_out_valid, unit_value, unit_code

    def _backward(self, m, flags, ready, above_now, below_now, lo, hi):
        """The S NitroReluBackward units, behind BACKWARD's saturation."""
        S, is_bwd = self.side, flags.bwd
        bw_in_ready, bw_out_valid, o_ready = ready.bw_in, ready.bw_out_valid, ready.o
        # the saturation is registered in two steps before NitroReluBackward, whose first stage
        # is a carry chain of its own: the two wide compares (into flags, beside the low bits),
        # then the choice (the compares and the choice in one cycle would end in the
        # saturated register's reset); the registers advance with the unit
        cmp_valid, sat_valid = Signal(), Signal()
        with m.If(bw_in_ready):
            m.d.sync += [cmp_valid.eq(self.i.valid & is_bwd), sat_valid.eq(cmp_valid)]
        for j in range(S):
            bw = self.backwards[j]
            acc = self.i.payload.acc[j]
            above, below = Signal(name=f"above{j}"), Signal(name=f"below{j}")
            low_bits = Signal(signed(self.err_width), name=f"acc_low{j}")
            code_c = Signal(CODE_WIDTH, name=f"bw_code_c{j}")
            sat_q = Signal(signed(self.err_width), name=f"sat_q{j}")
            code_q = Signal(CODE_WIDTH, name=f"bw_code_q{j}")
            with m.If(bw_in_ready):
                m.d.sync += [above.eq(above_now[j]), below.eq(below_now[j]),
                             low_bits.eq(acc[:self.err_width]), code_c.eq(self.i.payload.code[j]),
                             sat_q.eq(Mux(above, hi, Mux(below, lo, low_bits))),
                             code_q.eq(code_c)]
            m.d.comb += [
                bw.inv_slope.eq(self.inv_slope),
                bw.i.valid.eq(sat_valid & bw_in_ready),
                bw.i.payload.d.eq(sat_q),
                bw.i.payload.code.eq(code_q),
                bw.o.ready.eq(1 if self.free_running else is_bwd & o_ready & bw_out_valid),
            ]

    def _chunks(self, m, accept):
        """The row register of chunked lanes: an accepted row (``i.valid & accept``, when
        free), shifted down by ``S / k`` values a cycle; the units read its head.  Returns
        (free, the units' valid, their ``acc`` and ``wgt`` inputs).

        The register has no enable: while free it loads the input every cycle (a row not
        accepted leaves ``chunk_valid`` low, so its values are never read), otherwise it
        shifts.  Each lane selects between the two on a copy of ``free`` of its own
        (hw/replica.py), so neither the op nor the input's valid reaches its flip-flops."""
        S, k, U = self.side, self.row_cycles, self.units
        chunk_acc = Signal(data.ArrayLayout(signed(self.acc_width), S), reset_less=True)
        chunk_wgt = Signal(data.ArrayLayout(signed(self.wgt_width), S), reset_less=True)
        chunk_valid = Signal()
        chunks_left = Signal(range(k))
        free = Signal()
        load = Signal()
        # chunk_valid == 0 implies chunks_left == 0: a row loads both, and chunk_valid falls
        # only once chunks_left has counted down
        m.d.comb += [free.eq(chunks_left == 0), load.eq(self.i.valid & accept & free)]
        with m.If(load):
            m.d.sync += [chunk_valid.eq(1), chunks_left.eq(k - 1)]
        with m.Elif(~free):
            m.d.sync += chunks_left.eq(chunks_left - 1)
        with m.Else():
            m.d.sync += chunk_valid.eq(0)
        # free in the next cycle: nothing loaded now, and at most one chunk was left
        free_next = ~load & (chunks_left <= 1)
        lane_free = replicas(m, free_next, S - U, "chunk_free", init=1)
        for j in range(S - U):
            with m.If(lane_free[j]):
                m.d.sync += [chunk_acc[j].eq(self.i.payload.acc[j]),
                             chunk_wgt[j].eq(self.i.payload.wgt[j])]
            with m.Else():
                m.d.sync += [chunk_acc[j].eq(chunk_acc[j + U]), chunk_wgt[j].eq(chunk_wgt[j + U])]
        # the last S / k lanes load every cycle: the first shift moves their row's values
        # down, and what they take after it is k - 1 shifts from the units' lanes when the
        # next row loads
        for j in range(S - U, S):
            m.d.sync += [chunk_acc[j].eq(self.i.payload.acc[j]),
                         chunk_wgt[j].eq(self.i.payload.wgt[j])]
        return (free, chunk_valid, [chunk_acc[u] for u in range(U)],
                [chunk_wgt[u] for u in range(U)])

    def _gather(self, m, chunk_out, values, codes):
        """The units' results, k chunks on consecutive cycles, shifted into one row.  Returns
        (the row's valid, its values, its codes), registers."""
        S, k, U = self.side, self.row_cycles, self.units
        row_value = Signal(data.ArrayLayout(signed(self.value_width), S), reset_less=True)
        row_code = Signal(data.ArrayLayout(unsigned(CODE_WIDTH), S), reset_less=True)
        gathered = Signal(range(k))
        row_valid = Signal()
        with m.If(chunk_out):
            for j in range(S - U):
                m.d.sync += [row_value[j].eq(row_value[j + U]), row_code[j].eq(row_code[j + U])]
            for u in range(U):
                m.d.sync += [row_value[S - U + u].eq(values[u]), row_code[S - U + u].eq(codes[u])]
            m.d.sync += gathered.eq(Mux(gathered == k - 1, 0, gathered + 1))
        m.d.sync += row_valid.eq(chunk_out & (gathered == k - 1))
        return row_valid, [row_value[j] for j in range(S)], [row_code[j] for j in range(S)]
