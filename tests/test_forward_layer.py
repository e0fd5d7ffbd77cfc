"""ForwardLayer (hw/forward_layer.py): IntegerLinear -> Scaling -> NITRO-ReLU against golden.

A small "compiler" here places each layer's X (feature-major) and W in the operand memories,
zero-padding partial tiles, builds the layer's instruction and predicts the whole content of the
output memories from the golden model: ``h = nitro_relu(nitro_scale(X @ W.T, K), a)`` and the
ReLU code of the scaled value (PASS for 0 <= y < 127, DIV for -127 <= y < 0, ZERO otherwise);
words of padding samples are never written, padding neurons hold h = 0 with code ZERO, and every
other word keeps its reset value 0.  The bench (tests/cocotb_tb/tb_forward_layer.py) runs the
instructions on Verilator and reads both output memories back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from golden.arith import nitro_relu, nitro_scale
from golden.init import kaiming_bound
from golden.layers import linear
from hw.forward_layer import ForwardLayer
from sim.harness import run_cocotb

TB = Path(__file__).parent / "cocotb_tb" / "tb_forward_layer.py"

PASS, DIV, ZERO = 0, 1, 2

#: The main configuration: int8 activations, 18-bit weights, 48-bit accumulators.
CFG_4X4 = dict(rows=4, cols=4, a_width=8, b_width=18, acc_width=48, a_depth=256, b_depth=256,
               out_depth=256)
#: A non-square array (rows != cols catches any mix-up of the two), with the MacArray's other
#: multiplier style (also the quicker Verilator build).
CFG_3X2 = dict(rows=3, cols=2, a_width=8, b_width=18, acc_width=48, a_depth=512, b_depth=512,
               out_depth=256, mac_options={"multiplier": "dsp"})

W_MIN, W_MAX = -2 ** 17, 2 ** 17 - 1


def ceil_div(a, b):
    return -(-a // b)


def relu_codes(y):
    """The derivative code of each scaled value, per the spec."""
    y = np.asarray(y, np.int64)
    return np.where((y >= 0) & (y < 127), PASS, np.where((y >= -127) & (y < 0), DIV, ZERO))


def golden_forward(x, w, slope):
    y = nitro_scale(linear(x, w), x.shape[1])
    return np.asarray(nitro_relu(y, slope), np.int64), relu_codes(y), np.asarray(y, np.int64)


@dataclass
class Program:
    """Operand memory contents, instructions and the expected output memories."""
    layer: ForwardLayer
    a: dict = field(default_factory=dict)
    b: dict = field(default_factory=dict)
    a_top: int = 0
    b_top: int = 0
    out_top: int = 0
    instrs: list = field(default_factory=list)
    cases: list = field(default_factory=list)      # (M, K, N, tiles, slope, scaled values)

    def __post_init__(self):
        depth, cols = self.layer.out_depth, self.layer.cols
        self.exp_h = np.zeros((depth, cols), np.int64)
        self.exp_code = np.zeros((depth, cols), np.int64)

    def add(self, x, w, slope, *, tc_major_out=False, a_k_major=False):
        """The layer ``x (M x K) -> (M x N)`` with weights ``w (N x K)``."""
        rows, cols = self.layer.rows, self.layer.cols
        x, w = np.asarray(x, np.int64), np.asarray(w, np.int64)
        mm, k = x.shape
        n = w.shape[0]
        tiles_r, tiles_c = ceil_div(mm, rows), ceil_div(n, cols)
        xp = np.zeros((tiles_r * rows, k), np.int64)
        xp[:mm] = x
        wp = np.zeros((tiles_c * cols, k), np.int64)
        wp[:n] = w
        # A: word (tr, k) = X[tr*rows:(tr+1)*rows, k]; tile-major, or k-major
        a_base = self.a_top
        a_ts, a_ks = (1, tiles_r) if a_k_major else (k, 1)
        for tr in range(tiles_r):
            for kk in range(k):
                self.a[a_base + tr * a_ts + kk * a_ks] = xp[tr * rows:(tr + 1) * rows, kk].tolist()
        self.a_top += tiles_r * k + 1
        # B: word (tc, k) = W[tc*cols:(tc+1)*cols, k]
        b_base = self.b_top
        for tc in range(tiles_c):
            for kk in range(k):
                self.b[b_base + tc * k + kk] = wp[tc * cols:(tc + 1) * cols, kk].tolist()
        self.b_top += tiles_c * k + 1
        # output words (m, tc); room for the padding samples' words (never written) plus one
        out_base = self.out_top
        if tc_major_out:
            oms, ots = 1, tiles_r * rows + 1
        else:
            oms, ots = tiles_c, 1
        self.out_top += tiles_r * rows * tiles_c + tiles_c + 1
        assert self.out_top <= self.layer.out_depth
        ins = self.layer.instruction(mm, k, n, a_base=a_base, a_tile_stride=a_ts, a_k_stride=a_ks,
                                     b_base=b_base, b_tile_stride=k, out_base=out_base,
                                     out_m_stride=oms, out_tc_stride=ots, slope=slope)
        self.instrs.append(ins)
        if k == 0 or mm == 0 or n == 0:
            self.cases.append((mm, k, n, 0, slope, np.zeros(0, np.int64)))
            return
        h, code, y = golden_forward(x, w, slope)
        hp = np.zeros((mm, tiles_c * cols), np.int64)
        cp = np.full((mm, tiles_c * cols), ZERO, np.int64)
        hp[:, :n], cp[:, :n] = h, code
        for mi in range(mm):
            for tc in range(tiles_c):
                address = out_base + mi * oms + tc * ots
                self.exp_h[address] = hp[mi, tc * cols:(tc + 1) * cols]
                self.exp_code[address] = cp[mi, tc * cols:(tc + 1) * cols]
        self.cases.append((mm, k, n, tiles_r * tiles_c, slope, y.ravel()))



def make_layer(cfg) -> ForwardLayer:
    return ForwardLayer(**cfg)


def toplevel(cfg) -> str:
    style = (cfg.get("mac_options") or {}).get("multiplier", "lut")
    return "forward_layer_{rows}x{cols}_{a_width}x{b_width}_{acc_width}_{out_depth}_".format(**cfg) + style


def run_program(cfg, prog: Program, *, stall_pattern=None, gap=0):
    layer = prog.layer
    a_addr, b_addr = sorted(prog.a), sorted(prog.b)
    assert a_addr[-1] < cfg["a_depth"] and b_addr[-1] < cfg["b_depth"]
    vectors = {
        "a_addr": np.array(a_addr, np.int64),
        "a_words": np.array([prog.a[x] for x in a_addr], np.int64).reshape(len(a_addr), cfg["rows"]),
        "b_addr": np.array(b_addr, np.int64),
        "b_words": np.array([prog.b[x] for x in b_addr], np.int64).reshape(len(b_addr), cfg["cols"]),
    }
    if stall_pattern is not None:
        vectors["stall_pattern"] = np.asarray(stall_pattern, np.int64)
    params = dict(rows=cfg["rows"], cols=cfg["cols"], a_width=cfg["a_width"], b_width=cfg["b_width"],
                  h_width=layer.h_width, out_depth=cfg["out_depth"], gap=gap,
                  instrs=[layer.instruction_bits(ins) for ins in prog.instrs])
    return run_cocotb(make_layer(cfg), toplevel(cfg), TB, vectors=vectors, params=params).outputs


def check_memories(out, prog: Program):
    for name, expected in (("h", prog.exp_h), ("code", prog.exp_code)):
        bad = np.argwhere(out[name] != expected)
        assert not len(bad), (f"{name}: {len(bad)} wrong values, first at (word, lane) "
                              f"{bad[0].tolist()}: got {out[name][tuple(bad[0])]}, "
                              f"expected {expected[tuple(bad[0])]}")


def rand_w(rng, shape, kind, k):
    if kind == "full":          # the whole 18-bit range, extremes included: scaling saturates
        w = rng.integers(W_MIN, W_MAX + 1, size=shape)
        if w.size:
            w.flat[rng.choice(w.size, max(1, w.size // 8), replace=False)] = rng.choice([W_MIN, W_MAX])
        return w
    if kind == "mid":           # y spread over [-127, 127] and beyond: every code
        bound = int(350 * np.sqrt(k)) + 1
        return rng.integers(-bound, bound + 1, size=shape)
    if kind == "init":          # realistic: the golden model's initial weights
        bound = kaiming_bound(k)
        return rng.integers(-bound, bound + 1, size=shape)
    raise ValueError(kind)


def rand_x(rng, shape):
    x = rng.integers(-128, 128, size=shape)
    if x.size:
        x.flat[rng.choice(x.size, max(1, x.size // 8), replace=False)] = -128
    return x


def boundary_case():
    """K = 1, so y = clip(tdiv(x*w, 256)): scaled values on each side of every code boundary."""
    w = np.array([[127 * 256], [126 * 256 + 255], [-127 * 256], [-(127 * 256 + 255)],
                  [-128 * 256], [-255], [-256], [W_MAX], [W_MIN]], np.int64)
    x = np.array([[1], [-1], [2], [-128], [127]], np.int64)
    return x, w


def build_program(layer: ForwardLayer, rng) -> Program:
    prog = Program(layer)
    specs = [  # M, K, N, weights, slope, options
        (5, 7, 6, "full", 4, {}),
        (8, 20, 3, "init", 3, {}),
        (5, 7, 6, "mid", 20, dict(tc_major_out=True)),
        (9, 33, 7, "mid", 10, dict(a_k_major=True)),
        (3, 2, 5, "mid", 16, {}),          # K < rows: last beats wait for the bank
        (1, 1, 1, "mid", 5, {}),
        (6, 0, 6, "mid", 4, {}),           # empty: writes nothing
        (7, 12, 5, "init", 8, dict(tc_major_out=True)),
    ]
    for mm, k, n, kind, slope, options in specs:
        prog.add(rand_x(rng, (mm, k)), rand_w(rng, (n, k), kind, max(k, 1)), slope, **options)
    # saturation: all-extreme operands, every sign combination
    ext_x = rng.choice([-128, 127], size=(4, 16))
    ext_w = rng.choice([W_MIN, W_MAX], size=(4, 16))
    ext_w[0], ext_w[1] = W_MAX, W_MIN
    prog.add(ext_x, ext_w, 7)
    x, w = boundary_case()
    prog.add(x, w, 15)
    return prog


def test_forward_layer_bit_exact(rng, record_property):
    """Several layers with partial tiles, operands of every kind, every slope used, back to
    back; the output memories equal golden everywhere; cycles = instruction_cycles(tiles, K)."""
    cfg = CFG_4X4
    layer = make_layer(cfg)
    prog = build_program(layer, rng)
    out = run_program(cfg, prog)
    check_memories(out, prog)
    assert out["sticky_overflow"] == 0

    # coverage of the scaled values: every code, both saturations
    ys = np.concatenate([c[5] for c in prog.cases])
    assert {127, -127} <= set(ys.tolist())
    assert set(relu_codes(ys).tolist()) == {PASS, DIV, ZERO}
    boundary_y = prog.cases[-1][5].reshape(5, 9)
    assert boundary_y[0].tolist() == [127, 126, -127, -127, -127, 0, -1, 127, -127]
    assert {c[4] for c in prog.cases} >= {3, 4, 5, 7, 8, 10, 15, 16, 20}

    np.testing.assert_array_equal(out["hw_cycles"], out["done_cycle"] - out["accept_cycle"])
    report = []
    for (mm, k, n, tiles, slope, _), cycles in zip(prog.cases, out["hw_cycles"].tolist()):
        report.append((f"{mm}x{k}x{n}", tiles, k, cycles))
        if tiles == 0:
            assert cycles == 1
        else:        # tiles shorter than stream_beats wait for the array's result bank
            assert cycles == layer.instruction_cycles(tiles, k), (mm, k, n)
    record_property("cycles", report)
    print(f"\nfixed_cycles {layer.fixed_cycles} (engine {layer.engine.fixed_cycles} + lanes "
          f"{layer.lane_latency}); (MxKxN, tiles, K, cycles): {report}")


def test_backpressure_non_square(rng):
    """A 3 x 2 array, the writer stalled 40 % of the time (the lanes fill and hold the engine)
    and idle gaps between instructions: same memories as without stalls."""
    cfg = CFG_3X2
    layer = make_layer(cfg)
    prog = build_program(layer, rng)
    stall = (rng.random(97) < 0.4).astype(np.int64)
    stall[:40] = 1                     # a long stall early: everything upstream fills up
    out = run_program(cfg, prog, stall_pattern=stall, gap=3)
    check_memories(out, prog)
    assert out["sticky_overflow"] == 0
    extra = 0
    for (mm, k, n, tiles, slope, _), cycles in zip(prog.cases, out["hw_cycles"].tolist()):
        if tiles:
            assert cycles >= layer.instruction_cycles(tiles, k)
            extra += cycles - layer.instruction_cycles(tiles, k)
    # the stalls cost cycles: the engine was really held (each stalled row costs a cycle)
    assert extra >= 40


def test_instruction_helpers():
    layer = ForwardLayer(rows=4, cols=4, a_depth=16, b_depth=16, out_depth=16)
    ins = layer.instruction(5, 7, 6, a_base=0, a_tile_stride=7, b_base=0, b_tile_stride=7,
                            out_base=3, out_m_stride=2, out_tc_stride=1, slope=3)
    assert ins["product"]["tiles_r"] == 2 and ins["product"]["tiles_c"] == 2
    assert ins["inv_slope"] == 3 and ins["scaler"] == layer.scalers[0].constants(7)
    view = layer.instr_layout.const(ins)
    assert view.as_value().value == layer.instruction_bits(ins)
    with pytest.raises(ValueError):
        layer.constants(7, slope=6)
