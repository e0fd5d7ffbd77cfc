"""The pool unit: POOL and POOL_CODE (hw/contract/isa.py), without the MAC array.

An instruction's tiles run in the contract's order (``ty, uy, tx, ux, tr, tc``); tile row
``i`` is the lane-wise maximum of the words ``ACT[A + i]`` over the beats (``ky, kx, k``),
``A`` the A word address of the beat (a tile's rows are S consecutive words), written to
``ACT[row_base + off]``.  Per tile, the unit reads row after row, each row's beats one a
cycle: pass 1.  With POOL_CODE it then waits until the pass's last word has come back and
reads the tile again, each ACT word with its CODE word ``CODE[aux_base + (A - a_base) + i]``:
pass 2 keeps, lane by lane, the code at the row's first beat whose value equals the row's
maximum and writes ``ReluCode.ZERO`` elsewhere, the word written back in place.  So a maximum
replaces the running one only when greater (ties keep the first, in the beats' order), and
the second pass needs no beat index: the first beat equal to the maximum is the one.

Walkers: the tile walker (A's tile start, the output offset ``O + tr*S + tc*tc_stride`` with
``row_base`` added) steps between tiles, in a cycle of its own (NEXT) followed by the row
walker's load (LOAD); the row walker (``A + i`` and the beats' addresses, kept incrementally
like the engine's) issues one read a cycle.  Every count of 0 or 1 runs once.

Reads (5 cycles, like the engine's and the front's): P0 holds the issued address in
registers (0 when nothing is issued, so that the Trainer ORs it into the idle engine's ACT
read address and the idle front's CODE read address); ACT comes back through the engine's
operand path (``act_data``, hw/trainers/trainer/operand_fetch.py), CODE through this unit's
own selection of CODE's shared bank registers (``BankedMemory.registered``), both in P5.
P5 updates the running maxima (or the pass's flags) and loads the write registers, so the
writes leave from flip-flops (``act_wr``, ``code_wr``, their address and data 0 but in a
write: the Trainer ORs them into the writer's), like the writer's.

No pool can overflow: the maxima are values of the words read.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hw.contract import ADDRESS_WIDTH, CODE_WIDTH, LEVEL_COUNT_WIDTH, Op, Region, ReluCode
from hw.trainers.core import instruction_layout

from .writer import memory_write_signature

__all__ = ["PoolUnit"]

#: cycles from an address in P0 to its word in P5 (the engine's operand path, the front's)
READ_LATENCY = 5


class PoolUnit(wiring.Component):
    """Parameters: ``memories`` -- ``{Region: BankedMemory}`` (CODE's words are selected
    here; ACT's and CODE's shapes); ``side``; ``bank_group`` (CODE's two-step bank select).

    Ports
    -----
    cur : In(instruction_layout()) -- the instruction (constant while it runs)
    a_y_tile, a_x_tile : In(ADDRESS_WIDTH) -- A's tile steps (the sequencer's)
    start : In(1) -- run ``cur`` (a POOL or POOL_CODE; the unit is idle)
    done : Out(1) -- one cycle: the instruction's last write has left the write registers
    act_addr, act_valid : Out -- ACT's read (0 when ``act_valid`` is 0)
    act_data : In -- the word read, READ_LATENCY cycles after its address
    code_addr, code_en : Out -- CODE's read (0 when ``code_en`` is 0): the memory's address
        register loads it and its registered read enable takes ``code_en``
    code_valid1 : Out(1) -- P1 holds a CODE read (CODE's shared bank registers load next)
    act_wr, code_wr : Out(memory_write_signature) -- the writes, from registers
    """

    def __init__(self, memories: dict, *, side: int, bank_group: int):
        self._mems = memories
        self.side, self.bank_group = side, bank_group
        self._act, self._code = memories[Region.ACT].shape, memories[Region.CODE].shape
        super().__init__({
            "cur": In(instruction_layout()),
            "a_y_tile": In(ADDRESS_WIDTH), "a_x_tile": In(ADDRESS_WIDTH),
            "start": In(1), "done": Out(1),
            "act_addr": Out(ADDRESS_WIDTH), "act_valid": Out(1), "act_data": In(self._act),
            "code_addr": Out(ADDRESS_WIDTH), "code_en": Out(1), "code_valid1": Out(1),
            "act_wr": Out(memory_write_signature(self._act)),
            "code_wr": Out(memory_write_signature(self._code)),
        })

    def elaborate(self, platform):
        m = Module()
        S, cur = self.side, self.cur
        aw, lw, iw = ADDRESS_WIDTH, LEVEL_COUNT_WIDTH, max(1, ceil_log2(S))

        def level(name, width, count):
            return SimpleNamespace(n=Signal(width, name=name), last=Signal(name=f"{name}_last"),
                                   pen=Signal(width, name=f"{name}_pen"),
                                   single=Signal(name=f"{name}_single"), count=count)

        def init(*lvs):
            for lv in lvs:
                m.d.sync += [lv.n.eq(0), lv.pen.eq(lv.count - 2), lv.single.eq(lv.count <= 1),
                             lv.last.eq(lv.count <= 1)]

        def inc(lv):
            m.d.sync += [lv.n.eq(lv.n + 1), lv.last.eq(lv.n == lv.pen)]

        def wrap(*lvs):
            for lv in lvs:
                m.d.sync += [lv.n.eq(0), lv.last.eq(lv.single)]

        # ---- the tile walker -------------------------------------------------------------
        tc, tr = level("p_tc", aw, cur.tiles_c), level("p_tr", aw, cur.tiles_r)
        ux, tx = level("p_ux", lw, cur.x_repeat), level("p_tx", lw, cur.x_tiles)
        uy, ty = level("p_uy", lw, cur.y_repeat), level("p_ty", lw, cur.y_tiles)
        t_a, a_sx, a_sy = (Signal(aw, name=n) for n in ("p_t_a", "p_a_sx", "p_a_sy"))
        # row_base + O + tr*S + tc*tc_stride (the tile's row 0), and its parts
        o_tile, o_row0, o, o_y = (Signal(aw, name=n) for n in ("p_o_tile", "p_o_row0", "p_o",
                                                               "p_o_y"))
        delta = Signal(aw)                    # aux_base - a_base: CODE's address from A's
        is_code = Signal()                    # POOL_CODE
        pass2 = Signal()                      # the tile's second pass (POOL_CODE)
        # ---- the row walker --------------------------------------------------------------
        i = Signal(iw)
        i_last = Signal()
        kk, kx, ky = level("p_k", aw, cur.k_len), level("p_kx", lw, cur.x_beats), \
            level("p_ky", lw, cur.y_beats)
        at_first, at_last, one_beat = Signal(), Signal(), Signal()    # of the row's beats
        row_a, a_kx, a_ky, addr = (Signal(aw, name=n) for n in ("p_row_a", "p_a_kx", "p_a_ky",
                                                                "p_addr"))
        row_out = Signal(aw)                  # the row's pooled word address

        issue = Signal()                      # a read is issued (RUN)
        idle_pipe = Signal()                  # nothing read is in flight, no write pending

        def load_rows():
            """The row walker at the tile's row 0, its first beat."""
            m.d.sync += [i.eq(0), i_last.eq(S == 1), row_a.eq(t_a), a_kx.eq(t_a),
                         a_ky.eq(t_a), addr.eq(t_a), row_out.eq(o_tile), at_first.eq(1),
                         at_last.eq(one_beat)]
            wrap(kk, kx, ky)

        with m.FSM(name="pool"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [t_a.eq(cur.a_base), a_sx.eq(cur.a_base), a_sy.eq(cur.a_base),
                                 o_tile.eq(cur.row_base), o_row0.eq(cur.row_base),
                                 o.eq(cur.row_base), o_y.eq(cur.row_base),
                                 delta.eq(cur.aux_base - cur.a_base),
                                 is_code.eq(cur.op == Op.POOL_CODE), pass2.eq(0),
                                 one_beat.eq((cur.k_len == 1) & (cur.x_beats <= 1)
                                             & (cur.y_beats <= 1))]
                    init(tc, tr, ux, tx, uy, ty, kk, kx, ky)
                    m.next = "LOAD"
            with m.State("LOAD"):
                load_rows()
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += issue.eq(1)
                m.d.sync += at_first.eq(0)
                with m.If(~at_last):
                    with m.If(~kk.last):
                        inc(kk)
                        m.d.sync += [addr.eq(addr + cur.a_k_stride),
                                     at_last.eq((kk.n == kk.pen) & kx.last & ky.last)]
                    with m.Elif(~kx.last):
                        wrap(kk)
                        inc(kx)
                        m.d.sync += [a_kx.eq(a_kx + cur.x_stride), addr.eq(a_kx + cur.x_stride),
                                     at_last.eq(kk.single & (kx.n == kx.pen) & ky.last)]
                    with m.Else():
                        wrap(kk, kx)
                        inc(ky)
                        m.d.sync += [a_ky.eq(a_ky + cur.y_stride), a_kx.eq(a_ky + cur.y_stride),
                                     addr.eq(a_ky + cur.y_stride),
                                     at_last.eq(kk.single & kx.single & (ky.n == ky.pen))]
                with m.Elif(~i_last):
                    # the next row: its words are the next ones
                    wrap(kk, kx, ky)
                    m.d.sync += [i.eq(i + 1), i_last.eq(i == S - 2), row_a.eq(row_a + 1),
                                 a_kx.eq(row_a + 1), a_ky.eq(row_a + 1), addr.eq(row_a + 1),
                                 row_out.eq(row_out + 1), at_first.eq(1), at_last.eq(one_beat)]
                with m.Elif(is_code & ~pass2):
                    m.next = "DRAIN"          # pass 2 needs every maximum of pass 1
                with m.Else():
                    m.next = "NEXT"
            with m.State("DRAIN"):
                with m.If(idle_pipe):
                    m.d.sync += pass2.eq(1)
                    load_rows()
                    m.next = "RUN"
            with m.State("NEXT"):
                m.d.sync += pass2.eq(0)
                m.next = "LOAD"
                with m.If(~tc.last):
                    inc(tc)
                    m.d.sync += o_tile.eq(o_tile + cur.tc_stride)
                with m.Elif(~tr.last):
                    wrap(tc)
                    inc(tr)
                    m.d.sync += [t_a.eq(t_a + cur.a_tile_stride), o_row0.eq(o_row0 + S),
                                 o_tile.eq(o_row0 + S)]
                with m.Elif(~ux.last):
                    wrap(tc, tr)
                    inc(ux)
                    m.d.sync += [t_a.eq(a_sx), o.eq(o + cur.x_out), o_row0.eq(o + cur.x_out),
                                 o_tile.eq(o + cur.x_out)]
                with m.Elif(~tx.last):
                    wrap(tc, tr, ux)
                    inc(tx)
                    m.d.sync += [a_sx.eq(a_sx + self.a_x_tile), t_a.eq(a_sx + self.a_x_tile),
                                 o.eq(o + cur.x_out), o_row0.eq(o + cur.x_out),
                                 o_tile.eq(o + cur.x_out)]
                with m.Elif(~uy.last):
                    wrap(tc, tr, ux, tx)
                    inc(uy)
                    m.d.sync += [a_sx.eq(a_sy), t_a.eq(a_sy), o_y.eq(o_y + cur.y_out),
                                 o.eq(o_y + cur.y_out), o_row0.eq(o_y + cur.y_out),
                                 o_tile.eq(o_y + cur.y_out)]
                with m.Elif(~ty.last):
                    wrap(tc, tr, ux, tx, uy)
                    inc(ty)
                    m.d.sync += [a_sy.eq(a_sy + self.a_y_tile), a_sx.eq(a_sy + self.a_y_tile),
                                 t_a.eq(a_sy + self.a_y_tile), o_y.eq(o_y + cur.y_out),
                                 o.eq(o_y + cur.y_out), o_row0.eq(o_y + cur.y_out),
                                 o_tile.eq(o_y + cur.y_out)]
                with m.Else():
                    m.next = "FINISH"
            with m.State("FINISH"):
                with m.If(idle_pipe):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"

        # ---- the reads: P0 (the issued addresses, registers) to P5 -------------------------
        p = [SimpleNamespace(valid=Signal(name=f"p{n}_valid"), code=Signal(name=f"p{n}_code"),
                             first=Signal(name=f"p{n}_first"), last=Signal(name=f"p{n}_last"),
                             i=Signal(iw, name=f"p{n}_i"), out=Signal(aw, name=f"p{n}_out"),
                             code_addr=Signal(aw, name=f"p{n}_code_addr"))
             for n in range(READ_LATENCY + 1)]
        m.d.sync += [p[0].valid.eq(issue), p[0].code.eq(issue & pass2),
                     p[0].first.eq(at_first), p[0].last.eq(at_last), p[0].i.eq(i),
                     p[0].out.eq(row_out), p[0].code_addr.eq(addr + delta)]
        act_addr0 = Signal(aw)
        code_addr0 = Signal(aw)
        m.d.sync += [act_addr0.eq(Mux(issue, addr, 0)),
                     code_addr0.eq(Mux(issue & pass2, addr + delta, 0))]
        for a, b in zip(p, p[1:]):
            m.d.sync += [b.valid.eq(a.valid), b.code.eq(a.code), b.first.eq(a.first),
                         b.last.eq(a.last), b.i.eq(a.i), b.out.eq(a.out),
                         b.code_addr.eq(a.code_addr)]
        m.d.comb += [self.act_addr.eq(act_addr0), self.act_valid.eq(p[0].valid),
                     self.code_addr.eq(code_addr0), self.code_en.eq(p[0].code),
                     self.code_valid1.eq(p[1].code)]
        # CODE's word: the shared bank registers load in P2 (code_valid1, the Trainer's
        # enable), the bank is selected in P3 (groups) and P4, registered into P5
        code4 = self._mems[Region.CODE].registered(m, p[2].code, "pool_code",
                                                   group=self.bank_group)
        code5 = Signal(self._code, reset_less=True)
        m.d.sync += code5.eq(code4)

        # ---- P5: the maxima, the codes, the writes ----------------------------------------
        act = self.act_data
        mx = [Signal(self._act.elem_shape, name=f"p_max{j}", reset_less=True) for j in range(S)]
        # the maxima of the tile's rows (POOL_CODE's second pass), and row i's selected in P4
        rows_max = [[Signal(self._act.elem_shape, name=f"p_row{r}_max{j}", reset_less=True)
                     for j in range(S)] for r in range(S)]
        sel_max = [Signal(self._act.elem_shape, name=f"p_sel_max{j}", reset_less=True)
                   for j in range(S)]
        for j in range(S):
            choice = rows_max[S - 1][j]
            for r in reversed(range(S - 1)):
                choice = Mux(p[4].i == r, rows_max[r][j], choice)
            m.d.sync += sel_max[j].eq(choice)
        found = [Signal(name=f"p_found{j}") for j in range(S)]
        q = p[5]
        new_max = [Signal(self._act.elem_shape, name=f"p_new_max{j}") for j in range(S)]
        keep = [Signal(name=f"p_keep{j}") for j in range(S)]
        for j in range(S):
            v = act[j]
            equal = v == sel_max[j]
            found_before = found[j] & ~q.first
            m.d.comb += [new_max[j].eq(Mux(q.first | (v > mx[j]), v, mx[j])),
                         keep[j].eq(equal & ~found_before)]
            with m.If(q.valid & ~q.code):
                m.d.sync += mx[j].eq(new_max[j])
            with m.If(q.code):
                m.d.sync += found[j].eq(found_before | equal)
        with m.If(q.valid & ~q.code & q.last & is_code):
            for r in range(S):
                with m.If(q.i == r):
                    m.d.sync += [rows_max[r][j].eq(new_max[j]) for j in range(S)]
        aw_, cw_ = self.act_wr, self.code_wr
        # the writes' addresses and data are 0 but in a write (the Trainer ORs them into the
        # writer's)
        act_write = q.valid & ~q.code & q.last
        codes = Cat(*(Mux(keep[j], code5[j], Const(ReluCode.ZERO, CODE_WIDTH)) for j in range(S)))
        m.d.sync += [aw_.en.eq(act_write), aw_.addr.eq(Mux(act_write, q.out, 0)),
                     aw_.data.eq(Mux(act_write, Cat(*new_max), 0)),
                     cw_.en.eq(q.code), cw_.addr.eq(Mux(q.code, q.code_addr, 0)),
                     cw_.data.eq(Mux(q.code, codes, 0))]
        m.d.comb += idle_pipe.eq(~Cat(*(x.valid for x in p), aw_.en, cw_.en).any())
        return m
