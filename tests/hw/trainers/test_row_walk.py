"""RowWalk (hw/trainers/trainer/row_walk.py) in Amaranth's simulator against the contract's
offsets (hw/contract/isa.py): every row's ``off`` (and ``base + off``), ``m``, ``tc_cls``,
``col_tr_off`` and ``final`` over the whole loop nest, spatial levels and repeats included,
with steps back to back and with gaps, at S = 2 (the fastest spatial steps) and S = 4."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hw.trainers.core import instruction_layout
from hw.trainers.trainer.row_walk import RowWalk


class _Walker(wiring.Component):
    def __init__(self, side):
        self.side = side
        super().__init__({
            "cur": In(instruction_layout()), "reset": In(1), "step": In(1), "base": In(16),
            "off": Out(16), "addr": Out(16), "addr_next": Out(16), "m": Out(16),
            "m_next": Out(16), "tc_cls": Out(16), "col_tr_off": Out(16), "final": Out(1),
            "i": Out(8)})

    def elaborate(self, platform):
        m = Module()
        w = RowWalk(m, "w", self.side, self.cur, self.reset, self.step, base=self.base)
        m.d.comb += [self.off.eq(w.off), self.addr.eq(w.addr), self.addr_next.eq(w.addr_next),
                     self.m.eq(w.m), self.m_next.eq(w.m_next), self.tc_cls.eq(w.tc_cls),
                     self.col_tr_off.eq(w.col_tr_off), self.final.eq(w.final), self.i.eq(w.i)]
        return m


def expected_rows(ins, S):
    """(off, m, tc_cls, col_tr_off) of every row in issue order."""
    def n(name):
        return max(1, ins[name])
    out = []
    for ty in range(n("y_tiles")):
        for uy in range(n("y_repeat")):
            for tx in range(n("x_tiles")):
                for ux in range(n("x_repeat")):
                    o = ((ty * n("y_repeat") + uy) * ins["y_out"]
                         + (tx * n("x_repeat") + ux) * ins["x_out"])
                    for tr in range(ins["tiles_r"]):
                        for tc in range(ins["tiles_c"]):
                            for i in range(S):
                                out.append((o + tr * S + i + tc * ins["tc_stride"], tr * S + i,
                                            tc * S, o + tr * ins["col_tr_stride"]))
    return out


@pytest.mark.parametrize("side", [2, 4])
def test_row_offsets_over_the_whole_nest(side):
    rng = np.random.default_rng(side)
    dut = _Walker(side)
    cases = []
    for _ in range(12):
        ins = {name: 0 for name in ("y_tiles", "y_repeat", "x_tiles", "x_repeat")}
        ins.update({name: int(rng.choice([0, 1, 2, 3])) for name in ins})
        ins.update(tiles_r=int(rng.integers(1, 4)), tiles_c=int(rng.integers(1, 4)),
                   tc_stride=int(rng.integers(0, 40)), col_tr_stride=int(rng.integers(0, 40)),
                   y_out=int(rng.integers(0, 300)), x_out=int(rng.integers(0, 90)))
        cases.append((ins, int(rng.integers(0, 1000)), float(rng.choice([1.0, 0.5]))))
    got = []

    async def bench(ctx):
        for ins, base, p_step in cases:
            ctx.set(dut.cur, ins)
            ctx.set(dut.base, base)
            ctx.set(dut.reset, 1)
            await ctx.tick()
            ctx.set(dut.reset, 0)
            for _ in range(3):
                await ctx.tick()
            rows = []
            n_rows = len(expected_rows(ins, side))
            while len(rows) < n_rows:
                step = int(rng.random() < p_step)
                ctx.set(dut.step, step)
                if step:
                    rows.append((ctx.get(dut.off), ctx.get(dut.addr), ctx.get(dut.m),
                                 ctx.get(dut.tc_cls), ctx.get(dut.col_tr_off),
                                 ctx.get(dut.final), ctx.get(dut.m_next),
                                 ctx.get(dut.addr_next)))
                await ctx.tick()
                if step:
                    # m_next and addr_next are the next cycle's m and addr
                    assert ctx.get(dut.m) == rows[-1][6] and ctx.get(dut.addr) == rows[-1][7]
            ctx.set(dut.step, 0)
            got.append(rows)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for (ins, base, _), rows in zip(cases, got):
        want = expected_rows(ins, side)
        for n, (w, g) in enumerate(zip(want, rows)):
            off, m_, tc_cls, col = w
            assert g[0] == off % 65536, (ins, n)
            assert g[1] == (base + off) % 65536, (ins, n)
            assert (g[2], g[3], g[4]) == (m_, tc_cls, col % 65536), (ins, n)
            assert g[5] == (n == len(want) - 1), (ins, n)
