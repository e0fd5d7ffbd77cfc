"""Host-side pieces shared by the Amaranth-simulator and cocotb tests of the
arithmetic units (divider, scaler, NITRO-ReLU, SGD update).

A test is a list of *segments*.  A segment holds the constant ports to load
(``cfg``), the input items (one array per payload field), a ``mode``
(``"full"``: input always valid and output always ready, to measure the
throughput; ``"stall"``: random gaps on the input and random back-pressure on
the output) and the golden outputs.  Payload fields are packed LSB first in
declaration order, the bit layout of ``amaranth.lib.data.StructLayout``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from golden.arith import nitro_relu, nitro_relu_backward, nitro_scale, tdiv
from golden.optim import sgd_update

__all__ = ["Segment", "UnitCase", "pack_fields", "unpack_fields", "check_outputs",
           "divider_case", "scaler_case", "relu_case", "relu_backward_case",
           "sgd_case", "edge_values"]


@dataclasses.dataclass
class Segment:
    cfg: dict                    # constant port name -> int
    inputs: dict                 # field name -> int64 array
    expected: dict               # output field name -> int64 array
    mode: str = "full"           # "full" or "stall"

    def __len__(self):
        return len(next(iter(self.inputs.values())))


@dataclasses.dataclass
class UnitCase:
    dut: object                  # the Amaranth component
    in_fields: list              # [(name, width)]
    out_fields: list             # [(name, width, signed)]
    segments: list
    latency: int
    flags: list = dataclasses.field(default_factory=list)   # 1-bit outputs read at segment end
    expected_flags: list = dataclasses.field(default_factory=list)  # per segment: dict


def pack_fields(inputs: dict, fields) -> list[int]:
    """One packed Python int per item."""
    n = len(next(iter(inputs.values())))
    cols = [(np.asarray(inputs[name]).tolist(), width) for name, width in fields]
    words = []
    for k in range(n):
        word, shift = 0, 0
        for col, width in cols:
            word |= (int(col[k]) & ((1 << width) - 1)) << shift
            shift += width
        words.append(word)
    return words


def unpack_fields(words, fields) -> dict:
    out = {name: [] for name, _, _ in fields}
    for word in words:
        shift = 0
        for name, width, signed in fields:
            v = (int(word) >> shift) & ((1 << width) - 1)
            if signed and v >> (width - 1):
                v -= 1 << width
            out[name].append(v)
            shift += width
    return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}


def check_outputs(case: UnitCase, seg_outputs: list[dict]) -> None:
    """Compare every segment's outputs with the golden values; report mismatches."""
    total = 0
    for k, (seg, got) in enumerate(zip(case.segments, seg_outputs)):
        for name, exp in seg.expected.items():
            g = np.asarray(got[name], dtype=np.int64)
            assert g.shape == exp.shape, f"segment {k} ({seg.cfg}): {name}: got {g.shape[0]} items, expected {exp.shape[0]}"
            bad = np.nonzero(g != exp)[0]
            if bad.size:
                ins = {f: np.asarray(v)[bad[:5]].tolist() for f, v in seg.inputs.items()}
                raise AssertionError(
                    f"segment {k} cfg={seg.cfg}: {bad.size} mismatches in {name}; first inputs "
                    f"{ins}, got {g[bad[:5]].tolist()}, expected {exp[bad[:5]].tolist()}")
            total += exp.size
    assert total > 0


def edge_values(width: int, divisors=()) -> np.ndarray:
    """0, +-1, the extremes of a signed width, and values around multiples of the divisors
    (negatives there round differently toward zero than toward minus infinity)."""
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    vals = {0, 1, -1, 2, -2, lo, lo + 1, lo + 2, hi, hi - 1, hi - 2}
    for d in divisors:
        for mult in (1, 2, 3, 127, 128, hi // max(d, 1)):
            for delta in (-1, 0, 1):
                for sign in (1, -1):
                    v = sign * (mult * d + delta)
                    if lo <= v <= hi:
                        vals.add(v)
    return np.array(sorted(vals), dtype=np.int64)


def _rand_signed(rng, width, n):
    """Random signed values with every magnitude scale represented (not just huge ones)."""
    bits = rng.integers(1, width + 1, n)
    mags = np.array([int(rng.integers(0, 1 << (b - 1))) if b > 1 else 0 for b in bits.tolist()],
                    dtype=object)
    sign = rng.integers(0, 2, n)
    vals = [(-m - 1 if s else m) for m, s in zip(mags.tolist(), sign.tolist())]
    return np.array(vals, dtype=np.int64)


def _split_modes(segments):
    """Alternate full-speed and stalling segments."""
    for k, seg in enumerate(segments):
        seg.mode = "full" if k % 2 == 0 else "stall"
    return segments


# --------------------------------------------------------------------------- units

def divider_case(rng, n_random: int, *, width=48, d_max=2**31, divisors=None, fixed=None):
    from hw.units.divider import TruncDivider
    dut = TruncDivider(width, d_max=d_max, divisor=fixed)
    if fixed is not None:
        divisors = [fixed]
    elif divisors is None:
        divisors = [1, 2, 3, 7, 256, 640, 327680, 1_000_003, d_max - 1, d_max]
        divisors = [d for d in divisors if d <= d_max]
    segs = []
    per = max(1, n_random // len(divisors))
    for d in divisors:
        a = np.concatenate([edge_values(width, [d]), _rand_signed(rng, width, per)])
        cfg = dut.constants(d) if fixed is None else {}
        segs.append(Segment(cfg, {"a": a}, {"q": tdiv(a, d)}))
    return UnitCase(dut, [("a", width)], [("q", width, True)], _split_modes(segs), dut.latency)


def scaler_case(rng, n_random: int, *, acc_width=48, fan_in_width=14, fan_ins=None, fixed=None):
    from hw.units.scaler import Scaler
    dut = Scaler(acc_width, fan_in_width=fan_in_width, fan_in=fixed)
    fmax = 2 ** fan_in_width - 1
    if fixed is not None:
        fan_ins = [fixed]
    elif fan_ins is None:
        fan_ins = [f for f in [1, 2, 9, 64, 100, 784, 4608, fmax] if f <= fmax]
    segs = []
    per = max(1, n_random // len(fan_ins))
    for f in fan_ins:
        sf = 256 * f
        z = np.concatenate([
            edge_values(acc_width, [sf, 127 * sf, 128 * sf]),
            _rand_signed(rng, acc_width, per // 2),
            # the interesting window: around the saturation thresholds
            rng.integers(-130 * sf, 130 * sf + 1, per - per // 2),
        ])
        cfg = dut.constants(f) if fixed is None else {}
        segs.append(Segment(cfg, {"z": z}, {"y": nitro_scale(z, f).astype(np.int64)}))
    return UnitCase(dut, [("z", acc_width)], [("y", 8, True)], _split_modes(segs), dut.latency)


def relu_case(rng, reps: int = 4, *, slope=None, bits_per_stage=1):
    from hw.contract import SLOPES, relu_code
    from hw.units.nitro_relu import NitroRelu
    dut = NitroRelu(slope=slope, bits_per_stage=bits_per_stage)
    slopes = [slope] if slope is not None else list(SLOPES)
    segs = []
    for a in slopes:
        x = np.concatenate([np.arange(-128, 128)] + [rng.integers(-128, 128, 256) for _ in range(reps - 1)])
        cfg = {"inv_slope": a} if slope is None else {}
        code = np.array([relu_code(v) for v in x.tolist()], dtype=np.int64)
        segs.append(Segment(cfg, {"x": x}, {"h": nitro_relu(x, a).astype(np.int64), "code": code}))
    return UnitCase(dut, [("x", 8)], [("h", 8, True), ("code", 2, False)],
                    _split_modes(segs), dut.latency)


def relu_backward_case(rng, n_random: int, *, err_width=24, slope=None, bits_per_stage=1):
    from hw.contract import SLOPES, relu_code
    from hw.units.nitro_relu import NitroReluBackward
    dut = NitroReluBackward(err_width, slope=slope, bits_per_stage=bits_per_stage)
    slopes = [slope] if slope is not None else list(SLOPES)
    segs = []
    per = max(1, n_random // len(slopes))
    for a in slopes:
        d_edges = edge_values(err_width, [a])
        d = np.concatenate([np.repeat(d_edges, 4), _rand_signed(rng, err_width, per)])
        x_pick = np.array([-1, -128, -127, -126, 0, 1, 126, 127])  # DIV first: new slope
        x = np.concatenate([np.tile(x_pick, (len(d_edges) * 4 + len(x_pick) - 1) // len(x_pick))[:len(d_edges) * 4],
                            rng.integers(-128, 128, per)])
        code = np.array([relu_code(v) for v in x.tolist()], dtype=np.int64)
        cfg = {"inv_slope": a} if slope is None else {}
        segs.append(Segment(cfg, {"d": d, "code": code},
                            {"d_in": nitro_relu_backward(d, x, a).astype(np.int64)}))
    return UnitCase(dut, [("d", err_width), ("code", 2)], [("d_in", err_width, True)],
                    _split_modes(segs), dut.latency)


def sgd_case(rng, n_random: int, *, weight_width=18, grad_width=48, lr_div_max=2**40,
             decay_max=2**20):
    from hw.units.sgd_update import SgdUpdate
    dut = SgdUpdate(weight_width, grad_width, lr_div_max=lr_div_max, decay_max=decay_max)
    wlo, whi = -(1 << (weight_width - 1)), (1 << (weight_width - 1)) - 1
    configs = [  # (lr_inv, amp, decay_inv)
        (512, 640, 12000), (512, 1, 3000), (512, 640, 0), (1536, 640, 30000),
        (1, 1, 1), (1, 1, 0), (lr_div_max, 1, decay_max), (4608, 6400, 7),
        (512 * 3 ** 9, 640, 30000),
    ]
    configs = [c for c in configs if c[0] * c[1] <= lr_div_max and c[2] <= decay_max]
    segs, flags = [], []
    # one segment whose results all stay in range: the flag must stay low
    lr_inv, amp, decay_inv = 512, 640, 12000
    half = 1 << (weight_width - 3)
    w = rng.integers(-half, half + 1, 64)
    g_max = min(half * lr_inv * amp, (1 << (grad_width - 1)) - 1)
    g = rng.integers(-g_max, g_max + 1, 64)
    exact = sgd_update(w, g, lr_inv, amp, decay_inv)
    assert np.all((exact >= wlo) & (exact <= whi))
    segs.append(Segment(dut.constants(lr_inv, amp, decay_inv), {"w": w, "g": g},
                        {"w_new": exact.astype(np.int64)}))
    flags.append({"overflow": 0})
    per = max(1, n_random // len(configs))
    for lr_inv, amp, decay_inv in configs:
        div = lr_inv * amp
        w_e = edge_values(weight_width, [max(decay_inv, 1)])
        g_e = edge_values(grad_width, [div])
        n_e = max(len(w_e), len(g_e))
        w = np.concatenate([np.resize(w_e, n_e), _rand_signed(rng, weight_width, per)])
        # gradients scaled so most updates stay in range but some overflow
        g = np.concatenate([np.resize(g_e, n_e), _rand_signed(rng, grad_width, per)])
        exact = sgd_update(w, g, lr_inv, amp, decay_inv)
        sat = np.clip(exact, wlo, whi)
        ovf = bool(np.any(exact != sat))
        segs.append(Segment(dut.constants(lr_inv, amp, decay_inv), {"w": w, "g": g},
                            {"w_new": sat.astype(np.int64)}))
        flags.append({"overflow": int(ovf)})
    case = UnitCase(dut, [("w", weight_width), ("g", grad_width)],
                    [("w_new", weight_width, True)], _split_modes(segs), dut.latency,
                    flags=["overflow"], expected_flags=flags)
    return case


# --------------------------------------------------------------------------- cocotb runs

def run_on_verilator(case: UnitCase, toplevel: str, seed: int = 1):
    """Simulate ``case`` with cocotb on Verilator (sim/harness.py), compare with golden,
    check one-result-per-cycle on the full-speed segments and the flags.  Returns the run."""
    from pathlib import Path

    from sim.harness import run_cocotb

    in_width = sum(w for _, w in case.in_fields)
    out_width = sum(w for _, w, _ in case.out_fields)
    words = []
    for seg in case.segments:
        words += pack_fields(seg.inputs, case.in_fields)
    n_limbs = (in_width + 31) // 32
    vectors = {f"in_l{j}": np.array([(w >> (32 * j)) & 0xFFFFFFFF for w in words], dtype=np.int64)
               for j in range(n_limbs)}
    clear = "clear" if "clear" in case.dut.signature.members else None
    params = {
        "in_width": in_width, "out_width": out_width, "seed": seed, "clear": clear,
        "flags": list(case.flags),
        "segments": [{"cfg": {k: int(v) for k, v in seg.cfg.items()}, "n": len(seg),
                      "mode": seg.mode} for seg in case.segments],
    }
    run = run_cocotb(case.dut, toplevel, Path(__file__).parent / "benches" / "tb_stream.py",
                     vectors=vectors, params=params)
    out_limbs = [run.outputs[f"out_l{j}"].tolist() for j in range(((out_width + 31) // 32))]
    out_words = [sum(int(l[k]) << (32 * j) for j, l in enumerate(out_limbs))
                 for k in range(len(out_limbs[0]))]
    seg_outputs, base = [], 0
    for seg in case.segments:
        seg_outputs.append(unpack_fields(out_words[base:base + len(seg)], case.out_fields))
        base += len(seg)
    assert base == len(out_words)
    check_outputs(case, seg_outputs)
    cycles = run.outputs["cycles"].tolist()
    for seg, c in zip(case.segments, cycles):
        if seg.mode == "full":
            assert c == len(seg) + case.latency, (
                f"{len(seg)} results took {c} cycles, expected {len(seg)} + latency {case.latency}")
    for k, exp in enumerate(case.expected_flags):
        for name, value in exp.items():
            assert int(run.outputs[f"flag_{name}"][k]) == value, (k, name)
    return run


def count_vectors(case: UnitCase) -> int:
    return sum(len(seg) for seg in case.segments)
