"""hw/replica.py: a Replica equals, in every cycle, the register whose next value it copies."""

from __future__ import annotations

import random

import pytest
from amaranth import ClockDomain, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hw.replica import REPLICA_ATTR, Replica, replicas


class _Copied(wiring.Component):
    """A register ``reg`` with next value ``d`` (reset value ``init``, or none with
    ``reset_less``) and three copies of it."""

    def __init__(self, init, reset_less=False):
        self.init, self.reset_less = init, reset_less
        self.sync = ClockDomain("sync")
        super().__init__({"d": In(1), "reg": Out(1), "copies": Out(3)})

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = self.sync
        reg = Signal(init=self.init, reset_less=self.reset_less)
        m.d.sync += reg.eq(self.d)
        m.d.comb += self.reg.eq(reg)
        for i, q in enumerate(replicas(m, self.d, 3, "copy", init=self.init,
                                               reset_less=self.reset_less)):
            m.d.comb += self.copies[i].eq(q)
        return m


@pytest.mark.parametrize("init, reset_less", [(0, False), (1, False), (1, True)])
def test_copies_equal_the_register_in_every_cycle_and_after_reset(init, reset_less):
    """Also for a register without a reset: its copies then load ``d`` through a reset."""
    dut = _Copied(init, reset_less)
    rng = random.Random(init)
    seen = set()

    async def bench(ctx):
        for cycle in range(200):
            ctx.set(dut.sync.rst, cycle in (0, 1, 90, 91, 92))   # resets, the design's too
            d = rng.randrange(2) if cycle != 91 else 1 - init
            ctx.set(dut.d, d)
            await ctx.tick()
            reg = ctx.get(dut.reg)
            assert ctx.get(dut.copies) == (0b111 if reg else 0), (cycle, reg)
            seen.add((reg, cycle in (0, 1, 90, 91, 92)))
            if reset_less:              # no reset: the register loads d in every cycle
                assert reg == d, (cycle, reg)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen >= {(0, False), (1, False)} | ({(1 - init, True)} if reset_less
                                              else {(init, True)})


def test_copy_is_marked_for_the_board_build():
    """The copy's flip-flop carries REPLICA_ATTR (the board build keeps its module apart)."""
    from amaranth.back import rtlil
    text = rtlil.convert(Replica(init=1))
    assert f"attribute \\{REPLICA_ATTR} 1" in text
