"""Fast tests of the arithmetic units with Amaranth's own simulator.

The bit-exact comparison with golden/ on >= 10,000 vectors per unit runs on
Verilator in tests/test_rtl_<unit>.py; here fewer vectors, more variants
(fixed divisors, other widths, stage depths), and the same checks:
values, order under random stalls, and one result per cycle.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.hdl import Shape
from amaranth.lib import data
from amaranth.sim import Simulator

from tests.support import units as U
from golden.arith import tdiv


# --------------------------------------------------------------------------- stream driver

def _raw(v):
    return v.as_value() if isinstance(v, data.View) else v


def run_amaranth(case: U.UnitCase, seed: int = 1):
    """Drive every segment through ``case.dut``; return (outputs per segment, cycles, flags)."""
    dut = case.dut
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    seg_out, seg_cycles, seg_flags = [], [], []
    in_raw, out_raw = _raw(dut.i.payload), _raw(dut.o.payload)
    in_shape = Shape.cast(in_raw.shape())
    has_clear = "clear" in dut.signature.members

    async def bench(ctx):
        rnd = random.Random(seed)
        for seg in case.segments:
            for name, value in seg.cfg.items():
                ctx.set(getattr(dut, name), value)
            if has_clear:
                ctx.set(dut.clear, 1)
                await ctx.tick()
                ctx.set(dut.clear, 0)
            words = U.pack_fields(seg.inputs, case.in_fields)
            got, i, cycles = [], 0, 0
            stall = seg.mode == "stall"
            while len(got) < len(words):
                valid = i < len(words) and (not stall or rnd.random() < 0.7)
                ready = (not stall) or rnd.random() < 0.6
                ctx.set(dut.i.valid, valid)
                if i < len(words):
                    w = words[i]
                    if in_shape.signed and w >> (in_shape.width - 1):
                        w -= 1 << in_shape.width
                    ctx.set(in_raw, w)
                ctx.set(dut.o.ready, ready)
                i_ready, o_valid = ctx.get(dut.i.ready), ctx.get(dut.o.valid)
                o_word = ctx.get(out_raw.as_unsigned())
                await ctx.tick()
                cycles += 1
                if valid and i_ready:
                    i += 1
                if o_valid and ready:
                    got.append(o_word)
                assert cycles < 10 * len(words) + 100, "unit stopped producing results"
            seg_out.append(U.unpack_fields(got, case.out_fields))
            seg_cycles.append(cycles)
            seg_flags.append({f: ctx.get(getattr(dut, f)) for f in case.flags})
            ctx.set(dut.i.valid, 0)

    sim.add_testbench(bench)
    sim.run()
    return seg_out, seg_cycles, seg_flags


def check_case(case: U.UnitCase, seed: int = 1):
    outs, cycles, flags = run_amaranth(case, seed)
    U.check_outputs(case, outs)
    for seg, c in zip(case.segments, cycles):
        if seg.mode == "full":
            assert c == len(seg) + case.latency, (c, len(seg), case.latency)
    for got, exp in zip(flags, case.expected_flags):
        assert got == exp
    return outs, cycles


# --------------------------------------------------------------------------- units

def test_divider_small_exhaustive():
    """12-bit dividends: every value, divisors 1 .. d_max incl. powers of two."""
    from hw.units.divider import TruncDivider
    width, d_max = 12, 2 ** 11 + 5
    a = np.arange(-2 ** (width - 1), 2 ** (width - 1), dtype=np.int64)
    dut = TruncDivider(width, d_max=d_max)
    segs = [U.Segment(dut.constants(d), {"a": a}, {"q": tdiv(a, d)})
            for d in (1, 3, 64, 641, d_max)]
    case = U.UnitCase(dut, [("a", width)], [("q", width, True)], U._split_modes(segs), dut.latency)
    check_case(case)


def test_divider_wide(rng):
    check_case(U.divider_case(rng, 1500))


@pytest.mark.parametrize("divisor", [1, 7, 256, 2 ** 31])
def test_divider_fixed_divisor(rng, divisor):
    check_case(U.divider_case(rng, 300, fixed=divisor))


def test_divider_pipe_enable_holds():
    """LongDivPipe: with en low nothing moves; q appears after `latency` enabled cycles."""
    from hw.units.divider import LongDivPipe
    pipe = LongDivPipe(16, 3, divisor=7, side_width=4)
    sim = Simulator(pipe)
    sim.add_clock(1e-8)

    async def bench(ctx):
        ctx.set(pipe.en, 1)
        ctx.set(pipe.a, -100)
        ctx.set(pipe.side_i, 5)
        await ctx.tick()
        ctx.set(pipe.a, 0)
        ctx.set(pipe.side_i, 0)
        ctx.set(pipe.en, 0)
        for _ in range(5):
            await ctx.tick()
        assert ctx.get(pipe.q) == 0
        ctx.set(pipe.en, 1)
        for _ in range(pipe.latency - 1):
            await ctx.tick()
        assert ctx.get(pipe.q) == tdiv(-100, 7) and ctx.get(pipe.side_o) == 5

    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("q_bits", [1, 3, 7])
def test_long_division_saturation_argument(q_bits):
    """LongDivPipe (and so the Scaler) computes only q_bits quotient bits, starting
    from the remainder x >> q_bits: exhaustively, floor(x / d) < 2**q_bits exactly
    when x >> q_bits < d, and then the recurrence gives floor(x / d)."""
    xs = np.arange(0, 2 ** (q_bits + 8), dtype=np.int64)
    for d in range(1, 2 ** 7):
        fits = (xs >> q_bits) < d
        assert np.array_equal(fits, xs // d < 2 ** q_bits), d
        for x in xs[fits][:: max(1, fits.sum() // 50)].tolist():
            r, q = x >> q_bits, 0
            for k in range(q_bits - 1, -1, -1):
                r = 2 * r + ((x >> k) & 1)
                bit = r >= d
                r -= d * bit
                q = 2 * q + bit
                assert r < d
            assert q == x // d


def test_scaler(rng):
    check_case(U.scaler_case(rng, 1500))


@pytest.mark.parametrize("fan_in", [1, 784])
def test_scaler_fixed_and_narrow(rng, fan_in):
    check_case(U.scaler_case(rng, 400, fixed=fan_in))
    check_case(U.scaler_case(rng, 400, acc_width=32, fan_in_width=10,
                             fan_ins=[1, 3, fan_in % 1023 or 1, 1023]))


def test_nitro_relu_all_slopes_runtime(rng):
    check_case(U.relu_case(rng, reps=1))


@pytest.mark.parametrize("slope", [3, 4, 20])
def test_nitro_relu_fixed_slope(rng, slope):
    check_case(U.relu_case(rng, reps=1, slope=slope))


def test_nitro_relu_backward_runtime(rng):
    check_case(U.relu_backward_case(rng, 600))


@pytest.mark.parametrize("slope", [4, 16])
def test_nitro_relu_backward_fixed(rng, slope):
    check_case(U.relu_backward_case(rng, 200, err_width=16, slope=slope))


@pytest.mark.parametrize("bits_per_stage", [2, 5, 24])
def test_nitro_relu_backward_stage_depths(rng, bits_per_stage):
    case = U.relu_backward_case(rng, 300, bits_per_stage=bits_per_stage)
    assert case.latency == 3 + -(-24 // bits_per_stage)
    check_case(case)


@pytest.mark.parametrize("bits_per_stage", [2, 3, 8])
def test_nitro_relu_stage_depths(rng, bits_per_stage):
    case = U.relu_case(rng, reps=1, bits_per_stage=bits_per_stage)
    assert case.latency == 4 + -(-8 // bits_per_stage)
    check_case(case)


def test_sgd_update(rng):
    case = U.sgd_case(rng, 1200)
    assert case.latency == 18 + 6 + 1     # 48-bit gradients: split negation
    check_case(case)


def test_scaler_out_max_clip(rng):
    """out_max not of the form 2**k - 1: the saturated quotient is clipped."""
    from hw.units.scaler import Scaler
    from golden.arith import tdiv
    dut = Scaler(32, fan_in_width=6, out_max=100)
    segs = []
    for f in (1, 5, 63):
        z = np.concatenate([U.edge_values(32, [256 * f, 100 * 256 * f]),
                            rng.integers(-130 * 256 * f, 130 * 256 * f + 1, 300)])
        y = np.clip(tdiv(z, 256 * f), -100, 100)
        segs.append(U.Segment(dut.constants(f), {"z": z}, {"y": y.astype(np.int64)}))
    check_case(U.UnitCase(dut, [("z", 32)], [("y", 8, True)], U._split_modes(segs), dut.latency))


@pytest.mark.parametrize("lr_div_max", [2 ** 34, 2 ** 40])
def test_sgd_update_ice40_widths(rng, lr_div_max):
    """The iCE40 parameter set (16-bit weights, 32-bit gradients); divisors beyond
    2**31 are clamped (quotient 0 for every gradient)."""
    case = U.sgd_case(rng, 600, weight_width=16, grad_width=32, lr_div_max=lr_div_max,
                      decay_max=2 ** 15)
    assert case.dut.signature.members["d_g"].shape.width == 32
    check_case(case)


def test_sgd_update_narrow(rng):
    check_case(U.sgd_case(rng, 600, weight_width=16, grad_width=40, lr_div_max=2 ** 34,
                          decay_max=2 ** 15))
