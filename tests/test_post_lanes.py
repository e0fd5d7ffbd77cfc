"""PostLanes's SGD rows through fewer SgdUpdate units (``sgd_row_cycles``), Amaranth simulator.

The other ops and the whole lanes are checked bit-exact inside the Trainer (tests/test_trainer.py);
here the chunking of SGD rows: each row's values against golden's IntegerSGD (saturated), rows in
order, one row every ``sgd_row_cycles`` cycles with ``i.ready`` low in between, and the sticky flag.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from cocotb_units import units as U
from golden.optim import sgd_update
from hw.post_lanes import PostLanes
from nitrod.isa import Op

SIDE, ACC, WGT = 4, 48, 18


def _rows(rng, n, lr_inv, amp, decay_inv):
    """``n`` rows of (w, g): the edge values of both widths first, then random ones."""
    w_e = U.edge_values(WGT, [max(decay_inv, 1)])
    g_e = U.edge_values(ACC, [lr_inv * amp])
    k = max(len(w_e), len(g_e))
    w = np.concatenate([np.resize(w_e, k), rng.integers(-2 ** (WGT - 1), 2 ** (WGT - 1), n * SIDE)])
    g = np.concatenate([np.resize(g_e, k), rng.integers(-2 ** 40, 2 ** 40, n * SIDE)])
    size = len(w) // SIDE * SIDE
    return w[:size].reshape(-1, SIDE), g[:size].reshape(-1, SIDE)


def _run(dut, w, g, consts, *, hold_valid):
    """Offer the rows (valid held high when ``hold_valid``, else one every ``k`` cycles with
    random extra gaps); returns (output rows, cycles between accepted rows, ready trace,
    sgd_overflow at the end)."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    got, taken_at, flag = [], [], []
    k = dut.sgd_row_cycles

    async def bench(ctx):
        rnd = np.random.default_rng(7)
        ctx.set(dut.op, Op.SGD)
        for name, value in consts.items():
            ctx.set(getattr(dut, name), value)
        ctx.set(dut.o.ready, 1)
        i, cycle, wait = 0, 0, 0
        while len(got) < len(w) and cycle < 40 * len(w) + 200:
            offer = i < len(w) and (hold_valid or wait == 0)
            ctx.set(dut.i.valid, offer)
            if i < len(w):
                for j in range(SIDE):
                    ctx.set(dut.i.payload.wgt[j], int(w[i, j]))
                    ctx.set(dut.i.payload.acc[j], int(g[i, j]))
            ready = ctx.get(dut.i.ready)
            if ctx.get(dut.o.valid):
                got.append([ctx.get(dut.o.payload.value[j]) for j in range(SIDE)])
            await ctx.tick()
            cycle += 1
            wait = max(0, wait - 1)
            if offer and ready:
                taken_at.append(cycle)
                i += 1
                wait = k - 1 + int(rnd.integers(0, 3))
        flag.append(ctx.get(dut.sgd_overflow))

    sim.add_testbench(bench)
    sim.run()
    return np.array(got), np.diff(taken_at), flag[0]


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("hold_valid", [True, False])
def test_sgd_rows_through_fewer_units(rng, k, hold_valid):
    dut = PostLanes(SIDE, acc_width=ACC, wgt_width=WGT, free_running=True, sgd_row_cycles=k)
    assert len(dut.sgds) == SIDE // k
    lr_inv, amp, decay_inv = 512, 640, 12000
    w, g = _rows(rng, 12, lr_inv, amp, decay_inv)
    got, gaps, overflow = _run(dut, w, g, dut.sgds[0].constants(lr_inv, amp, decay_inv),
                               hold_valid=hold_valid)
    exact = sgd_update(w, g, lr_inv, amp, decay_inv)
    sat = np.clip(exact, -2 ** (WGT - 1), 2 ** (WGT - 1) - 1)
    assert got.shape == sat.shape
    np.testing.assert_array_equal(got, sat)
    assert overflow == int(np.any(exact != sat)) == 1      # the edge values overflow
    assert gaps.min() >= k
    if hold_valid:
        assert set(gaps.tolist()) == {k}                    # one row every k cycles, no more


def test_sgd_rows_in_range_leave_the_flag_low(rng):
    dut = PostLanes(SIDE, acc_width=ACC, wgt_width=WGT, free_running=True, sgd_row_cycles=2)
    lr_inv, amp, decay_inv = 512, 640, 0
    w = rng.integers(-2 ** 14, 2 ** 14, (10, SIDE))
    g = rng.integers(-2 ** 14 * lr_inv * amp, 2 ** 14 * lr_inv * amp, (10, SIDE))
    got, _, overflow = _run(dut, w, g, dut.sgds[0].constants(lr_inv, amp, decay_inv),
                            hold_valid=True)
    np.testing.assert_array_equal(got, sgd_update(w, g, lr_inv, amp, decay_inv))
    assert overflow == 0


def test_sgd_row_cycles_must_divide_the_side_and_need_free_running_lanes():
    with pytest.raises(ValueError, match="divide"):
        PostLanes(SIDE, sgd_row_cycles=3, free_running=True)
    with pytest.raises(ValueError, match="free_running"):
        PostLanes(SIDE, sgd_row_cycles=2)
