"""SerialDivider and SerialPost (hw/units/serial_divider.py, hw/units/serial_post.py) on Amaranth's
simulator.

The divider: exact quotient and remainder on random and corner operands (whole-width and
left-aligned short dividends, divisor 0), ``done`` exactly :meth:`SerialDivider.cycles` after
the start cycle, the handshake (``ready``, a one-cycle ``done``, results held until the next
start, inputs sampled only at the start).

SerialPost: every op bit-exact against golden (``nitro_scale``, ``nitro_relu``,
``relu_codes``, ``tdiv``, ``sgd_update``, composed as ``IsaMachine.execute`` composes them),
with the BACKWARD and SGD saturations and their flags, every inv_slope (and unsupported ones,
which act as 4), every code, ``target`` and ``zero``; random operands plus the corners of
every width; the cycle count of every value equal to :meth:`SerialPost.cycles`.
"""

from __future__ import annotations

import gc
import random
import warnings

import numpy as np
import pytest
from amaranth.hdl import Shape, UnusedElaboratable
from amaranth.sim import Simulator

from golden.arith import ONE_HOT_VALUE, RELU_MEAN_CORRECTION, nitro_relu, nitro_scale, tdiv
from golden.optim import sgd_update
from hw.contract import DEFAULT_SLOPE, Op, ReluCode, relu_codes
from hw.units.serial_divider import SerialDivider
from hw.units.serial_post import SerialPost

PASS, DIV, ZERO = ReluCode.PASS.value, ReluCode.DIV.value, ReluCode.ZERO.value
SLOPES = sorted(RELU_MEAN_CORRECTION)
UNSUPPORTED_SLOPES = [0, 1, 2, 6, 9, 17, 31]


def signed_range(width):
    return -(1 << (width - 1)), (1 << (width - 1)) - 1


def log_uniform(rnd, lo, hi):
    """An integer in [lo, hi], its bit length uniform (small and large values alike)."""
    bits = rnd.randint(max(1, lo.bit_length()), hi.bit_length())
    return min(hi, max(lo, rnd.randrange(1 << (bits - 1), 1 << bits)))


# --------------------------------------------------------------------------- SerialDivider

def divider_model(width, d_width, dividend, divisor, n_bits):
    """What the divider returns: the top ``n_bits`` of the dividend divided (module doc), the
    unprocessed low bits above the quotient; divisor 0: all ones, remainder mod 2**d_width."""
    x = dividend >> (width - n_bits)
    low = dividend & ((1 << (width - n_bits)) - 1)
    if divisor == 0:
        q, r = (1 << n_bits) - 1, x % (1 << d_width)
    else:
        q, r = divmod(x, divisor)
    return (low << n_bits) | q, r


def run_divider(dut, jobs, seed=0):
    """Run ``(dividend, divisor, n_bits)`` jobs; check the handshake and the latency of each;
    return the (quotient, remainder) pairs."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    results = []

    async def bench(ctx):
        rnd = random.Random(seed)
        back_to_back = False
        for dividend, divisor, n_bits in jobs:
            if not back_to_back:
                assert ctx.get(dut.ready) == 1
            ctx.set(dut.dividend, dividend)
            ctx.set(dut.divisor, divisor)
            ctx.set(dut.n_bits, n_bits)
            ctx.set(dut.start, 1)
            await ctx.tick()
            # the operands were sampled: scramble them, and a start while busy is ignored
            ctx.set(dut.dividend, rnd.getrandbits(dut.width))
            ctx.set(dut.divisor, rnd.getrandbits(dut.d_width))
            ctx.set(dut.n_bits, rnd.randint(1, dut.width))
            ctx.set(dut.start, rnd.random() < 0.5)
            cycles = 1
            while not ctx.get(dut.done):
                assert ctx.get(dut.ready) == 0
                await ctx.tick()
                cycles += 1
                assert cycles <= dut.width + 1, "no done"
            assert cycles == dut.cycles(n_bits), (cycles, n_bits)
            assert ctx.get(dut.ready) == 1
            got = (ctx.get(dut.quotient), ctx.get(dut.remainder))
            results.append(got)
            back_to_back = rnd.random() < 0.5
            if back_to_back:                # the next division starts in the done cycle
                continue
            ctx.set(dut.start, 0)
            for _ in range(rnd.randint(1, 2)):   # done pulses once; results held
                await ctx.tick()
                assert ctx.get(dut.done) == 0 and ctx.get(dut.ready) == 1
                assert (ctx.get(dut.quotient), ctx.get(dut.remainder)) == got

    sim.add_testbench(bench)
    sim.run()
    return results


def check_divider(dut, jobs, seed=0):
    got = run_divider(dut, jobs, seed)
    for (dividend, divisor, n_bits), (q, r) in zip(jobs, got):
        exp = divider_model(dut.width, dut.d_width, dividend, divisor, n_bits)
        assert (q, r) == exp, (dividend, divisor, n_bits, (q, r), exp)


def divider_jobs(width, d_width, n_random, rnd):
    """Whole-width divisions: corners (extremes, exact multiples and their neighbours,
    divisors above the dividend) and random operands of random bit lengths."""
    x_max, d_max = (1 << width) - 1, (1 << d_width) - 1
    divisors = {d for d in (1, 2, 3, d_max, d_max - 1, d_max >> 1) if 1 <= d <= d_max}
    jobs = []
    for d in sorted(divisors):
        for x in (0, 1, d - 1, d, d + 1, x_max, x_max - 1, 1 << (width - 1)):
            if 0 <= x <= x_max:
                jobs.append((x, d, width))
        for k in (1, 2, x_max // d):
            for x in (k * d - 1, k * d, k * d + 1):
                if 0 <= x <= x_max:
                    jobs.append((x, d, width))
    for _ in range(n_random):
        jobs.append((log_uniform(rnd, 0, x_max) if rnd.random() < 0.7
                     else rnd.randint(0, x_max), log_uniform(rnd, 1, d_max), width))
    return jobs


@pytest.mark.parametrize("width,d_width,n_random", [(36, 36, 150), (13, 6, 250), (8, 12, 150),
                                                    (1, 1, 4)])
def test_serial_divider_exact(width, d_width, n_random):
    dut = SerialDivider(width, d_width)
    assert dut.latency == width + 1 == dut.cycles(width)
    rnd = random.Random(width * 100 + d_width)
    check_divider(dut, divider_jobs(width, d_width, n_random, rnd), seed=width)


def test_serial_divider_small_exhaustive():
    """Every 6-bit dividend by every 4-bit divisor."""
    dut = SerialDivider(6, 4)
    jobs = [(x, d, 6) for d in range(1, 16) for x in range(64)]
    check_divider(dut, jobs, seed=3)


def test_serial_divider_short_dividends():
    """Left-aligned k-bit dividends with n_bits = k: quotient floor(x / d) as a whole in
    k + 1 cycles; and a dividend with non-zero unprocessed bits (they end up on top)."""
    width, d_width = 20, 9
    dut = SerialDivider(width, d_width)
    rnd = random.Random(7)
    jobs = []
    for k in (1, 2, 7, 13, 19, 20):
        for _ in range(12):
            x, d = rnd.getrandbits(k), log_uniform(rnd, 1, (1 << d_width) - 1)
            jobs.append((x << (width - k), d, k))
        jobs.append((((1 << k) - 1) << (width - k), 1, k))
    jobs += [(rnd.getrandbits(width), rnd.randint(1, 511), k) for k in (3, 11)]
    check_divider(dut, jobs, seed=1)
    for dividend, divisor, k in jobs[:-2]:
        q, _ = divider_model(width, d_width, dividend, divisor, k)
        assert q == (dividend >> (width - k)) // divisor


def test_serial_divider_divisor_zero():
    """Divisor 0 (the caller's error): all ones, the remainder the dividend mod 2**d_width."""
    dut = SerialDivider(10, 4)
    jobs = [(x, 0, 10) for x in (0, 1, 37, 1023)] + [(0b1011 << 6, 0, 4)]
    check_divider(dut, jobs, seed=2)
    got = run_divider(dut, jobs[:2], seed=2)
    assert got == [(1023, 0), (1023, 1)]


def test_serial_divider_rejects_bad_sizes():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)    # built, never elaborated
        with pytest.raises(ValueError):
            SerialDivider(0, 4)
        with pytest.raises(ValueError):
            SerialDivider(8, 4).cycles(9)
        gc.collect()


# --------------------------------------------------------------------------- SerialPost golden

def post_expected(dut, c):
    """(value, code_out, backerr, sgd_overflow) for case ``c``, from golden as
    nitrod/isa_model.py's IsaMachine.execute composes it."""
    op = c["op"]
    if c["zero"] or op not in (Op.FORWARD, Op.LOSS, Op.BACKWARD, Op.SGD):
        return 0, ZERO, 0, 0
    a = c["inv_slope"] if c["inv_slope"] in RELU_MEAN_CORRECTION else DEFAULT_SLOPE
    acc = c["acc"]
    if op == Op.FORWARD:
        y = int(nitro_scale(acc, c["divisor"]))
        return int(nitro_relu(y, a)), int(relu_codes(y)), 0, 0
    if op == Op.LOSS:
        y = int(nitro_scale(acc, c["divisor"]))
        return y - ONE_HOT_VALUE * c["target"], ZERO, 0, 0
    if op == Op.BACKWARD:
        lo, hi = signed_range(dut.err_width)
        backerr = int(not lo <= acc <= hi)
        sat = min(max(acc, lo), hi)
        code = c["code"]
        d = 0 if code == ZERO else (int(tdiv(sat, a)) if code == DIV else sat)
        return d, ZERO, backerr, 0
    w_new = int(sgd_update(np.array([c["w_old"]], dtype=np.int64),
                           np.array([acc], dtype=np.int64), c["d_g"], 1, c["d_w"])[0])
    lo, hi = signed_range(dut.wgt_width)
    overflow = int(not lo <= w_new <= hi)
    return min(max(w_new, lo), hi), ZERO, 0, overflow


INPUTS = ("op", "acc", "divisor", "inv_slope", "code", "w_old", "d_g", "d_w", "target", "zero")


def random_inputs(dut, rnd):
    """Every input port at random (what the caller might leave on the unused ones)."""
    return {"op": rnd.randint(0, 7),
            "acc": rnd.randint(*signed_range(dut.acc_width)),
            "divisor": rnd.getrandbits(dut.fan_in_width),
            "inv_slope": rnd.getrandbits(5),
            "code": rnd.getrandbits(2),
            "w_old": rnd.randint(*signed_range(dut.wgt_width)),
            "d_g": rnd.getrandbits(dut.d_g_width),
            "d_w": rnd.getrandbits(dut.d_w_width),
            "target": rnd.getrandbits(1),
            "zero": rnd.getrandbits(1)}


def run_post(dut, cases, seed=0):
    """Drive ``cases`` (dicts of the inputs) one after the other, holding the inputs from
    start to done; half of the time start the next one in the done cycle, otherwise scramble
    the inputs after done and check the outputs hold.  Returns, per case, the outputs and
    the cycles from the start cycle to done."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    results = []
    bound = dut.max_cycles + 1

    def outputs(ctx):
        return (ctx.get(dut.value), ctx.get(dut.code_out), ctx.get(dut.backerr),
                ctx.get(dut.sgd_overflow))

    async def bench(ctx):
        rnd = random.Random(seed)
        for c in cases:
            assert ctx.get(dut.ready) == 1
            for name in INPUTS:
                ctx.set(getattr(dut, name), c[name])
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles = 1
            while not ctx.get(dut.done):
                assert ctx.get(dut.ready) == 0
                await ctx.tick()
                cycles += 1
                assert cycles <= bound, "no done"
            assert ctx.get(dut.ready) == 1
            got = outputs(ctx)
            results.append((got, cycles))
            if rnd.random() < 0.5:
                continue                    # the next case starts in the done cycle
            for name, v in random_inputs(dut, rnd).items():
                ctx.set(getattr(dut, name), v)
            for _ in range(rnd.randint(1, 2)):
                await ctx.tick()
                assert ctx.get(dut.done) == 0
                assert outputs(ctx) == got

    sim.add_testbench(bench)
    sim.run()
    return results


def fits_port(dut, name, value):
    shape = Shape.cast(dut.signature.members[name].shape)
    if shape.signed:
        lo, hi = signed_range(shape.width)
    else:
        lo, hi = 0, (1 << shape.width) - 1
    return lo <= value <= hi


def check_post(dut, cases, seed=0):
    for c in cases:                     # the generators stay inside the ports
        assert all(fits_port(dut, name, c[name]) for name in INPUTS), c
    results = run_post(dut, cases, seed)
    for c, (got, cycles) in zip(cases, results):
        exp = post_expected(dut, c)
        assert got == exp, ({k: c[k] for k in INPUTS}, got, exp)
        op = c["op"] if c["op"] in (Op.FORWARD, Op.LOSS, Op.BACKWARD, Op.SGD) else None
        expected_cycles = (dut.cycles(op, c["d_w"] != 0) if op is not None
                           else dut.cycles(Op.SGD))
        assert cycles == expected_cycles, (c, cycles, expected_cycles)
    return results


def case(dut, rnd, op, **fields):
    """A case for ``op``: the given fields, the others at random (as a caller might leave
    them), ``zero`` 0 unless given."""
    c = random_inputs(dut, rnd)
    c.update(op=int(op), zero=0)
    c.update(fields)
    return c


def any_slope(rnd):
    return rnd.choice(SLOPES) if rnd.random() < 0.9 else rnd.choice(UNSUPPORTED_SLOPES)


# --------------------------------------------------------------------------- case generators

def scale_cases(dut, rnd, op, n_random):
    """FORWARD or LOSS: accumulators around the multiples of SF = 256 f (rounding toward zero
    on both signs, the clip at 127), the extremes of acc_width, divisors 1 and max."""
    lo, hi = signed_range(dut.acc_width)
    f_max = (1 << dut.fan_in_width) - 1
    cases = []
    fan_ins = [f for f in (1, 2, 3, 7, 100, f_max) if f <= f_max]
    for f in fan_ins:
        sf = 256 * f
        accs = [0, 1, -1, 255, -255, 256, -256, lo, hi, lo + 1, hi - 1]
        for k in (1, 2, 5, 63, 64, 126, 127, 128, 129):
            for dz in (-1, 0, 1, sf - 1, -(sf - 1)):
                accs += [k * sf + dz, -(k * sf + dz)]
        for acc in accs:
            if lo <= acc <= hi:
                cases.append(case(dut, rnd, op, acc=acc, divisor=f, inv_slope=any_slope(rnd),
                                  target=rnd.getrandbits(1)))
    for slope in SLOPES + UNSUPPORTED_SLOPES:       # every slope on the negative part
        for y in (-127, -126, -2 * slope - 1, -slope, -slope + 1, -1, 0, 126, 127):
            f = rnd.choice(fan_ins)
            acc = y * 256 * f - (rnd.randrange(256 * f) if y < 0 else -rnd.randrange(256 * f))
            if lo <= acc <= hi:
                cases.append(case(dut, rnd, op, acc=acc, divisor=f, inv_slope=slope))
    for _ in range(n_random):
        f = log_uniform(rnd, 1, f_max)
        r = rnd.random()
        if r < 0.6:                                 # mostly inside the clip
            acc = rnd.randint(-130 * 256 * f, 130 * 256 * f)
        elif r < 0.8:
            acc = rnd.randint(lo, hi)
        else:
            acc = log_uniform(rnd, 1, hi) * rnd.choice((-1, 1))
        cases.append(case(dut, rnd, op, acc=max(lo, min(hi, acc)), divisor=f,
                          inv_slope=any_slope(rnd), target=rnd.getrandbits(1)))
    return cases


def backward_cases(dut, rnd, n_random):
    """BACKWARD: every code and slope, accumulators at and beyond the err_width bounds,
    multiples of the slope and their neighbours (negative rounding), acc_width's extremes."""
    lo, hi = signed_range(dut.acc_width)
    elo, ehi = signed_range(dut.err_width)
    cases = []
    for code in (PASS, DIV, ZERO, 3):
        for slope in SLOPES + UNSUPPORTED_SLOPES[:3]:
            for acc in (0, 1, -1, slope - 1, slope, slope + 1, -slope + 1, -slope, -slope - 1,
                        -7 * slope - 1, 7 * slope + 1, elo, ehi, elo - 1, ehi + 1, elo + 1,
                        ehi - 1, lo, hi):
                cases.append(case(dut, rnd, Op.BACKWARD, acc=acc, code=code, inv_slope=slope))
    for _ in range(n_random):
        r = rnd.random()
        if r < 0.7:
            acc = rnd.randint(elo, ehi)
        elif r < 0.85:
            acc = log_uniform(rnd, 1, hi) * rnd.choice((-1, 1))
        else:
            acc = rnd.randint(lo, hi)
        cases.append(case(dut, rnd, Op.BACKWARD, acc=max(lo, acc), code=rnd.choice((0, 1, 1, 2)),
                          inv_slope=any_slope(rnd)))
    return cases


def sgd_cases(dut, rnd, n_random):
    """SGD: the extremes of w_old, g, d_g and d_w (0 = no decay, 1, max), results at and just
    beyond the weight range on both sides (the saturation bound), gradient quotients around
    2**wgt_width and the clip 2**(wgt_width + 1) - 1, negative rounding of both divisions."""
    lo, hi = signed_range(dut.acc_width)
    wlo, whi = signed_range(dut.wgt_width)
    ww = dut.wgt_width
    dg_max, dw_max = (1 << dut.d_g_width) - 1, (1 << dut.d_w_width) - 1
    cases = []

    def add(w, g, d_g, d_w):
        if lo <= g <= hi and wlo <= w <= whi:
            cases.append(case(dut, rnd, Op.SGD, acc=g, w_old=w, d_g=d_g, d_w=d_w))

    ws = [0, 1, -1, wlo, whi, wlo + 1, whi - 1]
    for w in ws:
        for d_w in (0, 1, 2, 3, dw_max):
            for d_g in (1, 2, 3, 1000, dg_max):
                for g in (0, 1, -1, lo, hi, d_g - 1, d_g, d_g + 1, -d_g + 1, -d_g, -d_g - 1):
                    add(w, g, d_g, d_w)
    # w' exactly at, and one beyond, the weight bounds (d_g 1, no decay: w' = w - g)
    for w in ws:
        for target in (whi, whi + 1, whi + 2, wlo, wlo - 1, wlo - 2, 0):
            add(w, w - target, 1, 0)
            d_g = rnd.randint(2, 50)                # and with rounding in the division
            add(w, (w - target) * d_g + rnd.choice((-1, 1)) * rnd.randrange(d_g), d_g, 0)
    # gradient quotients around the weight range and the clip
    for w in ws:
        for k in (1 << (ww - 1), 1 << ww, (1 << ww) + 1, (1 << (ww + 1)) - 1, 1 << (ww + 1),
                  (1 << (ww + 1)) + 1, 1 << (ww + 3)):
            for d_g in (1, 3, 1 << 10):
                for dz in (0, d_g - 1):
                    for sign in (1, -1):
                        add(w, sign * (k * d_g + dz), d_g, rnd.choice((0, 0, 1, 5, dw_max)))
    for _ in range(n_random):
        d_g = log_uniform(rnd, 1, dg_max)
        d_w = 0 if rnd.random() < 0.3 else log_uniform(rnd, 1, dw_max)
        w = rnd.randint(wlo, whi) if rnd.random() < 0.8 else rnd.choice(ws)
        r = rnd.random()
        if r < 0.5:                                 # steps within a few weight ranges
            g = rnd.randint(-4 << ww, 4 << ww) * d_g + rnd.randrange(d_g)
        elif r < 0.8:
            g = log_uniform(rnd, 1, hi) * rnd.choice((-1, 1))
        else:
            g = rnd.randint(lo, hi)
        add(w, max(lo, min(hi, g)), d_g, d_w)
    return cases


def sample(cases, n, rnd):
    """At most n of the cases (the corner lists are long; the simulator is slow)."""
    return cases if len(cases) <= n else rnd.sample(cases, n)


# --------------------------------------------------------------------------- SerialPost tests

@pytest.fixture(scope="module")
def post():
    return SerialPost()


def test_serial_post_ports_and_cycles(post):
    members = post.signature.members
    assert members["value"].shape.width == 24 and members["value"].shape.signed
    assert members["acc"].shape.width == 36 and members["w_old"].shape.width == 16
    assert members["d_g"].shape.width == 36 and members["d_w"].shape.width == 21
    assert members["divisor"].shape.width == 14
    assert post.cycles(Op.FORWARD) == 41
    assert post.cycles(Op.LOSS) == 32
    assert post.cycles(Op.BACKWARD) == 28
    assert post.cycles(Op.SGD) == 41
    assert post.cycles(Op.SGD, d_w_nonzero=True) == 58
    assert post.max_cycles == 58


@pytest.mark.parametrize("op", [Op.FORWARD, Op.LOSS])
def test_serial_post_scale(post, op):
    rnd = random.Random(int(op))
    cases = scale_cases(post, rnd, op, 300)
    check_post(post, sample(cases, 900, rnd), seed=int(op))


def test_serial_post_forward_codes_and_slopes(post):
    """Every y in [-127, 127] and beyond (codes PASS, DIV, ZERO) with every slope."""
    rnd = random.Random(11)
    cases = []
    for slope in SLOPES + [5, 0, 31]:
        for y in range(-130, 131, 3 if slope in (5, 0, 31) else 1):
            if slope in SLOPES and y % 2 and abs(y) < 120:
                continue
            f = rnd.choice((1, 3, 641))
            acc = y * 256 * f + (rnd.randrange(256 * f) * (1 if y >= 0 else -1))
            cases.append(case(post, rnd, Op.FORWARD, acc=acc, divisor=f, inv_slope=slope))
    results = check_post(post, cases, seed=11)
    assert {got[1] for got, _ in results} == {PASS, DIV, ZERO}


def test_serial_post_backward(post):
    rnd = random.Random(3)
    cases = backward_cases(post, rnd, 300)
    results = check_post(post, sample(cases, 900, rnd), seed=3)
    assert any(got[2] for got, _ in results) and not all(got[2] for got, _ in results)


def test_serial_post_sgd(post):
    rnd = random.Random(4)
    cases = sgd_cases(post, rnd, 300)
    results = check_post(post, sample(cases, 800, rnd), seed=4)
    flags = [got[3] for got, _ in results]
    assert any(flags) and not all(flags)


def test_serial_post_zero_and_unknown_ops(post):
    """zero masks every op (value 0, code ZERO, no flags, even for inputs that would set
    them); an op other than FORWARD..SGD gives the same, in cycles(Op.SGD)."""
    rnd = random.Random(5)
    lo, hi = signed_range(post.acc_width)
    cases = []
    for op in (Op.FORWARD, Op.LOSS, Op.BACKWARD, Op.SGD):
        for acc in (lo, hi, -3 * 256, 5):
            cases.append(case(post, rnd, op, acc=acc, zero=1, divisor=1, code=DIV, d_g=1,
                              d_w=rnd.choice((0, 3)), target=1, inv_slope=4))
    for op in (0, 5, 6, 7):
        cases.append(case(post, rnd, op, acc=rnd.randint(lo, hi), zero=rnd.getrandbits(1)))
    check_post(post, cases, seed=5)


def test_serial_post_mixed_ops_back_to_back(post):
    """Ops in random order, so each value starts from the previous op's state."""
    rnd = random.Random(6)
    pool = (scale_cases(post, rnd, Op.FORWARD, 60) + scale_cases(post, rnd, Op.LOSS, 60)
            + backward_cases(post, rnd, 60) + sgd_cases(post, rnd, 60))
    cases = sample(pool, 300, rnd)
    for c in rnd.sample(cases, 20):
        c["zero"] = 1
    check_post(post, cases, seed=6)


def test_serial_post_other_widths():
    """A narrow parameter set (every width different from the defaults)."""
    dut = SerialPost(acc_width=20, act_width=8, wgt_width=8, err_width=12, fan_in_width=5,
                     d_g_width=17, d_w_width=4)
    assert dut.value_width == 12
    rnd = random.Random(8)
    cases = (sample(scale_cases(dut, rnd, Op.FORWARD, 60), 150, rnd)
             + sample(scale_cases(dut, rnd, Op.LOSS, 60), 100, rnd)
             + sample(backward_cases(dut, rnd, 60), 150, rnd)
             + sample(sgd_cases(dut, rnd, 100), 250, rnd))
    rnd.shuffle(cases)
    check_post(dut, cases, seed=8)


def test_serial_post_rejects_bad_widths():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)    # built, never elaborated
        with pytest.raises(ValueError):
            SerialPost(acc_width=24, err_width=24)
        with pytest.raises(ValueError):
            SerialPost(acc_width=17, wgt_width=16, err_width=12)
        with pytest.raises(ValueError):
            SerialPost(act_width=8, err_width=8, wgt_width=8, acc_width=20)
        gc.collect()
