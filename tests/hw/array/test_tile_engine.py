"""TileEngine (hw/array/tile_engine.py): tiled matrix products from on-chip memories, against NumPy.

The bench (tests/support/benches/tb_tile_engine.py) loads the operand memories through the engine's
write ports, runs a list of instructions on Verilator and returns every result row with its tile
coordinates and the cycle counts.  Here a small "compiler" places the operand matrices in the
memories (zero-padded partial tiles, tile-major or k-major word order) and builds the
instructions; the expected tiles are NumPy int64 products.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
import pytest


from hw.array.mac_array import MacArray
from hw.array.tile_engine import TileEngine
from sim.harness import run_cocotb
from tests.support import BENCHES
from tests.support.engine_with_memories import EngineWithMemories

TB = BENCHES / "tb_tile_engine.py"

#: One array shared by the three products of a training step: a holds x (8 bits) or e (9 bits),
#: b holds weights (18 bits) or back-propagated errors (24 bits).
SHARED_4X4 = dict(rows=4, cols=4, a_width=9, b_width=24, acc_width=48, a_depth=128, b_depth=128)
NARROW_3X5 = dict(rows=3, cols=5, a_width=8, b_width=8, acc_width=20, a_depth=256, b_depth=256)


def make_engine(cfg) -> EngineWithMemories:
    return EngineWithMemories(cfg)


def toplevel(cfg) -> str:
    return "tile_engine_{rows}x{cols}_{a_width}x{b_width}_{acc_width}_{a_depth}_{b_depth}".format(**cfg)


def ceil_div(a, b):
    return -(-a // b)


def rand_width(rng, shape, width):
    return rng.integers(-2 ** (width - 1), 2 ** (width - 1), size=shape, dtype=np.int64)


# --------------------------------------------------------------------------- the "compiler"

@dataclass
class Image:
    """Contents of memories A and B, and the instructions that read them."""
    rows: int
    cols: int
    a: dict = field(default_factory=dict)     # address -> word (list of values)
    b: dict = field(default_factory=dict)
    a_top: int = 0
    b_top: int = 0
    instrs: list = field(default_factory=list)
    expected: list = field(default_factory=list)   # per instruction: (rows x cols tiles, tr, tc, index)

    @staticmethod
    def _place(mem, top, matrix_blocks, k_len, k_major, pad):
        """Store words[t][k] (t = tile index); return base, tile_stride, k_stride, new top."""
        n_tiles = len(matrix_blocks)
        base = top
        if k_major:       # words of one beat for all tiles are adjacent
            tile_stride, k_stride = 1, n_tiles + pad
        else:             # one tile's beats are adjacent
            tile_stride, k_stride = k_len + pad, 1
        for t, words in enumerate(matrix_blocks):
            for k in range(k_len):
                address = base + t * tile_stride + k * k_stride
                assert address not in mem
                mem[address] = words[k]
        span = max(n_tiles * tile_stride, k_len * k_stride) if k_len and n_tiles else 0
        return base, tile_stride, k_stride, top + span + pad

    def product(self, lhs, rhs, *, a_k_major=False, b_k_major=False, pad=0):
        """Add the instruction computing ``lhs @ rhs`` (lhs streams on a, rhs on b)."""
        lhs, rhs = np.asarray(lhs, np.int64), np.asarray(rhs, np.int64)
        p, k_len = lhs.shape
        k2, q = rhs.shape
        assert k_len == k2
        tiles_r, tiles_c = ceil_div(p, self.rows), ceil_div(q, self.cols)
        lhs_pad = np.zeros((tiles_r * self.rows, k_len), np.int64)
        lhs_pad[:p] = lhs
        rhs_pad = np.zeros((k_len, tiles_c * self.cols), np.int64)
        rhs_pad[:, :q] = rhs
        a_blocks = [lhs_pad[t * self.rows:(t + 1) * self.rows].T.tolist() for t in range(tiles_r)]
        b_blocks = [rhs_pad[:, t * self.cols:(t + 1) * self.cols].tolist() for t in range(tiles_c)]
        a_base, a_ts, a_ks, self.a_top = self._place(self.a, self.a_top, a_blocks, k_len, a_k_major, pad)
        b_base, b_ts, b_ks, self.b_top = self._place(self.b, self.b_top, b_blocks, k_len, b_k_major, pad)
        self.instrs.append(dict(a_base=a_base, a_tile_stride=a_ts, a_k_stride=a_ks,
                                b_base=b_base, b_tile_stride=b_ts, b_k_stride=b_ks,
                                k_len=k_len, tiles_r=tiles_r, tiles_c=tiles_c))
        full = lhs_pad @ rhs_pad        # int64, exact for the widths used here
        expect_rows, tr, tc, index = [], [], [], []
        if k_len:
            for r in range(tiles_r):
                for c in range(tiles_c):
                    for i in range(self.rows):
                        expect_rows.append(full[r * self.rows + i, c * self.cols:(c + 1) * self.cols])
                        tr.append(r), tc.append(c), index.append(i)
        self.expected.append((np.array(expect_rows, np.int64).reshape(-1, self.cols),
                              np.array(tr), np.array(tc), np.array(index)))
        return self.instrs[-1]

    def raw(self, **instr):
        """An instruction given field by field (no expected rows unless it is empty)."""
        self.instrs.append(instr)
        self.expected.append((np.zeros((0, self.cols), np.int64),) + (np.zeros(0, int),) * 3)


def run_engine(cfg, image: Image, *, ready_pattern=None, gap=0):
    engine = make_engine(cfg)
    names = [name for name, _ in engine.instr_layout]
    instr_fields = [[name, f.offset, f.width] for name, f in engine.instr_layout]
    result_fields = {name: [f.offset, f.width] for name, f in engine.result_layout}
    a_addr = sorted(image.a)
    b_addr = sorted(image.b)
    assert (not a_addr or a_addr[-1] < cfg["a_depth"]) and (not b_addr or b_addr[-1] < cfg["b_depth"])
    vectors = {
        "a_addr": np.array(a_addr, np.int64),
        "a_words": np.array([image.a[x] for x in a_addr], np.int64).reshape(len(a_addr), cfg["rows"]),
        "b_addr": np.array(b_addr, np.int64),
        "b_words": np.array([image.b[x] for x in b_addr], np.int64).reshape(len(b_addr), cfg["cols"]),
        "instrs": np.array([[ins.get(n, 0) for n in names] for ins in image.instrs], np.int64),
    }
    if ready_pattern is not None:
        vectors["ready_pattern"] = np.asarray(ready_pattern, np.int64)
    params = dict(rows=cfg["rows"], cols=cfg["cols"], a_width=cfg["a_width"], b_width=cfg["b_width"],
                  acc_width=cfg["acc_width"], instr_fields=instr_fields, result_fields=result_fields,
                  gap=gap)
    run = run_cocotb(engine, toplevel(cfg), TB, vectors=vectors, params=params)
    return run.outputs, engine


def check_results(out, image: Image, *, overflow_expected=None):
    """Every accumulator of every tile, the tile coordinates, row index and flags."""
    n_instr = len(image.instrs)
    for n in range(n_instr):
        rows, tr, tc, index = image.expected[n]
        mine = out["instr"] == n
        assert mine.sum() == len(rows), f"instruction {n}: {mine.sum()} rows, expected {len(rows)}"
        if not len(rows):
            continue
        np.testing.assert_array_equal(out["tr"][mine], tr, err_msg=f"instruction {n}: tr")
        np.testing.assert_array_equal(out["tc"][mine], tc, err_msg=f"instruction {n}: tc")
        np.testing.assert_array_equal(out["index"][mine], index, err_msg=f"instruction {n}: index")
        last = (index == image.rows - 1).astype(int)
        np.testing.assert_array_equal(out["last"][mine], last)
        final = np.zeros(len(rows), int)
        final[-1] = 1
        np.testing.assert_array_equal(out["final"][mine], final)
        got = out["rows"][mine]
        if overflow_expected is None:
            assert not out["overflow"][mine].any(), f"instruction {n}: unexpected overflow flag"
            np.testing.assert_array_equal(got, rows, err_msg=f"instruction {n}: accumulators")
        else:
            flags = out["overflow"][mine].astype(bool)
            np.testing.assert_array_equal(flags, overflow_expected[n], err_msg=f"instruction {n}: overflow")
            np.testing.assert_array_equal(got[~flags], rows[~flags])


def cycle_report(out, image: Image):
    """[(tiles, k_len, cycles)] per instruction; also checks the engine's counter against the bench."""
    hw = out["hw_cycles"]
    bench = out["done_cycle"] - out["accept_cycle"]
    np.testing.assert_array_equal(hw, bench)
    return [(ins["tiles_r"] * ins["tiles_c"], ins["k_len"], int(c)) for ins, c in zip(image.instrs, hw)]


# --------------------------------------------------------------------------- Verilator tests

@pytest.mark.parametrize("cfg", [SHARED_4X4, NARROW_3X5], ids=["4x4", "3x5"])
def test_training_step_products(rng, cfg, record_property):
    """The three products of a training step of a 7 -> 6 layer at batch 5 (odd sizes: padded
    partial tiles), random full-range operands, back to back; one beat per cycle throughout."""
    aw, bw = cfg["a_width"], cfg["b_width"]
    m, k, n = 5, 7, 6
    x = rand_width(rng, (m, k), aw)          # input activations (a side)
    w = rand_width(rng, (n, k), bw)          # weights (b side)
    e = rand_width(rng, (m, n), aw)          # error arriving at the layer (a side)
    d = rand_width(rng, (m, n), bw)          # back-propagated error (b side)
    image = Image(cfg["rows"], cfg["cols"])
    image.product(x, w.T)                                    # forward Z = X @ W.T, over features
    image.product(e, w, a_k_major=True, pad=1)               # back-prop E @ W, over outputs
    image.product(x.T, d, b_k_major=True)                    # gradient G.T = X.T @ D, over samples
    out, engine = run_engine(cfg, image)
    check_results(out, image)
    assert out["sticky_overflow"] == 0

    report = cycle_report(out, image)
    record_property("cycles", report)
    print(f"\n{cfg['rows']}x{cfg['cols']} (tiles, k_len, cycles): {report}")
    overheads = set()
    stream_beats = engine.mac.stream_beats
    for tiles, k_len, cycles in report:
        # only a tile shorter than stream_beats waits (for the array's result bank)
        overheads.add(cycles - k_len - (tiles - 1) * max(k_len, stream_beats))
        assert cycles == engine.instruction_cycles(tiles, k_len)
    # no bubble at tile switches: the overhead is one constant, independent of the tile count
    assert len(overheads) == 1, overheads
    overhead = overheads.pop()
    # the documented figure: accept + the first tile's load + fetch + the array's latency +
    # the last tile's other rows
    assert engine.mac.latency is not None
    assert overhead == engine.fixed_cycles == 2 + engine.fetch_latency + engine.mac.latency + cfg["rows"] - 1


def test_extreme_operands(rng):
    """Largest magnitudes of each width (-2**(w-1), 2**(w-1)-1) in every sign combination, long
    tiles (the biggest sums that fit), plus tiles mixing extremes with 0 and +-1."""
    cfg = SHARED_4X4
    rows, cols, aw, bw = cfg["rows"], cfg["cols"], cfg["a_width"], cfg["b_width"]
    a_ext = [-2 ** (aw - 1), 2 ** (aw - 1) - 1]
    b_ext = [-2 ** (bw - 1), 2 ** (bw - 1) - 1]
    k_len = 40                       # 40 * 2**8 * 2**23 < 2**47: fits acc_width 48
    lhs = np.array([[a] * k_len for a in a_ext for _ in range(2)], np.int64)          # 4 x k
    rhs = np.array([[b_ext[0], b_ext[1], b_ext[0], b_ext[1]]] * k_len, np.int64)      # k x 4
    image = Image(rows, cols)
    image.product(lhs, rhs)
    choices_a = np.array(a_ext + [0, -1, 1])
    choices_b = np.array(b_ext + [0, -1, 1])
    image.product(rng.choice(choices_a, (7, 11)), rng.choice(choices_b, (11, 9)), b_k_major=True)
    image.product(np.full((rows, 13), a_ext[0]), np.full((13, cols), b_ext[1]))   # most negative
    out, _ = run_engine(cfg, image)
    check_results(out, image)
    assert out["sticky_overflow"] == 0
    assert out["rows"].max() == k_len * a_ext[0] * b_ext[0]
    assert out["rows"].min() == k_len * a_ext[0] * b_ext[1]


def test_short_tiles_backpressure_and_empty(rng):
    """3 x 5 array: random shapes and layouts, including tiles of 1..rows beats (their last beats
    wait for the array's result bank), a consumer ready 60 % of the time, idle gaps between instructions and
    instructions with nothing to do."""
    cfg = NARROW_3X5
    image = Image(cfg["rows"], cfg["cols"])
    image.raw(a_base=0, a_tile_stride=0, a_k_stride=1, b_base=0, b_tile_stride=0, b_k_stride=1,
              k_len=0, tiles_r=2, tiles_c=2)
    for i in range(10):
        p, k, q = int(rng.integers(1, 9)), int(rng.integers(1, 10)), int(rng.integers(1, 12))
        if i < 3:
            k = i + 1
        image.product(rand_width(rng, (p, k), cfg["a_width"]), rand_width(rng, (k, q), cfg["b_width"]),
                      a_k_major=bool(rng.integers(2)), b_k_major=bool(rng.integers(2)),
                      pad=int(rng.integers(0, 3)))
    image.raw(a_base=1, a_tile_stride=1, a_k_stride=1, b_base=1, b_tile_stride=1, b_k_stride=1,
              k_len=3, tiles_r=0, tiles_c=1)
    ready = (rng.random(53) < 0.6).astype(np.int64)
    ready[0] = 1
    out, _ = run_engine(cfg, image, ready_pattern=ready, gap=2)
    check_results(out, image)
    assert out["sticky_overflow"] == 0
    assert out["hw_cycles"][0] == 1 and out["hw_cycles"][-1] == 1


def test_overflow_is_flagged_per_tile():
    """acc_width 20 with 8 x 8 operands: a tile of 32 beats of (-128)*(-128) reaches 2**19 and is
    flagged (on its rows and on the sticky flag); its neighbour tile is exact and clean."""
    cfg = NARROW_3X5
    rows, cols = cfg["rows"], cfg["cols"]
    k_len = 32
    lhs = np.full((rows, k_len), -128)
    rhs = np.concatenate([np.full((k_len, cols), -128), np.ones((k_len, cols), np.int64)], axis=1)
    image = Image(rows, cols)
    image.product(lhs, rhs)
    out, _ = run_engine(cfg, image)
    check_results(out, image, overflow_expected=[np.array([True] * rows + [False] * rows)])
    assert out["sticky_overflow"] == 1


async def _load_memories(ctx, ports_and_words):
    """Amaranth testbench: write each ``{address: word}`` through its write port."""
    for port, mem in ports_and_words:
        for address, word in sorted(mem.items()):
            ctx.set(port.addr, address)
            ctx.set(port.data, word)
            ctx.set(port.en, 1)
            await ctx.tick()
        ctx.set(port.en, 0)


# --------------------------------------------------------------------------- Amaranth simulator

@pytest.mark.parametrize("mac_options", [None, {"multiplier": "dsp"}], ids=["default", "dsp"])
def test_amaranth_simulator(rng, mac_options):
    """A 2 x 3 engine in Amaranth's simulator: load, one 3 x 5 @ 5 x 4 product (4 tiles, k-major
    A), a consumer ready every other cycle; with each MacArray multiplier style."""
    from amaranth.sim import Simulator

    if mac_options and "multiplier" not in inspect.signature(MacArray).parameters:
        pytest.skip("this MacArray has no multiplier option")
    cfg = dict(rows=2, cols=3, a_width=6, b_width=7, acc_width=20, a_depth=32, b_depth=32)
    dut = EngineWithMemories(cfg, mac_options=mac_options)
    image = Image(cfg["rows"], cfg["cols"])
    image.product(rand_width(rng, (3, 5), 6), rand_width(rng, (5, 4), 7), a_k_major=True)
    expected_rows, exp_tr, exp_tc, exp_index = image.expected[0]
    got = []
    status = {}

    async def bench(ctx):
        await _load_memories(ctx, ((dut.a_wr, image.a), (dut.b_wr, image.b)))
        ctx.set(dut.instr.payload, image.instrs[0])
        ctx.set(dut.instr.valid, 1)
        await ctx.tick()
        ctx.set(dut.instr.valid, 0)
        cycles = 0
        while not ctx.get(dut.done):
            ctx.set(dut.results.ready, cycles % 2)
            if ctx.get(dut.results.valid) and cycles % 2:
                payload = ctx.get(dut.results.payload)
                got.append((list(payload.row), payload.tr, payload.tc, payload.index, payload.final))
            await ctx.tick()
            cycles += 1
            assert cycles < 200
        status["cycles"] = ctx.get(dut.cycles)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    np.testing.assert_array_equal(np.array([g[0] for g in got]), expected_rows)
    assert [g[1] for g in got] == exp_tr.tolist()
    assert [g[2] for g in got] == exp_tc.tolist()
    assert [g[3] for g in got] == exp_index.tolist()
    assert [g[4] for g in got] == [0] * (len(got) - 1) + [1]
    assert status["cycles"] > 0


@pytest.mark.parametrize("read_latency", [1, 2, 3, 4, 5])
def test_external_memories_read_latency(rng, read_latency):
    """External memories whose read ports take 1 to 5 cycles (the Trainer's is 5): short
    tiles (their last beats wait for the bank) and a consumer ready at random, so held
    beats must keep their words in every stage; exact products, and the fixed overhead grows
    by one cycle per extra stage."""
    from amaranth.sim import Simulator

    cfg = dict(rows=2, cols=3, a_width=6, b_width=7, acc_width=20, a_depth=64, b_depth=64)
    top = dut = EngineWithMemories(cfg, read_latency=read_latency)
    assert dut.fetch_latency == read_latency + 1
    image = Image(cfg["rows"], cfg["cols"])
    for k in (1, 2, 5):
        image.product(rand_width(rng, (6, k), 6), rand_width(rng, (k, 9), 7), a_k_major=bool(k % 2))
    # long runs of 0 so that the engine holds with every stage full
    ready = np.concatenate([np.zeros(9, int), (rng.random(23) < 0.5).astype(int)])
    got = [[] for _ in image.instrs]
    stalls = 0

    async def bench(ctx):
        nonlocal stalls
        await _load_memories(ctx, ((top.a_wr, image.a), (top.b_wr, image.b)))
        cycles = 0
        for n, instr in enumerate(image.instrs):
            ctx.set(dut.instr.payload, instr)
            ctx.set(dut.instr.valid, 1)
            await ctx.tick()
            ctx.set(dut.instr.valid, 0)
            while not ctx.get(dut.done):
                r = int(ready[cycles % len(ready)])
                stalls += ctx.get(dut.mac.operands.valid) and not ctx.get(dut.mac.operands.ready)
                ctx.set(dut.results.ready, r)
                if ctx.get(dut.results.valid) and r:
                    payload = ctx.get(dut.results.payload)
                    got[n].append((list(payload.row), payload.tr, payload.tc, payload.index))
                await ctx.tick()
                cycles += 1
                assert cycles < 2000

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert stalls > 10      # the array did hold beats
    for n, (expected_rows, exp_tr, exp_tc, exp_index) in enumerate(image.expected):
        np.testing.assert_array_equal(np.array([g[0] for g in got[n]]), expected_rows)
        assert [g[1] for g in got[n]] == exp_tr.tolist()
        assert [g[2] for g in got[n]] == exp_tc.tolist()
        assert [g[3] for g in got[n]] == exp_index.tolist()


def test_read_latency_is_checked():
    """A read port takes 1 to 5 cycles."""
    TileEngine(rows=2, cols=2, read_latency=5)._MustUse__silence = True
    for latency in (0, 6):
        with pytest.raises(ValueError, match="read_latency is 1 to 5"):
            TileEngine(rows=2, cols=2, read_latency=latency)


# --------------------------------------------------------------------------- spatial levels

def spatial_reference(ins, a_mem, b_mem, rows, cols):
    """The tiles of ``ins`` (module doc: tiles ty, uy, tx, ux, tr, tc; beats ky, kx, k) from
    the address formulas, enumerated loop by loop: [(rows x cols accumulators, tr, tc)]."""
    def n(name):
        return max(1, ins.get(name, 0))

    out = []
    for ty in range(n("y_tiles")):
        for uy in range(n("y_repeat")):
            for tx in range(n("x_tiles")):
                for ux in range(n("x_repeat")):
                    for tr in range(ins["tiles_r"]):
                        for tc in range(ins["tiles_c"]):
                            acc = np.zeros((rows, cols), np.int64)
                            for ky in range(n("y_beats")):
                                for kx in range(n("x_beats")):
                                    for k in range(ins["k_len"]):
                                        a = (ins["a_base"] + ty * ins["a_y_tile"]
                                             + tx * ins["a_x_tile"] + tr * ins["a_tile_stride"]
                                             + ky * ins["a_y_beat"] + kx * ins["a_x_beat"]
                                             + k * ins["a_k_stride"])
                                        b = (ins["b_base"] + ty * ins["b_y_tile"]
                                             + tx * ins["b_x_tile"] + tc * ins["b_tile_stride"]
                                             + ky * ins["b_y_beat"] + kx * ins["b_x_beat"]
                                             + k * ins["b_k_stride"])
                                        acc += np.outer(a_mem[a], b_mem[b])
                            out.append((acc, tr, tc))
    return out


def _spatial_instruction(rng, depth):
    """A random instruction with every loop level, its addresses within ``depth``."""
    while True:
        ins = dict(k_len=int(rng.integers(1, 4)), tiles_r=int(rng.integers(1, 3)),
                   tiles_c=int(rng.integers(1, 3)))
        for name in ("y_tiles", "y_repeat", "x_tiles", "x_repeat", "y_beats", "x_beats"):
            ins[name] = int(rng.choice([0, 1, 2, 3]))
        for side in "ab":
            for name in ("base", "tile_stride", "k_stride", "y_tile", "x_tile", "y_beat",
                         "x_beat"):
                ins[f"{side}_{name}"] = int(rng.integers(0, 6))

        def top(side, tile):
            n = {k: max(1, ins.get(k, 0)) - 1 for k in
                 ("y_tiles", "x_tiles", "y_beats", "x_beats")}
            return (ins[f"{side}_base"] + n["y_tiles"] * ins[f"{side}_y_tile"]
                    + n["x_tiles"] * ins[f"{side}_x_tile"] + tile * ins[f"{side}_tile_stride"]
                    + n["y_beats"] * ins[f"{side}_y_beat"] + n["x_beats"] * ins[f"{side}_x_beat"]
                    + (ins["k_len"] - 1) * ins[f"{side}_k_stride"])
        if top("a", ins["tiles_r"] - 1) < depth and top("b", ins["tiles_c"] - 1) < depth:
            return ins


@pytest.mark.parametrize("seed", [0, 1])
def test_spatial_levels_against_the_address_formulas(seed):
    """Random instructions using every loop (spatial tiles with repeats, spatial beats, the
    MLP product's tr, tc and k) in Amaranth's simulator, read latency 5 like the Trainer's,
    a consumer ready at random: every tile equals the address formulas' sum, tiles in loop
    order (repeats recomputed), ``final`` on the last row only, and the cycles of results
    always ready as :meth:`TileEngine.instruction_cycles` counts them."""
    from amaranth.sim import Simulator

    rng = np.random.default_rng(100 + seed)
    cfg = dict(rows=2, cols=3, a_width=6, b_width=7, acc_width=24, a_depth=64, b_depth=64)
    dut = EngineWithMemories(cfg, read_latency=5)
    a_mem = rand_width(rng, (64, 2), 6)
    b_mem = rand_width(rng, (64, 3), 7)
    instrs = [_spatial_instruction(rng, 64) for _ in range(6)]
    instrs.append(dict(instrs[0]))                     # the first again, results always ready
    names = [name for name, _ in dut.instr_layout]
    got = [[] for _ in instrs]
    cycles = []

    async def bench(ctx):
        await _load_memories(ctx, ((dut.a_wr, dict(enumerate(a_mem.tolist()))),
                                   (dut.b_wr, dict(enumerate(b_mem.tolist())))))
        t = 0
        for n, ins in enumerate(instrs):
            ctx.set(dut.instr.payload, {name: ins.get(name, 0) for name in names})
            ctx.set(dut.instr.valid, 1)
            await ctx.tick()
            ctx.set(dut.instr.valid, 0)
            while not ctx.get(dut.done):
                r = 1 if n == len(instrs) - 1 else int(rng.random() < 0.6)
                ctx.set(dut.results.ready, r)
                if ctx.get(dut.results.valid) and r:
                    p = ctx.get(dut.results.payload)
                    got[n].append((list(p.row), p.tr, p.tc, p.index, p.final))
                await ctx.tick()
                t += 1
                assert t < 20000
            cycles.append(ctx.get(dut.cycles))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for n, ins in enumerate(instrs):
        want = spatial_reference(ins, a_mem, b_mem, 2, 3)
        rows = got[n]
        assert len(rows) == 2 * len(want), n
        for t, (acc, tr, tc) in enumerate(want):
            for i in range(2):
                row, r_tr, r_tc, index, final = rows[2 * t + i]
                assert row == acc[i].tolist(), (n, t, i)
                assert (r_tr, r_tc, index) == (tr, tc, i), (n, t, i)
                assert final == (t == len(want) - 1 and i == 1), (n, t, i)
    last = instrs[-1]
    beats = last["k_len"] * max(1, last["y_beats"]) * max(1, last["x_beats"])
    assert cycles[-1] == dut.instruction_cycles(len(spatial_reference(last, a_mem, b_mem, 2, 3)),
                                                beats)
