"""The Trainer's sequencer: fetches each instruction, checks it, hands it to the engine (a
product) or to the pool unit (POOL, POOL_CODE) and waits until the instruction's last write.

States: IDLE -> (START) FETCH -> LOAD -> LOAD2 -> DECODE -> [PREP] -> ISSUE -> RUN -> FETCH
...; DECODE returns to IDLE on ``END`` (``done``) or on an instruction the Trainer cannot run
exactly (``done`` and ``op_error``): an empty product (``k_len``, ``tiles_r`` or ``tiles_c``
0), a ``pc`` beyond PROG, a FORWARD, LOSS or SCALE ``divisor`` of 0 or above ``divisor_max``,
an SGD ``d_g`` of 0 or wider than ``d_g_width``, a ``d_w`` wider than ``d_w_width``, a pool
with ``col_en``.  Nothing is written then.  The divisor checks are registered in LOAD2, beside
the instruction.  PROG is read through its memory's registered port: the address register
holds ``pc`` in FETCH (it loads ``pc_next``), the block reads in FETCH, its word is registered
in LOAD and once more in LOAD2, and DECODE takes it into ``cur``.

The spatial levels' tile steps (hw/contract/isa.py): a ``ty`` step moves A by ``w_y *
y_stride`` (``w_y = max(1, y_beats)`` with ``windows``, else 1), or, with ``tile_b``, B by
``y_stride``; likewise ``tx``.  The sequencer hands the engine and the pool unit these steps
as registers (``a_y_tile``, ``a_x_tile``, ``b_y_tile``, ``b_x_tile``): DECODE sets them, and
with ``windows`` (and not ``tile_b``) PREP multiplies, by shifts and adds over 8 cycles (one
a bit of the 8-bit ``y_beats`` and ``x_beats``).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.contract import ADDRESS_WIDTH, LEVEL_COUNT_WIDTH, Op
from hw.trainers.core import instruction_layout

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
    pool : Out(1) -- ``cur`` is a POOL or POOL_CODE (a register, set in DECODE)
    a_y_tile, a_x_tile, b_y_tile, b_x_tile : Out(ADDRESS_WIDTH) -- the tile steps (module doc)
    busy, busy_next : Out(1) -- running, and its value in the next cycle
    issue : Out(1) -- ISSUE: the instruction is offered to the engine or the pool unit (the
        walkers reset); ``engine_ready`` is 1 then (the engine is idle)
    issue_engine, issue_pool : Out(1) -- ISSUE of a product, of a pool
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
            "cur": Out(instruction_layout()), "pool": Out(1),
            **{f"{s}_{d}_tile": Out(ADDRESS_WIDTH) for s in "ab" for d in "yx"},
            "busy": Out(1), "busy_next": Out(1), "issue": Out(1),
            "issue_engine": Out(1), "issue_pool": Out(1),
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
        exact = Signal()              # its divisors can be divided by, no pool has col_en
        # PREP: the multipliers of y_stride and x_stride (shifted out from the top bit)
        prep_y, prep_x = (Signal(LEVEL_COUNT_WIDTH, name=f"prep_{d}") for d in "yx")
        prep_n = Signal(range(LEVEL_COUNT_WIDTH))
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
                pool = (raw.op == Op.POOL) | (raw.op == Op.POOL_CODE)
                m.d.sync += [fetched.eq(fetched_raw),
                             exact.eq(self._divisors_ok(raw) & ~(pool & raw.col_en))]
                m.next = "DECODE"
            with m.State("DECODE"):
                f = fetched
                m.d.sync += [cur.eq(f), self.pool.eq((f.op == Op.POOL) | (f.op == Op.POOL_CODE))]
                nonempty = (f.k_len != 0) & (f.tiles_r != 0) & (f.tiles_c != 0)
                # the tile steps: B by the stride with tile_b, else A by it (by w_d times it
                # with windows: PREP)
                prep = f.windows & ~f.tile_b
                m.d.sync += [self.a_y_tile.eq(Mux(f.tile_b | prep, 0, f.y_stride)),
                             self.a_x_tile.eq(Mux(f.tile_b | prep, 0, f.x_stride)),
                             self.b_y_tile.eq(Mux(f.tile_b, f.y_stride, 0)),
                             self.b_x_tile.eq(Mux(f.tile_b, f.x_stride, 0)),
                             prep_y.eq(Mux(f.y_beats == 0, 1, f.y_beats)),
                             prep_x.eq(Mux(f.x_beats == 0, 1, f.x_beats)), prep_n.eq(0)]
                with m.If(f.op == Op.END):
                    m.d.comb += self.busy_next.eq(0)
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
                with m.Elif(nonempty & exact & (pc < self.geometry.prog_depth)):
                    with m.If(prep):
                        m.next = "PREP"
                    with m.Else():
                        m.next = "ISSUE"
                with m.Else():
                    m.d.comb += self.busy_next.eq(0)
                    m.d.sync += [self.done.eq(1), self.op_error.eq(1)]
                    m.next = "IDLE"
            with m.State("PREP"):
                # a_d_tile = w_d * d_stride, the multiplier's bits from the top
                top = LEVEL_COUNT_WIDTH - 1
                m.d.sync += [
                    self.a_y_tile.eq((self.a_y_tile << 1) + Mux(prep_y[top], cur.y_stride, 0)),
                    self.a_x_tile.eq((self.a_x_tile << 1) + Mux(prep_x[top], cur.x_stride, 0)),
                    prep_y.eq(prep_y << 1), prep_x.eq(prep_x << 1), prep_n.eq(prep_n + 1)]
                with m.If(prep_n == LEVEL_COUNT_WIDTH - 1):
                    m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += [self.issue.eq(1), self.issue_engine.eq(~self.pool),
                             self.issue_pool.eq(self.pool)]
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
        scales = (ins.op == Op.FORWARD) | (ins.op == Op.LOSS) | (ins.op == Op.SCALE)
        divisor_ok = (ins.divisor != 0) & (ins.divisor <= g.divisor_max)
        sgd_ok = (ins.d_g != 0) & (ins.d_g[g.d_g_width:] == 0) & (ins.d_w[g.d_w_width:] == 0)
        return (~scales | divisor_ok) & ((ins.op != Op.SGD) | sgd_ok)
