"""MacArray (hw/array/mac_array.py) against exact integer matrix products.

The bench (tests/support/benches/tb_mac_array.py) streams operand beats into the
array on Verilator and returns the drained result rows; the golden tiles come
from golden.arith.exact_matmul.
"""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest
from amaranth.hdl import Const, UnusedElaboratable

from golden.arith import exact_matmul
from hw.vendor.ecp5_dsp import sim_model, with_sim_model
from hw.array.mac_array import MacArray, pipeline_latency
from hw.contract.widths import ACC_WIDTH, ACTIVATION_WIDTH, WEIGHT_WIDTH
from sim.harness import run_cocotb, verilog_of
from tests.support import BENCHES

TB_MAC = BENCHES / "tb_mac_array.py"

#: rows, cols, a_width, b_width, acc_width
DEFAULT_4X4 = dict(rows=4, cols=4, a_width=ACTIVATION_WIDTH, b_width=WEIGHT_WIDTH, acc_width=ACC_WIDTH)
NARROW_3X5 = dict(rows=3, cols=5, a_width=8, b_width=8, acc_width=20)


# --------------------------------------------------------------------------- tiling

def tiles_of_product(lhs: np.ndarray, rhs: np.ndarray, rows: int, cols: int):
    """Cut ``lhs @ rhs`` into array tiles: [(a_beats (k x rows), b_beats (k x cols), tile)].

    Beat ``k`` of a tile carries ``lhs[row block, k]`` and ``rhs[k, col block]``; edge
    blocks are padded with zeros (their padded results are zero too).
    """
    m, k = lhs.shape
    k2, n = rhs.shape
    assert k == k2
    full = exact_matmul(lhs, rhs)
    tiles = []
    for r0 in range(0, m, rows):
        for c0 in range(0, n, cols):
            a = np.zeros((rows, k), np.int64)
            b = np.zeros((k, cols), np.int64)
            a[: min(rows, m - r0)] = lhs[r0:r0 + rows]
            b[:, : min(cols, n - c0)] = rhs[:, c0:c0 + cols]
            tile = np.zeros((rows, cols), np.int64)
            tile[: min(rows, m - r0), : min(cols, n - c0)] = full[r0:r0 + rows, c0:c0 + cols]
            tiles.append((a.T.copy(), b, tile))
    return tiles


def forward_tiles(x, w, rows, cols):
    """z = X @ W.T: stream over in-features."""
    return tiles_of_product(x, w.T, rows, cols)


def backprop_tiles(e, w, rows, cols):
    """d = E @ W: stream over out-features."""
    return tiles_of_product(e, w, rows, cols)


def gradient_tiles(e, x, rows, cols):
    """G = E.T @ X: stream over the batch."""
    return tiles_of_product(e.T, x, rows, cols)


def schedule(tiles):
    """Vectors for the bench and the expected rows in drain order."""
    a = np.concatenate([t[0] for t in tiles])
    b = np.concatenate([t[1] for t in tiles])
    first = np.concatenate([np.eye(1, len(t[0]), 0, dtype=np.int64)[0] for t in tiles])
    last = np.concatenate([np.eye(1, len(t[0]), len(t[0]) - 1, dtype=np.int64)[0] for t in tiles])
    expected = np.concatenate([t[2] for t in tiles])
    return {"a": a, "b": b, "first": first, "last": last}, expected


def _toplevel(config):
    return "mac_array_{rows}x{cols}_{a_width}x{b_width}_{acc_width}_{mul}".format(
        mul=config.get("multiplier", "dsp"), **config)


def _design(config):
    """Verilog of the array for Verilator; with multiplier="ecp5_dsp", plus the MULT18X18D
    behavioural model (hw/vendor/ecp5_dsp.py) that stands in for the hard block."""
    return with_sim_model(verilog_of(MacArray(**config), _toplevel(config)))


def run_mac(config, tiles, **patterns):
    vectors, expected = schedule(tiles)
    vectors.update({name: np.asarray(p, np.int64) for name, p in patterns.items()})
    run = run_cocotb(_design(config), _toplevel(config),
                     TB_MAC, vectors=vectors, params=config)
    out = run.outputs
    n_tiles = len(tiles)
    rows = config["rows"]
    assert out["rows"].shape == expected.shape
    np.testing.assert_array_equal(out["index"], np.tile(np.arange(rows), n_tiles))
    np.testing.assert_array_equal(out["last"], np.tile(np.arange(rows) == rows - 1, n_tiles))
    return out, expected, vectors


def random_operands(rng, shape, width):
    return rng.integers(-2 ** (width - 1), 2 ** (width - 1), size=shape, dtype=np.int64)


def random_beat_count(rng, k_min, k_max):
    return int(rng.integers(max(k_min, 1), k_max + 1))


# --------------------------------------------------------------------------- Verilator tests

@pytest.mark.parametrize("multiplier", ["dsp", "ecp5_dsp"])
def test_three_products_match_exact_matmul(rng, multiplier):
    """>= 10,000 dot products of random full-range operands, all three NITRO-D products."""
    cfg = {**DEFAULT_4X4, "multiplier": multiplier}
    rows, cols, aw, bw = cfg["rows"], cfg["cols"], cfg["a_width"], cfg["b_width"]
    tiles = []
    kinds = {"forward": 0, "backprop": 0, "gradient": 0}
    while sum(kinds.values()) < 10_000:
        # Small layers, odd sizes so that edge tiles are padded; contraction lengths >= rows + 1.
        batch = int(rng.integers(5, 10))
        n_in = int(rng.integers(rows + 1, 14))
        n_out = int(rng.integers(3, 10))
        x = random_operands(rng, (batch, n_in), aw)          # activations
        w = random_operands(rng, (n_out, n_in), bw)          # weights
        e = random_operands(rng, (batch, n_out), aw)          # errors (narrow side in a)
        new = {"forward": (forward_tiles(x, w, rows, cols), batch * n_out)}
        if n_out >= rows + 1:
            new["backprop"] = (backprop_tiles(e, w, rows, cols), batch * n_in)
        if batch >= rows + 1:
            x_wide = random_operands(rng, (batch, n_in), bw)
            new["gradient"] = (gradient_tiles(e, x_wide, rows, cols), n_out * n_in)
        for kind, (kind_tiles, n_products) in new.items():
            tiles += kind_tiles
            kinds[kind] += n_products     # real dot products (padding of edge tiles not counted)
    assert min(kinds.values()) > 2_000, kinds
    out, expected, vectors = run_mac(cfg, tiles)
    np.testing.assert_array_equal(out["rows"], expected)
    assert not out["overflow"].any() and out["sticky_overflow"] == 0
    assert len(out["accept_cycle"]) == len(vectors["a"])


@pytest.mark.parametrize("multiplier", ["dsp", "ecp5_dsp"])
def test_sustained_throughput_one_beat_per_cycle(rng, multiplier):
    """N accumulate beats take exactly N cycles when tiles have >= stream_beats beats."""
    cfg = {**DEFAULT_4X4, "multiplier": multiplier}
    rows, cols = cfg["rows"], cfg["cols"]
    stream_beats = MacArray(**cfg).stream_beats
    n_beats = 0
    tiles = []
    while n_beats < 3_000:
        k = random_beat_count(rng, stream_beats, 3 * stream_beats)
        lhs = random_operands(rng, (rows, k), cfg["a_width"])
        rhs = random_operands(rng, (k, cols), cfg["b_width"])
        tiles += tiles_of_product(lhs, rhs, rows, cols)
        n_beats += k
    out, expected, _ = run_mac(cfg, tiles)
    np.testing.assert_array_equal(out["rows"], expected)
    cycles = out["accept_cycle"][-1] - out["accept_cycle"][0] + 1
    assert cycles == n_beats, f"{n_beats} beats took {cycles} cycles"
    # The last tile drains latency + rows cycles after its last beat (bench overhead aside).
    latency = pipeline_latency(cfg["a_width"], cfg["b_width"], cfg.get("multiplier", "dsp"))
    assert out["cycles"] - out["accept_cycle"][-1] <= latency + rows + 1


@pytest.mark.parametrize("multiplier", ["dsp"])
def test_short_tiles_wait_only_for_the_bank(rng, multiplier):
    """Back to back, a tile of k beats takes exactly max(k, stream_beats) cycles: only its last
    beat waits, and only until the previous tile has left the result bank."""
    cfg = {**DEFAULT_4X4, "multiplier": multiplier}
    rows, cols = cfg["rows"], cfg["cols"]
    stream_beats = MacArray(**cfg).stream_beats
    ks = [k for k in (1, 2, rows, stream_beats - 1, stream_beats, stream_beats + 1)
          for _ in range(3)]
    tiles = []
    for k in ks:
        tiles += tiles_of_product(random_operands(rng, (rows, k), cfg["a_width"]),
                                  random_operands(rng, (k, cols), cfg["b_width"]), rows, cols)
    out, expected, vectors = run_mac(cfg, tiles)
    np.testing.assert_array_equal(out["rows"], expected)
    last_accepts = out["accept_cycle"][np.flatnonzero(vectors["last"])]
    np.testing.assert_array_equal(np.diff(last_accepts),
                                  [max(k, stream_beats) for k in ks[1:]])


def extreme_tiles(cfg, rng):
    rows, cols, aw, bw = cfg["rows"], cfg["cols"], cfg["a_width"], cfg["b_width"]
    a_min, a_max, b_min, b_max = -2 ** (aw - 1), 2 ** (aw - 1) - 1, -2 ** (bw - 1), 2 ** (bw - 1) - 1
    tiles = []
    for k in (1, 2, rows, rows + 1, 3 * rows):
        for a_val, b_val in [(a_min, b_min), (a_min, b_max), (a_max, b_min), (a_max, b_max),
                             (0, b_min), (a_min, 0), (0, 0), (-1, -1), (1, b_min)]:
            tiles += tiles_of_product(np.full((rows, k), a_val), np.full((k, cols), b_val), rows, cols)
        # extremes mixed at random, so every element sees a different sequence
        choices_a = np.array([a_min, a_max, 0, -1, 1])
        choices_b = np.array([b_min, b_max, 0, -1, 1])
        tiles += tiles_of_product(rng.choice(choices_a, (rows, k)), rng.choice(choices_b, (k, cols)), rows, cols)
    return tiles


@pytest.mark.parametrize("multiplier", ["dsp", "ecp5_dsp"])
def test_corner_cases_extreme_operands(rng, multiplier):
    """-2**(w-1), 2**(w-1)-1, 0 and +-1 operands; tiles of 1 to 3*rows beats back to back."""
    cfg = {**DEFAULT_4X4, "multiplier": multiplier}
    tiles = extreme_tiles(cfg, rng)
    out, expected, _ = run_mac(cfg, tiles)
    np.testing.assert_array_equal(out["rows"], expected)
    assert not out["overflow"].any() and out["sticky_overflow"] == 0


@pytest.mark.parametrize("multiplier", ["dsp", "ecp5_dsp", "dsp-9x24", "ecp5_dsp-9x24"])
def test_stalls_bubbles_and_backpressure(rng, multiplier):
    """Short tiles (last beats wait for the bank), gaps in the operand stream and a consumer
    that is not always ready: results stay exact and in order."""
    cfg = {**NARROW_3X5, "multiplier": multiplier}
    if multiplier.endswith("-9x24"):    # the Trainer's widths: b's high bits in LUTs
        cfg.update(multiplier=multiplier[:-5], a_width=9, b_width=24, acc_width=40)
    rows, cols = cfg["rows"], cfg["cols"]
    tiles = extreme_tiles(cfg, rng)
    for _ in range(150):
        k = random_beat_count(rng, 1, 2 * rows + 2)
        tiles += tiles_of_product(random_operands(rng, (rows, k), cfg["a_width"]),
                                  random_operands(rng, (k, cols), cfg["b_width"]), rows, cols)
    valid_pattern = (rng.random(97) < 0.8).astype(np.int64)
    ready_pattern = (rng.random(89) < 0.6).astype(np.int64)
    valid_pattern[0] = ready_pattern[0] = 1
    out, expected, _ = run_mac(cfg, tiles, valid_pattern=valid_pattern, ready_pattern=ready_pattern)
    np.testing.assert_array_equal(out["rows"], expected)
    assert not out["overflow"].any() and out["sticky_overflow"] == 0


@pytest.mark.parametrize("multiplier", ["dsp", "ecp5_dsp"])
def test_overflow_is_flagged_not_wrapped(multiplier):
    """acc_width = 20 with 8 x 8 operands, accumulators in [-2**19, 2**19 - 1]: tiles that end
    exactly on or next to the bounds fit, one step further is flagged. The flag is per tile in
    the result rows, and sticky on the ``overflow`` output."""
    cfg = {**NARROW_3X5, "multiplier": multiplier}
    rows, cols = cfg["rows"], cfg["cols"]
    assert cfg["acc_width"] == 20 and cfg["a_width"] == cfg["b_width"] == 8

    def tile(a_column, b_column):
        """Every element sees sum(a_column * b_column)."""
        a_column, b_column = np.asarray(a_column), np.asarray(b_column)
        return tiles_of_product(np.tile(a_column, (rows, 1)), np.tile(b_column[:, None], (1, cols)), rows, cols)

    columns = [  # (a column, b column) of each tile
        ([3, -4], [5, 6]),
        ([-128] * 31, [-128] * 31),              # 31 * 2**14 = 507904: fits
        ([-128] * 33, [127] * 32 + [32]),        # -128 * 4096 = -2**19 exactly: fits
        ([-128] * 32, [-128] * 32),              # 32 * 2**14 = 2**19: overflows
        ([127, 1], [127, -1]),                   # a fresh tile is clean again
        ([-128] * 33, [127] * 32 + [33]),        # -2**19 - 128: overflows
        ([-128] * 40, [-128] * 32 + [127] * 8),  # leaves the range and comes back: flagged
        ([0], [0]),
    ]
    # Golden: a tile overflows when any partial sum leaves [-2**19, 2**19 - 1].
    bound = 2 ** (cfg["acc_width"] - 1)
    partial_sums = [np.cumsum(np.multiply(a, b)) for a, b in columns]
    flags = [bool(((p < -bound) | (p >= bound)).any()) for p in partial_sums]
    assert flags == [False, False, False, True, False, True, True, False]
    cases = [(tile(a, b), flag) for (a, b), flag in zip(columns, flags)]
    tiles = [t for case, _ in cases for t in case]
    vectors, expected = schedule(tiles)
    run = run_cocotb(_design(cfg), _toplevel(cfg),
                     TB_MAC, vectors=vectors, params=cfg)
    out = run.outputs
    tile_overflow = out["overflow"].reshape(len(tiles), rows)
    assert (tile_overflow == tile_overflow[:, :1]).all()      # one flag per tile, on every row
    assert tile_overflow[:, 0].astype(bool).tolist() == [flag for _, flag in cases]
    assert out["sticky_overflow"] == 1
    ok = np.repeat(tile_overflow[:, 0] == 0, rows)
    np.testing.assert_array_equal(out["rows"][ok], expected[ok])


# --------------------------------------------------------------------------- Amaranth simulator

async def _offer_beats(ctx, dut, vectors):
    """Amaranth testbench: offer each beat of ``vectors`` until the array takes it."""
    for a, b, first, last in zip(vectors["a"].tolist(), vectors["b"].tolist(),
                                 vectors["first"].tolist(), vectors["last"].tolist()):
        ctx.set(dut.operands.payload, {"a": a, "b": b, "first": first, "last": last})
        ctx.set(dut.operands.valid, 1)
        await ctx.tick().until(dut.operands.ready)
    ctx.set(dut.operands.valid, 0)


@pytest.mark.parametrize("rows, cols, a_width, b_width, acc_width", [
    (3, 2, 9, 24, 40),   # loss error (9 bits) x back-propagated error width (24 bits)
    (1, 1, 6, 7, 16),
])
def test_amaranth_simulator_small_tiles(rng, rows, cols, a_width, b_width, acc_width):
    """The same array in Amaranth's own simulator: tiles of 6, 1 and 2 beats."""
    from amaranth.sim import Simulator

    dut = MacArray(rows=rows, cols=cols, a_width=a_width, b_width=b_width, acc_width=acc_width)
    tiles = []
    for k in (6, 1, 2):
        tiles += tiles_of_product(random_operands(rng, (rows, k), a_width),
                                  random_operands(rng, (k, cols), b_width), rows, cols)
    vectors, expected = schedule(tiles)
    got = []

    async def bench(ctx):
        ctx.set(dut.results.ready, 1)
        await _offer_beats(ctx, dut, vectors)

    async def collect(ctx):
        async for _, _, valid, ready, payload in ctx.tick().sample(
                dut.results.valid, dut.results.ready, dut.results.payload):
            if valid and ready:
                got.append(list(payload.row))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.add_process(collect)
    sim.run_until(1e-6 * 60)
    np.testing.assert_array_equal(np.array(got), expected)


class _NoFlowControl(MacArray):
    """A MacArray whose last beats never wait: a tile can finish while the bank still
    shifts the previous one out, and rows can meet a full result FIFO."""

    def _last_beat_may_enter(self, in_flight):
        return Const(1)


@pytest.mark.parametrize("array_class", [MacArray, _NoFlowControl])
def test_a_tile_finishing_on_a_full_bank_is_flagged(rng, array_class):
    """tile_lost watches the flow control: one-beat tiles while the results are held back
    never raise it on the real array, and raise it (and lose tiles) without the rule."""
    from amaranth.sim import Simulator

    rows = cols = 2
    dut = array_class(rows=rows, cols=cols, a_width=8, b_width=8, acc_width=20)
    tiles = []
    for _ in range(6):
        tiles += tiles_of_product(random_operands(rng, (rows, 1), 8),
                                  random_operands(rng, (1, cols), 8), rows, cols)
    vectors, expected = schedule(tiles)
    got, lost = [], []

    async def bench(ctx):
        await _offer_beats(ctx, dut, vectors)

    async def drain(ctx):
        await ctx.tick().repeat(15)              # results held back: the bank stays full
        ctx.set(dut.results.ready, 1)

    async def collect(ctx):
        async for _, _, valid, ready, payload, tile_lost in ctx.tick().sample(
                dut.results.valid, dut.results.ready, dut.results.payload, dut.tile_lost):
            if valid and ready:
                got.append(list(payload.row))
            lost.append(tile_lost)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.add_testbench(drain)
    sim.add_process(collect)
    sim.run_until(1e-6 * 80)
    if array_class is MacArray:
        assert not any(lost)
        np.testing.assert_array_equal(np.array(got), expected)
    else:
        assert sum(lost) >= 1
        assert len(got) < len(expected)          # the lost tiles never came out


def test_rejects_accumulator_narrower_than_product():
    with warnings.catch_warnings():
        # the half-built component is garbage: do not let it warn in a later test
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError):
            MacArray(a_width=8, b_width=18, acc_width=25)
        gc.collect()


# --------------------------------------------------------------------------- ECP5 DSP mode

def test_ecp5_dsp_full_width_operands(rng):
    """18 x 18 operands (the MULT18X18D's full width, no sign extension), extremes included,
    with stalls and back-pressure."""
    cfg = dict(rows=2, cols=3, a_width=18, b_width=18, acc_width=44, multiplier="ecp5_dsp")
    rows, cols = cfg["rows"], cfg["cols"]
    tiles = extreme_tiles(cfg, rng)
    for _ in range(60):
        k = random_beat_count(rng, 1, 2 * rows + 2)
        tiles += tiles_of_product(random_operands(rng, (rows, k), 18),
                                  random_operands(rng, (k, cols), 18), rows, cols)
    valid_pattern = (rng.random(31) < 0.8).astype(np.int64)
    ready_pattern = (rng.random(29) < 0.7).astype(np.int64)
    valid_pattern[0] = ready_pattern[0] = 1
    out, expected, _ = run_mac(cfg, tiles, valid_pattern=valid_pattern, ready_pattern=ready_pattern)
    np.testing.assert_array_equal(out["rows"], expected)
    assert not out["overflow"].any() and out["sticky_overflow"] == 0


def test_ecp5_dsp_instantiates_one_mult18x18d_per_element():
    array = MacArray(rows=4, cols=4, multiplier="ecp5_dsp")
    text = verilog_of(array, "mac_ecp5")
    assert text.count("MULT18X18D #(") == 16
    for reg in ("INPUTA", "INPUTB", "PIPELINE", "OUTPUT"):
        assert text.count(f'.REG_{reg}_CLK("CLK0")') == 16
    assert "module MULT18X18D" not in text          # the model is for simulation only
    assert "module MULT18X18D" in with_sim_model(text)
    assert with_sim_model(with_sim_model(text)).count("module MULT18X18D") == 1
    assert array.latency == pipeline_latency(multiplier="ecp5_dsp")
    assert "module MULT18X18D" in sim_model()


def test_ecp5_dsp_rejects_operands_wider_than_18_bits():
    """Beyond 18 bits only ``b`` is taken, up to 25 (its 8 high bits in LUTs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError):
            MacArray(a_width=19, b_width=18, acc_width=40, multiplier="ecp5_dsp")
        with pytest.raises(ValueError):
            MacArray(a_width=9, b_width=26, acc_width=40, multiplier="ecp5_dsp")
        gc.collect()
