"""The Trainer's sequencer: fetches each instruction, checks it, hands its product to the
engine and waits until the writer has written the instruction's last row.

States: IDLE -> (START) FETCH -> LOAD -> LOAD2 -> DECODE -> ISSUE -> RUN -> FETCH ...;
DECODE returns to IDLE on ``END`` (``done``) or on an instruction the Trainer cannot run
exactly (``done`` and ``op_error``): an unknown op (the CNN ops POOL, POOL_CODE and SCALE
included), a non-zero field of ``hw.contract.CNN_FIELDS`` (issue 31's spatial levels), an
empty product, a ``pc`` beyond PROG, a FORWARD or LOSS ``divisor`` of 0 or above
``divisor_max``, an SGD ``d_g`` of 0 or wider than ``d_g_width``, a ``d_w`` wider than
``d_w_width``.  Nothing is written then.  The divisor and CNN field checks are registered in
LOAD2, beside the instruction.  PROG is read through its memory's registered port: the address
register holds ``pc`` in FETCH (it loads ``pc_next``), the block reads in FETCH, its word is
registered in LOAD and once more in LOAD2, and DECODE takes it into ``cur``.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.contract import ADDRESS_WIDTH, Op
from hw.trainers.core import instruction_layout, uses_cnn_fields

__all__ = ["Sequencer"]


class Sequencer(wiring.Component):
    """Parameters: ``prog`` -- the PROG memory (a ``BankedMemory``: its word is registered
    here); ``geometry`` -- PROG's depth (a ``pc`` beyond it is an op error) and the divisors'
    limits.

    Ports
    -----
    start, prog_start : In -- the host's START and PROG_START
    engine_ready : In(1) -- the engine takes the instruction (its ``instr.ready``)
    instr_done : In(1) -- the writer wrote the instruction's last row (and column)
    cur : Out(instruction_layout()) -- the instruction being run
    busy, busy_next : Out(1) -- running, and its value in the next cycle
    issue : Out(1) -- ISSUE: the instruction is offered to the engine (the walkers reset)
    run, run_next : Out(1) -- RUN (a flip-flop of its own), and its next value
    pc_next : Out(ADDRESS_WIDTH) -- the PROG address register's next value
    prog_read : Out(1) -- the PROG block reads (FETCH)
    cycles, retired, done, op_error : Out -- the registers (``op_error`` is cleared by
        ``clear``)
    """

    def __init__(self, prog, geometry):
        self._prog = prog
        self.geometry = geometry
        super().__init__({
            "start": In(1), "prog_start": In(ADDRESS_WIDTH), "clear": In(1),
            "engine_ready": In(1), "instr_done": In(1),
            "cur": Out(instruction_layout()),
            "busy": Out(1), "busy_next": Out(1), "issue": Out(1),
            "run": Out(1), "run_next": Out(1),
            "pc_next": Out(ADDRESS_WIDTH), "prog_read": Out(1),
            "cycles": Out(32), "retired": Out(16), "done": Out(1), "op_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cur = self.cur
        pc = Signal(ADDRESS_WIDTH)
        loading = Signal()                                  # LOAD state
        fetched_raw = self._prog.registered(m, loading, "fetched_raw")     # PROG[pc]
        fetched = Signal(instruction_layout())              # ... registered once more
        exact = Signal()              # its divisors can be divided by, no CNN field is used
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        # busy's and pc's next values: copies of busy (hw/replica.py) drive the memories'
        # port multiplexers, one per region, and PROG's address register loads pc_next, so
        # that it holds pc in FETCH
        m.d.comb += [self.busy_next.eq(self.busy), self.pc_next.eq(pc)]
        m.d.sync += [self.busy.eq(self.busy_next), pc.eq(self.pc_next)]
        # run: set as ISSUE hands the instruction to the engine, cleared as RUN ends
        m.d.comb += self.run_next.eq((self.issue & self.engine_ready)
                                     | (self.run & ~self.instr_done))
        m.d.sync += self.run.eq(self.run_next)
        with m.FSM(name="seq"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += [self.busy_next.eq(1), self.pc_next.eq(self.prog_start)]
                    m.d.sync += [self.cycles.eq(0), self.retired.eq(0), self.done.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += self.prog_read.eq(1)
                m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += loading.eq(1)
                m.next = "LOAD2"
            with m.State("LOAD2"):
                raw = data.View(instruction_layout(), fetched_raw)
                m.d.sync += [fetched.eq(fetched_raw),
                             exact.eq(self._divisors_ok(raw) & ~uses_cnn_fields(raw))]
                m.next = "DECODE"
            with m.State("DECODE"):
                m.d.sync += cur.eq(fetched)
                valid_op = ((fetched.op == Op.FORWARD) | (fetched.op == Op.LOSS) |
                            (fetched.op == Op.BACKWARD) | (fetched.op == Op.SGD))
                nonempty = ((fetched.k_len != 0) & (fetched.tiles_r != 0) &
                            (fetched.tiles_c != 0))
                with m.If(fetched.op == Op.END):
                    m.d.comb += self.busy_next.eq(0)
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
                with m.Elif(valid_op & nonempty & exact & (pc < self.geometry.prog_depth)):
                    m.next = "ISSUE"
                with m.Else():
                    m.d.comb += self.busy_next.eq(0)
                    m.d.sync += [self.done.eq(1), self.op_error.eq(1)]
                    m.next = "IDLE"
            with m.State("ISSUE"):
                m.d.comb += self.issue.eq(1)
                with m.If(self.engine_ready):
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(self.instr_done):
                    m.d.comb += self.pc_next.eq(pc + 1)
                    m.d.sync += self.retired.eq(self.retired + 1)
                    m.next = "FETCH"
        with m.If(self.clear):
            m.d.sync += self.op_error.eq(0)
        return m

    def _divisors_ok(self, ins):
        """The instruction's divisors are ones the units divide by exactly."""
        g = self.geometry
        scales = (ins.op == Op.FORWARD) | (ins.op == Op.LOSS)
        divisor_ok = (ins.divisor != 0) & (ins.divisor <= g.divisor_max)
        sgd_ok = (ins.d_g != 0) & (ins.d_g[g.d_g_width:] == 0) & (ins.d_w[g.d_w_width:] == 0)
        return (~scales | divisor_ok) & ((ins.op != Op.SGD) | sgd_ok)
