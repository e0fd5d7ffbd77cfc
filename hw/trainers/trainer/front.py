"""The front: takes the engine's result rows, reads each row's aux word, hands both to the
post-processing lanes.

Credit flow control: the lanes never stall (their output goes into a FIFO that always has
room), so no ready signal runs back through them.  ``credits`` counts the FIFO words neither
holding a row nor promised to a row inside the lanes; a row leaves the engine only against a
credit, and the writer returns one with each row it takes (``returned``).  FORWARD, LOSS and
SGD rows leave the engine at most one every ``row_spacing`` cycles: the lanes hand each to
their units in that many chunks (hw/array/post_lanes.py).

Stages: F0 takes the row and loads its aux word's address (CODE for BACKWARD, the old weights'
WGT word for SGD) into the memory's address register; F1 reads the aux word (the block's read
enable, a register beside each bank, is ``valid1``); F2 registers it out of the block RAM
(its own output register on the ECP5); F3 and F4 select the bank in two steps into
registers; the row travels beside it (F1 to F4) and F5 hands both to the lanes.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.contract import ADDRESS_WIDTH, Op, Region
from hw.replica import replica
from hw.trainers.core import instruction_layout

from .row_walk import RowWalk

__all__ = ["Front"]


class Front(wiring.Component):
    """Parameters: ``memories`` -- ``{Region: BankedMemory}`` (WGT, CODE: the aux words are
    registered here); ``engine`` and ``lanes`` -- their layouts; ``fifo_depth``,
    ``row_spacing``, ``bank_group``.

    Ports
    -----
    results : In(stream) -- the engine's result rows (``ready`` is a flip-flop of its own)
    cur : In(instruction_layout()) -- the instruction
    issue, run_next : In(1) -- the sequencer's ISSUE, and RUN's next value
    returned : In(1) -- the writer took a row from the FIFO: a credit comes back
    rows : Out(stream) -- rows with their aux words, to the lanes (they are always ready)
    take : Out(1) -- a row is taken from the engine (F0)
    valid1 : Out(1) -- F1 holds a row (its aux word is read)
    aux_addr : Out(ADDRESS_WIDTH) -- the taken row's aux word address
    mac_overflow : Out(1) -- the taken row's tile overflowed the accumulators
    """

    def __init__(self, memories: dict, engine, lanes, *, side: int, fifo_depth: int,
                 row_spacing: int, bank_group: int):
        self._mems = memories
        self.side, self.fifo_depth = side, fifo_depth
        self.row_spacing, self.bank_group = row_spacing, bank_group
        self._acc = engine.result_layout.members["row"]
        super().__init__({
            "results": In(stream.Signature(engine.result_layout)),
            "cur": In(instruction_layout()),
            "issue": In(1), "run_next": In(1), "returned": In(1),
            "rows": Out(stream.Signature(lanes.in_layout)),
            "take": Out(1), "valid1": Out(1), "aux_addr": Out(ADDRESS_WIDTH),
            "mac_overflow": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cur, res, take = self.cur, self.results, self.take
        op = cur.op
        # the engine's ready is a flip-flop of its own (run, a credit and the spacing, from
        # their next values): it drives the MAC array's result FIFO, so no logic may sit in
        # front of that net
        front_ready = Signal()
        m.d.sync += front_ready.eq(self.run_next & self._has_credit_next(m)
                                   & self._spaced_next(m))
        m.d.comb += [res.ready.eq(front_ready), take.eq(res.valid & res.ready)]
        # the aux address (CODE or WGT word of the row taken) is a register of the walker;
        # the memory's address register loads it as the row is taken.  It is 0 for the ops
        # that read no aux word (the pool unit's CODE reads are ORed into CODE's address)
        walk = RowWalk(m, "front", self.side, cur, self.issue, take,
                       base=Mux(op == Op.SGD, cur.row_base,
                                Mux(op == Op.BACKWARD, cur.aux_base, 0)))
        m.d.comb += [self.aux_addr.eq(walk.addr), self.mac_overflow.eq(take & res.payload.overflow)]
        self._rows(m)
        return m

    def _has_credit_next(self, m):
        """A credit in the next cycle: decoded from flags of the credits register (no adder
        between the take and ``front_ready``: ``credits - take + returned != 0`` would put a
        carry chain behind the take)."""
        take, returned = self.take, self.returned
        credits = Signal(range(self.fifo_depth + 1), init=self.fifo_depth)
        with m.If(self.issue):
            m.d.sync += credits.eq(self.fifo_depth)
        with m.Elif(take & ~returned):
            m.d.sync += credits.eq(credits - 1)
        with m.Elif(returned & ~take):
            m.d.sync += credits.eq(credits + 1)
        credits_any, credits_many = credits != 0, credits > 1
        return self.issue | Mux(take == returned, credits_any, Mux(returned, 1, credits_many))

    def _spaced_next(self, m):
        """``row_spacing`` cycles since the last FORWARD, LOSS or SGD row, in the next cycle."""
        spaced = Signal(init=1)         # row_wait == 0, registered
        spaced_next = Signal()
        m.d.comb += spaced_next.eq(spaced)
        m.d.sync += spaced.eq(spaced_next)
        k = self.row_spacing
        if k > 1:
            row_wait = Signal(range(k))
            with m.If(self.take & (self.cur.op != Op.BACKWARD)):
                m.d.sync += row_wait.eq(k - 1)
                m.d.comb += spaced_next.eq(0)
            with m.Elif(row_wait != 0):
                m.d.sync += row_wait.eq(row_wait - 1)
                m.d.comb += spaced_next.eq(row_wait == 1)
        return spaced_next

    def _rows(self, m):
        """F1 to F5: the row beside its aux word's read."""
        mems, S = self._mems, self.side
        valid1, valid2, valid3, valid4, valid5 = (Signal(name=f"valid{n}") for n in range(1, 6))
        m.d.comb += self.valid1.eq(valid1)
        # data registers have no reset (the valid flags say what they hold): fewer loads on
        # the reset net
        row1 = Signal(self._acc, reset_less=True)
        row2, row3, row4, row5 = (Signal.like(row1, name=f"row{n}") for n in range(2, 6))
        wgt5 = Signal(mems[Region.WGT].shape, reset_less=True)
        code5 = Signal(mems[Region.CODE].shape, reset_less=True)
        m.d.sync += [valid1.eq(self.take), row1.eq(self.results.payload.row),
                     valid2.eq(valid1), valid3.eq(valid2), valid4.eq(valid3), valid5.eq(valid4)]
        # F1 to F4's registers load on copies of valid1 to valid4 (hw/replica.py), one per
        # bank and row register (far apart); the bank select's group registers on its en_q
        with m.If(replica(m, self.take, "row2_en")):
            m.d.sync += row2.eq(row1)
        with m.If(replica(m, valid1, "row3_en")):
            m.d.sync += row3.eq(row2)
        with m.If(replica(m, valid2, "row4_en")):
            m.d.sync += row4.eq(row3)
        # the shared bank registers, selected in F3 (groups) and F4
        wgt4 = mems[Region.WGT].registered(m, valid2, "wgt4", group=self.bank_group)
        code4 = mems[Region.CODE].registered(m, valid2, "code4", group=self.bank_group)
        for reg, src, name in ((row5, row4, "row5"), (wgt5, wgt4, "wgt5"),
                               (code5, code4, "code5")):
            with m.If(replica(m, valid3, f"{name}_en")):
                m.d.sync += reg.eq(src)
        out = self.rows.payload
        m.d.comb += [self.rows.valid.eq(valid5), out.acc.eq(row5)]
        for j in range(S):
            m.d.comb += [out.wgt[j].eq(wgt5[j]), out.code[j].eq(code5[j])]
