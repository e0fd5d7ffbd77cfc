"""PostLanes with fewer units than lanes (``row_cycles``), Amaranth simulator.

The lanes are also checked bit-exact inside the Trainer on whole training steps
(tests/test_trainer.py); here the chunking: each op's rows against golden (FORWARD's Scaler and
NITRO-ReLU with the codes, LOSS's and SCALE's Scaler, SGD's IntegerSGD with saturation and the sticky flag,
BACKWARD's saturation and ReLU backward), rows in order, one FORWARD/LOSS/SGD row every
``row_cycles`` cycles with ``i.ready`` low in between, BACKWARD rows every cycle, ``backerr``
pulsing for exactly the BACKWARD rows that saturate (and never for FORWARD's large values).
The lanes register the op's decode, so each run sets ``op`` a cycle before its first row.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from tests.support import units as U
from golden.arith import nitro_relu, nitro_relu_backward, nitro_scale
from golden.optim import sgd_update
from hw.contract import relu_code
from hw.array.post_lanes import PostLanes
from hw.contract import Op

SIDE, ACC, WGT, ERR = 4, 48, 18, 24


def _lanes(k):
    return PostLanes(SIDE, acc_width=ACC, wgt_width=WGT, err_width=ERR, free_running=True,
                     row_cycles=k)


def _rows(values, rng, n, width):
    """Edge values first, then ``n`` random rows, as rows of SIDE."""
    v = np.concatenate([values, rng.integers(-2 ** (width - 1), 2 ** (width - 1), n * SIDE)])
    return v[:len(v) // SIDE * SIDE].reshape(-1, SIDE)


def _run(dut, op, consts, acc, *, wgt=None, code=None, hold_valid=True, backerr=None):
    """Offer the rows (valid held high when ``hold_valid``, else one every ``k`` cycles with
    random extra gaps).  Returns (values, codes, cycles between accepted rows, sgd_overflow);
    appends to ``backerr`` (a list) the index of every row taken whose ``backerr`` pulse came
    (the cycle after its take), or ``None`` for a pulse after no take."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    values, codes, taken_at, flag = [], [], [], []
    k = dut.row_cycles if op != Op.BACKWARD else 1
    zeros = np.zeros_like(acc)
    wgt = zeros if wgt is None else wgt
    code = zeros if code is None else code

    async def bench(ctx):
        rnd = np.random.default_rng(7)
        ctx.set(dut.op, op)
        for name, value in consts.items():
            ctx.set(getattr(dut, name), value)
        await ctx.tick()                # the lanes register the op's decode (module doc)
        ctx.set(dut.o.ready, 1)
        i, cycle, wait = 0, 0, 0
        while len(values) < len(acc) and cycle < 40 * len(acc) + 200:
            if backerr is not None and ctx.get(dut.backerr):
                backerr.append(i - 1 if taken_at and taken_at[-1] == cycle else None)
            offer = i < len(acc) and (hold_valid or wait == 0)
            ctx.set(dut.i.valid, offer)
            if i < len(acc):
                for j in range(SIDE):
                    ctx.set(dut.i.payload.acc[j], int(acc[i, j]))
                    ctx.set(dut.i.payload.wgt[j], int(wgt[i, j]))
                    ctx.set(dut.i.payload.code[j], int(code[i, j]))
            ready = ctx.get(dut.i.ready)
            if ctx.get(dut.o.valid):
                values.append([ctx.get(dut.o.payload.value[j]) for j in range(SIDE)])
                codes.append([ctx.get(dut.o.payload.code[j]) for j in range(SIDE)])
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
    return np.array(values), np.array(codes), np.diff(taken_at), flag[0]


def _spacing(gaps, k, hold_valid):
    assert gaps.min() >= k
    if hold_valid:
        assert set(gaps.tolist()) == {k}                    # one row every k cycles, no more


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("hold_valid", [True, False])
def test_sgd_rows(rng, k, hold_valid):
    dut = _lanes(k)
    assert len(dut.sgds) == len(dut.scalers) == len(dut.relus) == SIDE // k
    assert len(dut.backwards) == SIDE
    lr_inv, amp, decay_inv = 512, 640, 12000
    w_e, g_e = U.edge_values(WGT, [decay_inv]), U.edge_values(ACC, [lr_inv * amp])
    n = max(len(w_e), len(g_e))
    w = _rows(np.resize(w_e, n), rng, 10, WGT)
    g = _rows(np.resize(g_e, n), rng, 10, 41)
    got, _, gaps, overflow = _run(dut, Op.SGD, dut.sgds[0].constants(lr_inv, amp, decay_inv), g,
                                  wgt=w, hold_valid=hold_valid)
    exact = sgd_update(w, g, lr_inv, amp, decay_inv)
    sat = np.clip(exact, -2 ** (WGT - 1), 2 ** (WGT - 1) - 1)
    assert got.shape == sat.shape
    np.testing.assert_array_equal(got, sat)
    assert overflow == int(np.any(exact != sat)) == 1      # the edge values overflow
    _spacing(gaps, k, hold_valid)


def test_sgd_rows_in_range_leave_the_flag_low(rng):
    dut = _lanes(2)
    lr_inv, amp, decay_inv = 512, 640, 0
    w = rng.integers(-2 ** 14, 2 ** 14, (10, SIDE))
    g = rng.integers(-2 ** 14 * lr_inv * amp, 2 ** 14 * lr_inv * amp, (10, SIDE))
    got, _, _, overflow = _run(dut, Op.SGD, dut.sgds[0].constants(lr_inv, amp, decay_inv), g,
                               wgt=w)
    np.testing.assert_array_equal(got, sgd_update(w, g, lr_inv, amp, decay_inv))
    assert overflow == 0


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("hold_valid", [True, False])
def test_forward_and_loss_rows(rng, k, hold_valid):
    fan_in, slope = 784, 8
    dut = _lanes(k)
    z = _rows(U.edge_values(ACC, [256 * fan_in, 127 * 256 * fan_in]), rng, 8, ACC)
    z[-4:] = rng.integers(-130 * 256 * fan_in, 130 * 256 * fan_in, (4, SIDE))   # unsaturated
    y = nitro_scale(z, fan_in)
    pulses = []
    got, codes, gaps, _ = _run(dut, Op.FORWARD, {"divisor": fan_in, "inv_slope": slope}, z,
                               hold_valid=hold_valid, backerr=pulses)
    assert np.abs(z).max() >= 2 ** (ERR - 1) and pulses == []   # BACKWARD's range check only
    np.testing.assert_array_equal(got, nitro_relu(y, slope))
    np.testing.assert_array_equal(codes, np.vectorize(relu_code)(y))
    _spacing(gaps, k, hold_valid)
    got, _, gaps, _ = _run(_lanes(k), Op.LOSS, {"divisor": fan_in}, z, hold_valid=hold_valid)
    np.testing.assert_array_equal(got, y)
    _spacing(gaps, k, hold_valid)
    # SCALE (average pools): the Scaler alone, like LOSS
    got, _, gaps, _ = _run(_lanes(k), Op.SCALE, {"divisor": fan_in}, z, hold_valid=hold_valid)
    np.testing.assert_array_equal(got, y)
    _spacing(gaps, k, hold_valid)


def test_backward_rows_still_one_a_cycle(rng):
    slope = 16
    dut = _lanes(4)
    d = _rows(np.repeat(U.edge_values(ACC, [slope]), 1), rng, 12, ERR + 2)   # some saturate
    x = rng.integers(-128, 128, d.shape)
    code = np.vectorize(relu_code)(x)
    pulses = []
    got, _, gaps, _ = _run(dut, Op.BACKWARD, {"inv_slope": slope}, d, code=code,
                           backerr=pulses)
    sat = np.clip(d, -2 ** (ERR - 1), 2 ** (ERR - 1) - 1)
    np.testing.assert_array_equal(got, nitro_relu_backward(sat, x, slope))
    # backerr pulses once, the cycle after the take, for each row with a saturated lane
    saturated = np.flatnonzero((sat != d).any(axis=1)).tolist()
    assert 0 < len(saturated) < len(d) and pulses == saturated
    assert set(gaps.tolist()) == {1}


def test_row_cycles_must_divide_the_side_and_need_free_running_lanes():
    with pytest.raises(ValueError, match="divide"):
        PostLanes(SIDE, row_cycles=3, free_running=True)
    with pytest.raises(ValueError, match="free_running"):
        PostLanes(SIDE, row_cycles=2)
