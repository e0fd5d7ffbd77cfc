"""hw/replica.py: a Replica equals, in every cycle, the register whose next value it copies."""

from __future__ import annotations

import random

import pytest
from amaranth import ClockDomain, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hw.replica import REPLICA_ATTR, Replica, replicas


class _Copied(wiring.Component):
    """A register ``reg`` with next value ``d`` (reset value ``init``) and three copies of it."""

    def __init__(self, init):
        self.init = init
        self.sync = ClockDomain("sync")
        super().__init__({"d": In(1), "reg": Out(1, init=init), "copies": Out(3)})

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = self.sync
        m.d.sync += self.reg.eq(self.d)
        for i, q in enumerate(replicas(m, self.d, 3, "copy", init=self.init)):
            m.d.comb += self.copies[i].eq(q)
        return m


@pytest.mark.parametrize("init", [0, 1])
def test_copies_equal_the_register_in_every_cycle_and_after_reset(init):
    dut = _Copied(init)
    rng = random.Random(init)
    seen = set()

    async def bench(ctx):
        for cycle in range(200):
            ctx.set(dut.sync.rst, cycle in (0, 1, 90, 91, 92))   # resets, the design's too
            ctx.set(dut.d, rng.randrange(2))
            await ctx.tick()
            reg = ctx.get(dut.reg)
            assert ctx.get(dut.copies) == (0b111 if reg else 0), (cycle, reg)
            seen.add((reg, cycle in (0, 1, 90, 91, 92)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen >= {(0, False), (1, False), (init, True)}


def test_copy_is_marked_for_the_board_build():
    """The copy's flip-flop carries REPLICA_ATTR (the board build keeps its module apart)."""
    from amaranth.back import rtlil
    text = rtlil.convert(Replica(init=1))
    assert f"attribute \\{REPLICA_ATTR} 1" in text
