"""The writer: takes the lanes' rows from the FIFO and writes them (and, with ``col_en``,
each tile transposed), with the LOSS target and the padding masks.

Four stages: W0 takes a row, steps the walker and reads LABEL[m]; W0R registers the row while
the label is registered out of the block RAM; W1 adds the bases and compares the masks and,
from the label's register, which lane is the label's class (and whether the row is padding);
W2 applies the LOSS target and the masks from those flags, and writes.  A row that completes
a tile to be transposed holds further takes until the transposer has emitted the tile's S
columns, one a cycle.  The writes leave through registers (``act``, ``wgt``, ``err``,
``code``): the row values, masks and the transposer's column select end at a flip-flop, and
the block RAMs' write ports see only that register and the host/datapath multiplexer (ACT's
and CODE's registers hold 0 between writes: the pool unit's writes are ORed into them).
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hw.contract import ADDRESS_WIDTH, CODE_WIDTH, ONE_HOT_VALUE, PAD_LABEL, Op, Region, ReluCode
from hw.replica import replicas
from hw.trainers.core import instruction_layout

from .row_walk import RowWalk

__all__ = ["Writer", "memory_write_signature"]


def memory_write_signature(shape, addr_width: int = ADDRESS_WIDTH) -> wiring.Signature:
    """A write to a memory: ``data`` at ``addr`` when ``en``."""
    return wiring.Signature({"addr": Out(addr_width), "data": Out(shape), "en": Out(1)})


class Writer(wiring.Component):
    """Parameters: ``memories`` -- ``{Region: BankedMemory}`` (LABEL is read here; the
    others give their word shapes); ``lanes`` -- the lanes' layouts; ``side``.

    Ports
    -----
    rows : In(stream) -- the lanes' rows, from the FIFO
    cur : In(instruction_layout()) -- the instruction
    issue, run, busy : In(1) -- the sequencer's state
    take : Out(1) -- a row is taken (a credit goes back to the front)
    instr_done : Out(1) -- the instruction's last row (and column) is written
    label_addr : Out(ADDRESS_WIDTH) -- LABEL's address register's next value
    act, wgt, err, code : Out(memory_write_signature) -- the writes of each memory
    """

    def __init__(self, memories: dict, lanes, *, side: int):
        self._mems = memories
        self.side = side
        self._lanes = lanes
        self._shapes = {r: memories[r].shape
                        for r in (Region.ACT, Region.WGT, Region.ERR, Region.CODE)}
        super().__init__({
            "rows": In(stream.Signature(lanes.out_layout)),
            "cur": In(instruction_layout()),
            "issue": In(1), "run": In(1), "busy": In(1),
            "take": Out(1), "instr_done": Out(1), "label_addr": Out(ADDRESS_WIDTH),
            **{r.name.lower(): Out(memory_write_signature(shape))
               for r, shape in self._shapes.items()},
        })

    def elaborate(self, platform):
        m = Module()
        S, cur = self.side, self.cur
        hold = Signal()
        m.d.comb += [self.rows.ready.eq(~hold & self.run),
                     self.take.eq(self.rows.valid & self.rows.ready)]
        walk = RowWalk(m, "writer", S, cur, self.issue, self.take)
        m.d.comb += self.label_addr.eq(walk.m_next)
        with m.If(self.take & walk.at_i_last & cur.col_en):
            m.d.sync += hold.eq(1)
        w2 = self._w0_to_w2(m, walk)
        values, codes = self._masked(m, w2)
        column, emitting, emit_addr = self._transposer(m, w2, values, hold)
        self._writes(m, w2, values, codes, column, emitting, emit_addr)
        return m

    def _w0_to_w2(self, m, walk):
        """W0R, W1 and W2's registers; returns W2's."""
        S, cur, op, lanes = self.side, self.cur, self.cur.op, self._lanes

        def row_regs(name):
            return (Signal(name=f"{name}_valid"),
                    Signal(lanes.out_layout, name=name, reset_less=True),
                    Signal.like(walk.i, name=f"{name}_i"), Signal(name=f"{name}_ilast"),
                    Signal(name=f"{name}_final"),
                    *(Signal(16, name=f"{name}_{n}") for n in ("off", "m", "tc_cls",
                                                              "col_tr_off")))

        w0r = row_regs("w0r")
        w1_regs = row_regs("w1")
        w1_valid, w1, w1_i, w1_ilast, w1_final, w1_off, w1_m, w1_tc_cls, w1_col_tr_off = w1_regs
        # W0R's data registers load in every cycle (W1 reads them only after a take, as
        # w0r_valid says): the take drives the FIFO, the walker and w0r_valid, not these
        m.d.sync += w0r[0].eq(self.take)
        m.d.sync += [reg.eq(src) for reg, src in zip(w0r[1:], (
            self.rows.payload, walk.i, walk.at_i_last, walk.final, walk.off, walk.m,
            walk.tc_cls, walk.col_tr_off))]
        m.d.sync += w1_valid.eq(w0r[0])
        w1_label = self._mems[Region.LABEL].registered(m, w0r[0], "w1_label")
        # each lane's class (tc_cls + j), added as W1 loads: W2 then only compares it with the
        # label and the column length (an adder and a compare in one cycle were too long a
        # path on the board builds)
        w1_cls = [Signal(17, name=f"w1_cls{j}") for j in range(S)]
        with m.If(w0r[0]):
            m.d.sync += [reg.eq(src) for reg, src in zip(w1_regs[1:], w0r[1:])]
            m.d.sync += [w1_cls[j].eq(w0r[7] + j) for j in range(S)]
        vw = lanes.value_width
        w2 = _W2(S, vw, walk)
        m.d.sync += w2.valid.eq(w1_valid)
        with m.If(w1_valid):
            m.d.sync += [
                w2.i.eq(w1_i), w2.ilast.eq(w1_ilast), w2.final.eq(w1_final),
                w2.padded.eq((op == Op.LOSS) & (w1_label == PAD_LABEL)),
                w2.row_in.eq(w1_m < cur.row_len),
                w2.row_addr.eq(cur.row_base + w1_off),
                w2.code_addr.eq(cur.aux_base + w1_off),
                w2.col_addr.eq(cur.col_base + w1_col_tr_off + w1_tc_cls),
            ]
            for j in range(S):
                m.d.sync += [
                    w2.value[j].eq(w1.value[j]),
                    w2.target[j].eq(w1.value[j] - ONE_HOT_VALUE),
                    w2.code[j].eq(w1.code[j]),
                    w2.lane_in[j].eq(w1_cls[j] < cur.col_len),
                    w2.hit[j].eq(w1_cls[j] == w1_label),
                ]
        return w2

    def _masked(self, m, w2):
        """W2's values and codes with the LOSS target and the padding masks."""
        S, op, vw = self.side, self.cur.op, self._lanes.value_width
        values = [Signal(signed(vw), name=f"wb_value{j}") for j in range(S)]
        codes = [Signal(CODE_WIDTH, name=f"wb_code{j}") for j in range(S)]
        row_on = Signal()
        m.d.comb += row_on.eq(w2.row_in & ~w2.padded)
        for j in range(S):
            lane_on = row_on & w2.lane_in[j]
            with m.If(~lane_on):
                m.d.comb += [values[j].eq(0), codes[j].eq(ReluCode.ZERO)]
            with m.Elif(op == Op.LOSS):
                m.d.comb += values[j].eq(Mux(w2.hit[j], w2.target[j], w2.value[j]))
            with m.Else():
                m.d.comb += [values[j].eq(w2.value[j]), codes[j].eq(w2.code[j])]
        return values, codes

    def _transposer(self, m, w2, values, hold):
        """The tile buffer: each row goes into row ``i``; after the tile's last row (with
        ``col_en``) its S columns shift out, one a cycle.  Returns the column, ``emitting``
        and the column's address."""
        S = self.side
        tw = max(self._shapes[Region.ACT].elem_shape.width,
                 self._shapes[Region.WGT].elem_shape.width)
        tbuf = [[Signal(signed(tw), name=f"tbuf{i}_{c}", reset_less=True) for c in range(S)]
                for i in range(S)]
        emitting = Signal()
        emit_c = Signal(max(1, ceil_log2(S)))
        emit_addr = Signal(16)
        emit_final = Signal()
        # each row of the buffer shifts on a copy of `emitting` of its own
        emit_start, emit_end, emitting_next = Signal(), Signal(), Signal()
        m.d.comb += [emit_start.eq(w2.valid & w2.ilast & self.cur.col_en),
                     emit_end.eq(emit_c == S - 1),
                     emitting_next.eq(Mux(emitting, ~emit_end, emit_start))]
        m.d.sync += emitting.eq(emitting_next)
        emitting_row = replicas(m, emitting_next, S, "emitting_row")
        with m.If(w2.valid):
            for i in range(S):
                with m.If(w2.i == i):
                    m.d.sync += [tbuf[i][c].eq(values[c]) for c in range(S)]
            with m.If(emit_start):
                m.d.sync += [emit_c.eq(0), emit_final.eq(w2.final), emit_addr.eq(w2.col_addr)]
            with m.Elif(w2.final):
                m.d.comb += self.instr_done.eq(1)
        for i in range(S):
            with m.If(emitting_row[i]):
                m.d.sync += [tbuf[i][c].eq(tbuf[i][c + 1]) for c in range(S - 1)]
        with m.If(emitting):
            m.d.sync += [emit_c.eq(emit_c + 1), emit_addr.eq(emit_addr + 1)]
            with m.If(emit_end):
                m.d.sync += hold.eq(0)
                with m.If(emit_final):
                    m.d.comb += self.instr_done.eq(1)
        return [tbuf[i][0] for i in range(S)], emitting, emit_addr

    def _writes(self, m, w2, values, codes, column, emitting, emit_addr):
        """The writes, registered: FORWARD rows (h) to ACT and codes to CODE, SCALE rows to ACT,
        FORWARD, LOSS and SCALE columns to ACT, SGD rows and columns to WGT, LOSS and BACKWARD
        rows to ERR."""
        op = self.cur.op
        ports = {r: getattr(self, r.name.lower()) for r in self._shapes}
        m.d.sync += [port.en.eq(0) for port in ports.values()]
        # ACT's and CODE's address and data are 0 but in a write: the Trainer ORs the pool
        # unit's writes (0 then too) into them
        for r in (Region.ACT, Region.CODE):
            m.d.sync += [ports[r].addr.eq(0), ports[r].data.eq(0)]

        def lanes_word(r, vals):
            return Cat(*(v.as_signed()[:self._shapes[r].elem_shape.width] for v in vals))

        def write(r, addr, word):
            m.d.sync += [ports[r].addr.eq(addr), ports[r].data.eq(word), ports[r].en.eq(1)]

        # which writes the op makes, decoded into registers (the op is set in DECODE, many
        # cycles before the instruction's first row)
        act_rows, act_cols = Signal(), Signal()
        m.d.sync += [act_rows.eq((op == Op.FORWARD) | (op == Op.SCALE)),
                     act_cols.eq((op == Op.FORWARD) | (op == Op.LOSS) | (op == Op.SCALE))]
        with m.If(self.busy):
            with m.If(w2.valid & act_rows):
                write(Region.ACT, w2.row_addr, lanes_word(Region.ACT, values))
            with m.Elif(emitting & act_cols):
                write(Region.ACT, emit_addr, lanes_word(Region.ACT, column))
            with m.If(w2.valid & (op == Op.SGD)):
                write(Region.WGT, w2.row_addr, lanes_word(Region.WGT, values))
            with m.Elif(emitting & (op == Op.SGD)):
                write(Region.WGT, emit_addr, lanes_word(Region.WGT, column))
            with m.If(w2.valid & ((op == Op.LOSS) | (op == Op.BACKWARD))):
                write(Region.ERR, w2.row_addr, lanes_word(Region.ERR, values))
            with m.If(w2.valid & (op == Op.FORWARD)):
                write(Region.CODE, w2.code_addr, Cat(*codes))


class _W2:
    """W2's registers: a row with its addresses and the flags W1 decided."""

    def __init__(self, side, value_width, walk):
        self.valid, self.ilast, self.final, self.row_in = (
            Signal(name=f"w2_{n}") for n in ("valid", "ilast", "final", "row_in"))
        self.i = Signal.like(walk.i, name="w2_i")
        self.padded = Signal(name="w2_padded")  # LOSS on a padding row (label PAD_LABEL)
        self.row_addr, self.code_addr, self.col_addr = (Signal(16, name=f"w2_{n}") for n in
                                                        ("row_addr", "code_addr", "col_addr"))
        self.value = [Signal(signed(value_width), name=f"w2_value{j}", reset_less=True)
                      for j in range(side)]
        self.target = [Signal(signed(value_width), name=f"w2_target{j}", reset_less=True)
                       for j in range(side)]                     # value - ONE_HOT_VALUE
        self.code = [Signal(CODE_WIDTH, name=f"w2_code{j}") for j in range(side)]
        self.lane_in = [Signal(name=f"w2_lane_in{j}") for j in range(side)]
        self.hit = [Signal(name=f"w2_hit{j}") for j in range(side)]  # the label's class
