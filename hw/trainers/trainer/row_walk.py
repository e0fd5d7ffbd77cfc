"""The row walker: an instruction's result rows in issue order, and their addresses.

Tiles run row-major, rows of a tile in order; a row's offset is
``off = tr*S + i + tc*tc_stride`` (hw/contract/isa.py).  The front and the writer of the
Trainer each walk the rows (hw/trainers/trainer/front.py, writer.py).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.utils import ceil_log2

from hw.contract import ADDRESS_WIDTH

__all__ = ["RowWalk"]

COUNT_WIDTH = ADDRESS_WIDTH


class RowWalk:
    """Counts the drained rows of an instruction in issue order (tiles row-major, rows of a
    tile in order) and derives the row offset ``off = tr*S + i + tc*tc_stride`` and friends.

    ``reset`` (re)loads the limits from the instruction register; ``step`` moves to the next
    row.  ``off`` and ``m`` are registers too (computed from the next counters on a step), so
    that an address is one adder away from flip-flops.  The ``at_*_last`` flags are registers
    as well, set on a step from the current counters and flags (``tc == tiles_c - 2`` rather
    than ``tc + 1 == tiles_c - 1``), so that no compare sits before the adders and no adder
    before a compare.  With ``base`` (constant while an instruction runs), ``addr = base +
    off`` is a register, and so are the addresses of the current tile's and tile row's row 0:
    the next address is one adder (``addr + 1``, ``tile_addr + tc_stride`` or ``tr_addr + S``) and a
    choice away from flip-flops, so that a block RAM's read address comes straight from
    flip-flops; ``addr_next`` and ``m_next`` are the next values of ``addr`` and ``m`` (LABEL's
    own address register, hw/memory/banked_memory.py, loads ``m_next`` to hold the same row index in
    the same cycle)."""

    def __init__(self, m: Module, name: str, side: int, cur, reset, step, base=None):
        S = side
        iw = max(1, ceil_log2(S))
        sig = lambda n, w=COUNT_WIDTH, **kw: Signal(w, name=f"{name}_{n}", **kw)  # noqa: E731
        self.i, self.tc, self.tr = sig("i", iw), sig("tc"), sig("tr")
        self.tr_off, self.tc_off = sig("tr_off"), sig("tc_off")       # tr*S, tc*tc_stride
        self.tc_cls, self.col_tr_off = sig("tc_cls"), sig("col_tr_off")  # tc*S, tr*col_tr_stride
        # the penultimate tile column and tile row (tiles - 2, modulo 2**COUNT_WIDTH), and
        # whether there is one tile column: the flags below are compared on the current
        # counters, with no adder before the compare (tc + 1 == tiles_c - 1 is tc == tc_pen)
        tc_pen, tr_pen = sig("tc_pen"), sig("tr_pen")
        tc_one = sig("tc_one", 1, init=1)
        # registers equal to i == S - 1, tc == tiles_c - 1, tr == tiles_r - 1 in every cycle
        # (they change with the counters, on reset and step only); the reset values match
        self.at_i_last = sig("at_i_last", 1, init=int(S == 1))
        self.at_tc_last = sig("at_tc_last", 1, init=1)
        self.at_tr_last = sig("at_tr_last", 1, init=1)
        self.final = Signal(name=f"{name}_final")
        self.off = sig("off")
        self.m = sig("m")
        n = {k: sig(f"next_{k}", w) for k, w in
             (("i", iw), ("tc", COUNT_WIDTH), ("tr", COUNT_WIDTH), ("tr_off", COUNT_WIDTH),
              ("tc_off", COUNT_WIDTH), ("tc_cls", COUNT_WIDTH), ("col_tr_off", COUNT_WIDTH))}
        regs = {"i": self.i, "tc": self.tc, "tr": self.tr, "tr_off": self.tr_off,
                "tc_off": self.tc_off, "tc_cls": self.tc_cls, "col_tr_off": self.col_tr_off}
        m.d.comb += self.final.eq(self.at_i_last & self.at_tc_last & self.at_tr_last)
        m.d.comb += [n[k].eq(v) for k, v in regs.items()]
        with m.If(self.at_i_last):
            m.d.comb += n["i"].eq(0)
            with m.If(self.at_tc_last):
                m.d.comb += [n["tc"].eq(0), n["tc_off"].eq(0), n["tc_cls"].eq(0),
                             n["tr"].eq(self.tr + 1), n["tr_off"].eq(self.tr_off + S),
                             n["col_tr_off"].eq(self.col_tr_off + cur.col_tr_stride)]
            with m.Else():
                m.d.comb += [n["tc"].eq(self.tc + 1),
                             n["tc_off"].eq(self.tc_off + cur.tc_stride),
                             n["tc_cls"].eq(self.tc_cls + S)]
        with m.Else():
            m.d.comb += n["i"].eq(self.i + 1)

        def next_tile(tile, tr_row0):
            # row 0 of the tile after a tile's last row, as an offset or an address: the
            # next tile row's (its row 0 + S) or the next tile's in this tile row
            return Mux(self.at_tc_last, tr_row0 + S, tile + cur.tc_stride)

        # off and m kept incrementally (one adder each): tile_off = tr_off + tc_off is the
        # offset of the current tile's row 0
        tile_off = sig("tile_off")
        next_tile_off = sig("next_tile_off")
        next_off, next_m = sig("next_off"), sig("next_m")
        m.d.comb += [next_tile_off.eq(tile_off), next_off.eq(self.off + 1),
                     next_m.eq(self.m + 1)]
        with m.If(self.at_i_last):
            m.d.comb += [next_tile_off.eq(next_tile(tile_off, self.tr_off)),
                         next_m.eq(Mux(self.at_tc_last, self.tr_off + S, self.tr_off)),
                         next_off.eq(next_tile_off)]
        self.addr = sig("addr")
        self.addr_next = sig("addr_next")
        self.m_next = sig("m_next")
        m.d.comb += [self.addr_next.eq(self.addr), self.m_next.eq(self.m)]
        m.d.sync += [self.addr.eq(self.addr_next), self.m.eq(self.m_next)]
        if base is not None:
            # base + tile_off and base + tr_off, kept like tile_off and tr_off
            tile_addr, tr_addr = sig("tile_addr"), sig("tr_addr")
            next_tile_addr = sig("next_tile_addr")
            m.d.comb += next_tile_addr.eq(Mux(self.at_i_last, next_tile(tile_addr, tr_addr),
                                              tile_addr))
        with m.If(reset):
            m.d.sync += [r.eq(0) for r in regs.values()]
            m.d.sync += [self.off.eq(0), tile_off.eq(0)]
            m.d.comb += self.m_next.eq(0)
            one_tc = (cur.tiles_c - 1)[:COUNT_WIDTH] == 0
            m.d.sync += [tc_pen.eq(cur.tiles_c - 2), tr_pen.eq(cur.tiles_r - 2),
                         tc_one.eq(one_tc)]
            m.d.sync += [self.at_i_last.eq(S == 1),
                         self.at_tc_last.eq(one_tc),
                         self.at_tr_last.eq((cur.tiles_r - 1)[:COUNT_WIDTH] == 0)]
            if base is not None:
                m.d.comb += self.addr_next.eq(base)
                m.d.sync += [tile_addr.eq(base), tr_addr.eq(base)]
        with m.Elif(step):
            m.d.sync += [r.eq(n[k]) for k, r in regs.items()]
            m.d.sync += [self.off.eq(next_off), tile_off.eq(next_tile_off)]
            # the flags of the next counters (n), from the current ones: after a tile's last
            # row i is 0 (last if S == 1), tc is 0 after the last tile column (last if there
            # is one) and tc + 1 otherwise, and tr moves on after a tile row's last tile
            m.d.sync += self.at_i_last.eq(~self.at_i_last & (self.i == S - 2) if S > 1 else 1)
            with m.If(self.at_i_last):
                m.d.sync += self.at_tc_last.eq(Mux(self.at_tc_last, tc_one, self.tc == tc_pen))
                with m.If(self.at_tc_last):
                    m.d.sync += self.at_tr_last.eq(self.tr == tr_pen)
            m.d.comb += self.m_next.eq(next_m)
            if base is not None:
                m.d.comb += self.addr_next.eq(Mux(self.at_i_last, next_tile_addr,
                                                  self.addr + 1))
                m.d.sync += tile_addr.eq(next_tile_addr)
                with m.If(self.at_i_last & self.at_tc_last):
                    m.d.sync += tr_addr.eq(tr_addr + S)
