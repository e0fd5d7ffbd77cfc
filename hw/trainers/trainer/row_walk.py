"""The row walker: an instruction's result rows in issue order, and their addresses.

Tiles run in the contract's order (hw/contract/isa.py: ``ty, uy, tx, ux, tr, tc``), rows of a
tile in order; a row's offset is ``off = O + tr*S + i + tc*tc_stride`` and a column's
``coff = O + tr*col_tr_stride + tc*S + c``, where ``O = (ty*y_repeat + uy)*y_out + (tx*x_repeat
+ ux)*x_out`` steps by ``x_out`` at every step of the x level (tile or repeat) and by ``y_out``
at every step of the y level.  The front and the writer of the Trainer each walk the rows
(hw/trainers/trainer/front.py, writer.py).
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import Module, Mux, Signal
from amaranth.utils import ceil_log2

from hw.contract import ADDRESS_WIDTH, LEVEL_COUNT_WIDTH

__all__ = ["RowWalk"]

COUNT_WIDTH = ADDRESS_WIDTH


class RowWalk:
    """Counts the drained rows of an instruction in issue order (module docstring) and derives
    the row offset ``off`` and friends.

    ``reset`` (re)loads the limits from the instruction register; ``step`` moves to the next
    row.  ``off`` and ``m`` (``tr*S + i``, the row index) are registers too (computed from the
    next counters on a step), so that an address is one adder away from flip-flops.  The
    ``at_*_last`` flags are registers as well, set on a step from the current counters and
    flags (``tc == tiles_c - 2`` rather than ``tc + 1 == tiles_c - 1``), so that no compare sits
    before the adders and no adder before a compare.  ``tc_cls`` is ``tc*S`` (the tile's first
    column index), ``col_tr_off`` is ``O + tr*col_tr_stride`` (a column's offset is
    ``col_tr_off + tc_cls + c``).

    With ``base`` (constant while an instruction runs), ``addr = base + off`` is a register,
    and so are the addresses of the current tile's and tile row's row 0, and ``base + O``: the
    next address is one adder (``addr + 1``, ``tile_addr + tc_stride`` or ``tr_addr + S``) or a
    register (the next spatial step's ``base + O``, registered a cycle ahead: a spatial step
    comes at most every S >= 2 rows) and a choice away from flip-flops, so that a block RAM's
    read address comes straight from flip-flops; ``addr_next`` and ``m_next`` are the next
    values of ``addr`` and ``m`` (LABEL's own address register, hw/memory/banked_memory.py,
    loads ``m_next`` to hold the same row index in the same cycle)."""

    def __init__(self, m: Module, name: str, side: int, cur, reset, step, base=None):
        S = side
        iw = max(1, ceil_log2(S))
        sig = lambda n, w=COUNT_WIDTH, **kw: Signal(w, name=f"{name}_{n}", **kw)  # noqa: E731
        self.i, self.tc, self.tr = sig("i", iw), sig("tc"), sig("tr")
        self.tr_off = sig("tr_off")                                     # tr*S
        self.tc_cls, self.col_tr_off = sig("tc_cls"), sig("col_tr_off")  # tc*S, O + tr*cts
        # the penultimate tile column and tile row (tiles - 2, modulo 2**COUNT_WIDTH), and
        # whether there is one tile column: the flags below are compared on the current
        # counters, with no adder before the compare (tc + 1 == tiles_c - 1 is tc == tc_pen)
        tc_pen, tr_pen = sig("tc_pen"), sig("tr_pen")
        tc_one = sig("tc_one", 1, init=1)
        tr_one = sig("tr_one", 1, init=1)
        # registers equal to i == S - 1, tc == tiles_c - 1, tr == tiles_r - 1 in every cycle
        # (they change with the counters, on reset and step only); the reset values match
        self.at_i_last = sig("at_i_last", 1, init=int(S == 1))
        self.at_tc_last = sig("at_tc_last", 1, init=1)
        self.at_tr_last = sig("at_tr_last", 1, init=1)
        # the spatial levels, inner first: ux < x_repeat, tx < x_tiles, uy < y_repeat,
        # ty < y_tiles (a count of 0 or 1 runs once)
        levels = [self._level(m, sig, n, getattr(cur, f)) for n, f in (
            ("ux", "x_repeat"), ("tx", "x_tiles"), ("uy", "y_repeat"), ("ty", "y_tiles"))]
        ux, tx, uy, ty = levels
        at_sp_last = sig("at_sp_last", 1, init=1)       # every spatial level at its last step
        x_more = Signal(name=f"{name}_x_more")          # the x level has a step left
        m.d.comb += x_more.eq(~(ux.last & tx.last))
        self.final = Signal(name=f"{name}_final")
        self.off = sig("off")
        self.m = sig("m")
        m.d.comb += self.final.eq(self.at_i_last & self.at_tc_last & self.at_tr_last & at_sp_last)
        # the row's tile steps: after a tile's last row the next tile column, the next tile
        # row, or (after the last tile of both) the next spatial step
        tile_end = Signal(name=f"{name}_tile_end")
        tr_end = Signal(name=f"{name}_tr_end")          # after the tile row's last tile
        sp_end = Signal(name=f"{name}_sp_end")          # after the last tile row
        m.d.comb += [tile_end.eq(step & self.at_i_last), tr_end.eq(tile_end & self.at_tc_last),
                     sp_end.eq(tr_end & self.at_tr_last)]

        # offsets (base 0) and, with base, addresses: O, O at x = 0, the next spatial step's
        # O (a register, a cycle ahead), the tile row's row 0, the tile's row 0, the row
        off = self._track(m, sig, "o", S, cur, reset, step, x_more, tile_end, tr_end, sp_end, 0,
                          self.at_tc_last, self.at_tr_last)
        m.d.comb += self.off.eq(off.cur)
        self.addr = sig("addr")
        self.addr_next = sig("addr_next")
        if base is not None:
            track = self._track(m, sig, "a", S, cur, reset, step, x_more, tile_end, tr_end,
                                sp_end, base, self.at_tc_last, self.at_tr_last)
            m.d.comb += [self.addr.eq(track.cur), self.addr_next.eq(track.cur_next)]

        # m = tr*S + i: 0 after a spatial step; the next tile row's m a register (tr_off and
        # at_tr_last change at most every S >= 2 rows, so it is a cycle ahead)
        next_tr_m = sig("next_tr_m")
        m.d.sync += next_tr_m.eq(Mux(self.at_tr_last, 0, self.tr_off + S))
        self.m_next = sig("m_next")
        m.d.comb += self.m_next.eq(self.m)
        m.d.sync += self.m.eq(self.m_next)
        with m.If(reset):
            m.d.comb += self.m_next.eq(0)
        with m.Elif(step):
            m.d.comb += self.m_next.eq(self.m + 1)
            with m.If(self.at_i_last):
                m.d.comb += self.m_next.eq(Mux(self.at_tc_last, next_tr_m, self.tr_off))

        with m.If(reset):
            m.d.sync += [r.eq(0) for r in (self.i, self.tc, self.tr, self.tr_off, self.tc_cls,
                                           self.col_tr_off)]
            one_tc = (cur.tiles_c - 1)[:COUNT_WIDTH] == 0
            one_tr = (cur.tiles_r - 1)[:COUNT_WIDTH] == 0
            m.d.sync += [tc_pen.eq(cur.tiles_c - 2), tr_pen.eq(cur.tiles_r - 2),
                         tc_one.eq(one_tc), tr_one.eq(one_tr)]
            m.d.sync += [self.at_i_last.eq(S == 1), self.at_tc_last.eq(one_tc),
                         self.at_tr_last.eq(one_tr),
                         at_sp_last.eq(ux.first_single & tx.first_single & uy.first_single
                                       & ty.first_single)]
            for lv in levels:
                m.d.sync += [lv.n.eq(0), lv.pen.eq(lv.count - 2), lv.single.eq(lv.first_single),
                             lv.last.eq(lv.first_single)]
        with m.Elif(step):
            # the flags of the next counters, from the current ones: after a tile's last row i
            # is 0 (last if S == 1), tc is 0 after the last tile column (last if there is
            # one) and tc + 1 otherwise, tr likewise after a tile row's last tile
            m.d.sync += self.at_i_last.eq(~self.at_i_last & (self.i == S - 2) if S > 1 else 1)
            with m.If(self.at_i_last):
                m.d.sync += self.i.eq(0)
            with m.Else():
                m.d.sync += self.i.eq(self.i + 1)
            with m.If(tile_end):
                with m.If(~self.at_tc_last):
                    m.d.sync += [self.tc.eq(self.tc + 1), self.tc_cls.eq(self.tc_cls + S),
                                 self.at_tc_last.eq(self.tc == tc_pen)]
                with m.Else():
                    m.d.sync += [self.tc.eq(0), self.tc_cls.eq(0), self.at_tc_last.eq(tc_one)]
                    with m.If(~self.at_tr_last):
                        m.d.sync += [self.tr.eq(self.tr + 1), self.tr_off.eq(self.tr_off + S),
                                     self.col_tr_off.eq(self.col_tr_off + cur.col_tr_stride),
                                     self.at_tr_last.eq(self.tr == tr_pen)]
                    with m.Else():
                        m.d.sync += [self.tr.eq(0), self.tr_off.eq(0),
                                     self.col_tr_off.eq(off.o_next),
                                     self.at_tr_last.eq(tr_one)]
                        self._spatial_step(m, levels, at_sp_last)

    @staticmethod
    def _level(m, sig, name, count):
        """A spatial level's counter, its last flag (a register), ``count - 2`` and whether
        it runs once (registered on reset); ``first_single``: the count runs once (from the
        instruction register, for the reset)."""
        lv = SimpleNamespace(n=sig(name, LEVEL_COUNT_WIDTH), last=sig(f"at_{name}_last", 1, init=1),
                             pen=sig(f"{name}_pen", LEVEL_COUNT_WIDTH),
                             single=sig(f"{name}_single", 1, init=1), count=count,
                             first_single=Signal(name=f"{name}_count_single"))
        m.d.comb += lv.first_single.eq(count <= 1)
        return lv

    @staticmethod
    def _spatial_step(m, levels, at_sp_last):
        """The spatial levels' next step (inner first) and ``at_sp_last`` of the next one."""
        ux, tx, uy, ty = levels

        def inc(lv):
            m.d.sync += [lv.n.eq(lv.n + 1), lv.last.eq(lv.n == lv.pen)]

        def wrap(*lvs):
            for lv in lvs:
                m.d.sync += [lv.n.eq(0), lv.last.eq(lv.single)]

        with m.If(~ux.last):
            inc(ux)
            m.d.sync += at_sp_last.eq((ux.n == ux.pen) & tx.last & uy.last & ty.last)
        with m.Elif(~tx.last):
            wrap(ux)
            inc(tx)
            m.d.sync += at_sp_last.eq(ux.single & (tx.n == tx.pen) & uy.last & ty.last)
        with m.Elif(~uy.last):
            wrap(ux, tx)
            inc(uy)
            m.d.sync += at_sp_last.eq(ux.single & tx.single & (uy.n == uy.pen) & ty.last)
        with m.Else():
            wrap(ux, tx, uy)
            inc(ty)
            m.d.sync += at_sp_last.eq(ux.single & tx.single & uy.single & (ty.n == ty.pen))

    @staticmethod
    def _track(m, sig, name, S, cur, reset, step, x_more, tile_end, tr_end, sp_end, base,
               at_tc_last, at_tr_last):
        """``base + off`` kept incrementally (class docstring): returns the registers ``cur``
        (the row's), ``o_next`` (the next spatial step's ``base + O``) and ``cur_next``."""
        t = SimpleNamespace(**{n: sig(f"{name}_{n}") for n in (
            "o", "o_y", "o_next", "row0", "row0_s", "tile", "cur", "cur_next")})
        # registers a cycle ahead (their inputs change at most every S >= 2 rows): the next
        # spatial step's O, and the next tile row's row 0 (row0 + S)
        m.d.sync += [t.o_next.eq(Mux(x_more, t.o + cur.x_out, t.o_y + cur.y_out)),
                     t.row0_s.eq(t.row0 + S)]
        # row 0 of the tile after a tile's last row: the next tile's in this tile row, the
        # next tile row's, or the next spatial step's
        next_tile = sig(f"{name}_next_tile")
        m.d.comb += next_tile.eq(Mux(at_tc_last, Mux(at_tr_last, t.o_next, t.row0_s),
                                     t.tile + cur.tc_stride))
        m.d.comb += t.cur_next.eq(t.cur)
        m.d.sync += t.cur.eq(t.cur_next)
        with m.If(reset):
            m.d.comb += t.cur_next.eq(base)
            m.d.sync += [t.o.eq(base), t.o_y.eq(base), t.row0.eq(base), t.tile.eq(base)]
        with m.Elif(step):
            m.d.comb += t.cur_next.eq(Mux(tile_end, next_tile, t.cur + 1))
            with m.If(tile_end):
                m.d.sync += t.tile.eq(next_tile)
            with m.If(tr_end):
                m.d.sync += t.row0.eq(Mux(at_tr_last, t.o_next, t.row0_s))
            with m.If(sp_end):
                m.d.sync += t.o.eq(t.o_next)
                with m.If(~x_more):
                    m.d.sync += t.o_y.eq(t.o_next)
        return t
