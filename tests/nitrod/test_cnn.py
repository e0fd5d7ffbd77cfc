"""nitrod.compiler + nitrod.isa_model on CNNs: compiled training steps of
conv blocks, max and average pools, decoder pools with padding and linear blocks after convs
are bit-exact with golden's ``Network.train_step``, every weight after every step."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from golden.datasets import Normaliser, load_dataset, one_hot
from golden.layers import decoder_pool_geometry
from golden.network import ARCHITECTURES, Network, NetworkSpec
from hw.contract import (CNN_FIELDS, PAD_LABEL, POOL_OPS, SLOPES, Geometry, Op, Region,
                         ReluCode, empty_instruction, lane_signed, lane_width, signed_range)
from nitrod import compiler
from nitrod.compiler import DoesNotFit, Plan, compile_network
from nitrod.isa_model import IsaMachine

#: a trainer with room for every network below (16-bit addresses: 65,536 words at most)
ROOMY = dict(act_depth=65536, wgt_depth=65536, err_depth=65536, code_depth=65536,
             label_depth=256, prog_depth=256)
CLEAN = {"mac": False, "backerr": False, "sgd": False}


def _spec(shape, layers, classes, **kw):
    kw.setdefault("fwd_decay_inv", 700)
    kw.setdefault("subnet_decay_inv", 300)
    return NetworkSpec(shape, classes, tuple(layers.split(",")), **kw)


def _random_memories(machine, rng):
    """Every data memory full of random lane values (an SPRAM's power-up state)."""
    g = machine.geometry
    for region in (Region.ACT, Region.WGT, Region.ERR, Region.CODE):
        w = lane_width(g, region)
        lo, hi = signed_range(w) if lane_signed(region) else (0, (1 << w) - 1)
        machine.mem[region][:] = rng.integers(lo, hi + 1, size=machine.mem[region].shape)


def _train_side_by_side(spec, geom, cap, *, seed, lr_inv=256, sizes=None, images=None,
                        random_memories=False, program_hook=None):
    """Steps of golden and the machine; returns the names of what differs after each step
    (``[]`` when bit-exact).  Alternates the full and the per-batch program."""
    plan = compile_network(spec, geom, cap)
    net = Network(spec, seed=seed)
    machine = IsaMachine(geom)
    rng = np.random.default_rng(seed)
    if random_memories:
        _random_memories(machine, rng)
    machine.load(plan.pack_init())
    machine.load(plan.pack_weights(net.weights()))
    sizes = sizes or [cap, max(1, cap - geom.side - 1), cap]
    report = []
    for step, m in enumerate(sizes):
        if images is not None:
            x = images(step, m, rng)
        else:
            x = rng.integers(-127, 128, size=(m,) + spec.input_shape).astype(np.int8)
        labels = rng.integers(0, spec.classes, size=m)
        machine.load(plan.pack_batch(x, labels))
        trimmed = step % 2 == 1
        prog = plan.program(lr_inv, m if trimmed else None)
        if program_hook is not None:
            prog = program_hook(prog)
        stats = machine.run(prog)
        yhat = net.train_step(x, one_hot(labels, spec.classes), lr_inv)
        got = plan.unpack_weights(machine.read_words)
        bad = [k for k, w in net.weights().items() if not np.array_equal(got[k], w)]
        if not np.array_equal(plan.unpack_yhat(machine.read_words, labels), yhat):
            bad.append("yhat")
        report.append(bad)
        if program_hook is None:
            assert stats.overflow == CLEAN
            assert stats.retired == len(prog) - 1
            assert stats.beats == plan.engine_beats(m if trimmed else None)
            assert stats.pool_beats == plan.pool_beats(m if trimmed else None)
    assert plan.useful_macs(3) == net.macs_per_sample() * 3
    return report


# shape, layers, classes, side, batch capacity, decoder_dim, slope, what it covers
CASES = [
    ((1, 7, 7), "c5", 3, 4, 6, 20, 4, "decoder 4x4 padded (2, 2), the last row/column cropped"),
    ((3, 9, 7), "c5,p,c7,l6", 4, 4, 5, 40, 3,
     "decoder 4x4 with top and bottom partial windows; 2x2 padded on x; linear after conv"),
    ((2, 6, 6), "c4,a,c3", 3, 2, 7, 20, 8, "average pool; decoder 2x1 padded on y"),
    ((2, 7, 7), "c4,p3,c3,l5", 5, 8, 9, 10, 4, "p3 cropping; decoder 8x4; batch 9 at S = 8"),
    ((1, 5, 5), "p,c3", 3, 2, 3, 12, 5, "a pool of the input first"),
    ((3, 8, 8), "c4,p,p,l3,l5", 3, 4, 6, 2048, 16, "two pools, two linear blocks"),
    ((1, 6, 6), "c4,c5,p,c3", 3, 2, 5, 30, 4, "conv after conv; decoders padded"),
    ((2, 5, 6), "c3,l4", 7, 4, 1, 2048, 20, "batch 1; decoder 1x1"),
    ((2, 6, 6), "c4,a", 3, 4, 5, 2048, 4, "the output layer after an average pool"),
    ((3, 9, 11), "c5,a3,c7,l9", 10, 8, 11, 64, 10, "odd channels, a3, sides not multiples of S"),
    ((1, 4, 4), "c3,c4", 3, 2, 3, 2048, 7, "1x1 decoders on a map with a border"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[1] + f"_S{c[3]}" for c in CASES])
def test_cnn_steps_bit_exact_with_golden(case):
    shape, layers, classes, side, cap, dd, slope, _ = case
    spec = _spec(shape, layers, classes, decoder_dim=dd, relu_inv_slope=slope)
    report = _train_side_by_side(spec, Geometry(side=side, **ROOMY), cap, seed=len(layers))
    assert report == [[], [], []]


def test_conv_amp_extra():
    """--conv-amp-extra: a conv block's SGD divides by golden's larger amplification, which
    must fit d_g."""
    spec = _spec((1, 8, 8), "c4,p,c3", 3, decoder_dim=16, conv_amp_extra=True)
    geom = Geometry(side=4, **ROOMY)
    assert _train_side_by_side(spec, geom, 5, seed=9) == [[], [], []]
    plan = compile_network(spec, geom.replace(d_g_width=20), 5)
    amp = Network(spec, seed=0).stages[0].amp
    assert amp == 64 * 3 * (64 // (plan.stages[0].pool.kh * plan.stages[0].pool.kw))
    with pytest.raises(DoesNotFit, match="D_G_WIDTH"):
        plan.program(-(-(1 << 20) // amp))


def test_cases_cover_padded_decoder_pools():
    """The fixed cases hold padded decoder pools with partial windows at both ends, cropped
    rows, 1x1 decoders, average pools and linear blocks after convs."""
    seen = set()
    for shape, layers, classes, side, cap, dd, slope, _ in CASES:
        plan = compile_network(_spec(shape, layers, classes, decoder_dim=dd),
                               Geometry(side=side, **ROOMY), cap)
        for stg in plan.stages:
            if stg.kind == "conv":
                p = stg.pool
                seen.add("1x1" if (p.kh, p.kw) == (1, 1) else "pooled")
                if p.ph or p.pw:
                    seen.add("padded")
                if p.out_h * p.kh - p.ph < p.h or p.out_w * p.kw - p.pw < p.w:
                    seen.add("cropped")
                if p.out_h * p.kh - p.ph > p.h:
                    seen.add("bottom partial")
            seen.add(stg.kind)
    assert seen >= {"1x1", "pooled", "padded", "cropped", "bottom partial", "conv", "max", "avg",
                    "linear", "output"}


@st.composite
def _networks(draw):
    side = draw(st.sampled_from([2, 4, 8]))
    c0, h0, w0 = draw(st.integers(1, 3)), draw(st.integers(3, 9)), draw(st.integers(3, 9))
    h, w = h0, w0
    layers, ch = [], 1
    for i in range(draw(st.integers(1, 3))):
        if i and draw(st.booleans()) and min(h, w) >= 2:
            k = draw(st.integers(2, min(3, h, w)))
            layers.append(f"{draw(st.sampled_from('pa'))}{k if k != 2 else ''}")
            h, w = h // k, w // k
        n = draw(st.integers(1, 9))
        ch = max(ch, n)                      # decoder_dim holds every block's channels
        layers.append(f"c{n}")
    layers += [f"l{draw(st.integers(1, 9))}" for _ in range(draw(st.integers(0, 2)))]
    dd = draw(st.sampled_from([ch, 2 * ch, 4 * ch, 16 * ch, 2048]))
    spec = _spec((c0, h0, w0), ",".join(layers), draw(st.integers(2, 11)), decoder_dim=dd,
                 relu_inv_slope=draw(st.sampled_from(SLOPES)))
    cap = draw(st.integers(1, 2 * side + 1))
    return spec, side, cap, draw(st.integers(0, 1000))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_networks())
def test_random_cnns_bit_exact_with_golden(net):
    spec, side, cap, seed = net
    geom = Geometry(side=side, **ROOMY)
    sizes = [cap, max(1, cap - side - 1), cap]
    assert _train_side_by_side(spec, geom, cap, seed=seed, sizes=sizes) == [[], [], []]


def test_steps_from_random_memories():
    """The programs read only words the host or an earlier instruction wrote (the borders:
    Plan.pack_init): exact from random memories (the iCE40's SPRAM starts undefined), with
    the full and the trimmed programs over stale samples."""
    spec = _spec((2, 7, 7), "c5,p,c3,l4", 3, decoder_dim=20)
    report = _train_side_by_side(spec, Geometry(side=4, **ROOMY), 9, seed=5, sizes=[9, 2, 6, 9],
                                 random_memories=True)
    assert report == [[], [], [], []]


def _digits(n, seed):
    ds = load_dataset("digits")
    x = Normaliser.fit(ds.x_train)(ds.x_train)
    order = np.random.default_rng(seed).permutation(len(x))[:n]
    return x[order]


def test_digits_small_cnn_two_steps():
    """The digits ``small`` CNN (c32,c64,p,l64 on 8x8) on real images at S = 8, batch 16."""
    layers, extra = ARCHITECTURES["small"]
    spec = NetworkSpec((1, 8, 8), 10, tuple(layers.split(",")), **extra)
    images = _digits(64, 0)
    report = _train_side_by_side(spec, Geometry(side=8, **ROOMY), 16, seed=1, lr_inv=512,
                                 sizes=[16, 13],
                                 images=lambda step, m, rng: images[16 * step:16 * step + m])
    assert report == [[], []]


def test_mnist_sized_cnn_two_steps():
    """c16,p,c32,p,c64,l64 on 28x28 at S = 8, batch 8 (the 16-bit addresses' limit: ACT
    62,708 of 65,536 words), the second step trimmed to 5 samples."""
    spec = _spec((1, 28, 28), "c16,p,c32,p,c64,l64", 10)
    plan = compile_network(spec, Geometry(side=8, **ROOMY), 8)
    assert plan.used[Region.ACT] <= 65536
    report = _train_side_by_side(spec, Geometry(side=8, **ROOMY), 8, seed=2, sizes=[8, 5])
    assert report == [[], []]


# --- the argmax path ----------------------------------------------------------------------

def test_ties_go_to_the_first_maximum():
    """Blank images make every activation of a block the same (NITRO-ReLU of a constant):
    every decoder window ties, and only its first position may take the error."""
    spec = _spec((1, 6, 6), "c3,c4", 3, decoder_dim=12)
    assert decoder_pool_geometry(3, 6, 6, 12).kh > 1

    def images(step, m, rng):
        x = rng.integers(-127, 128, size=(m, 1, 6, 6)).astype(np.int8)
        x[: m // 2 + 1] = 0                   # blank images: ties everywhere
        return x

    report = _train_side_by_side(spec, Geometry(side=2, **ROOMY), 5, seed=3, images=images)
    assert report == [[], [], []]


@pytest.mark.parametrize("layers,shape,dd", [("c3,c4", (1, 6, 6), 12), ("c5", (1, 7, 7), 20)])
def test_comparison_fails_without_the_argmax_mask(layers, shape, dd):
    """POOL_CODE replaced by POOL (codes not zeroed outside each window's maximum): the
    error reaches every position of a window and the conv weights differ from golden."""
    spec = _spec(shape, layers, 3, decoder_dim=dd)

    def no_mask(prog):
        return [dict(i, op=Op.POOL, aux_base=0) if i["op"] == Op.POOL_CODE else i for i in prog]

    def images(step, m, rng):
        x = rng.integers(-127, 128, size=(m,) + shape).astype(np.int8)
        x[0] = 0                              # a blank image: ties
        return x

    report = _train_side_by_side(spec, Geometry(side=2, **ROOMY), 4, seed=4, images=images,
                                 program_hook=no_mask)
    assert "block0.fwd" in report[0]


def test_pool_code_keeps_the_code_of_the_first_maximum_only():
    """POOL_CODE on one 2x2 window, lanes with ties: the first maximum in row-major order
    keeps its code, the other positions become ZERO; the pooled word is the maximum."""
    g = Geometry(side=4, act_depth=64, wgt_depth=16, err_depth=16, code_depth=64,
                 label_depth=16, prog_depth=4)
    m = IsaMachine(g)
    # a 2x2 map, one word a position (pb = 1 is not a layout the compiler makes, but the
    # machine does not care): positions (0,0), (0,1), (1,0), (1,1) at 0, 1, 2, 3
    window = [[5, 7, -3, 0], [5, 9, -3, 0], [6, 9, -4, 0], [1, 2, -3, 0]]
    codes = [[1, 0, 1, 2], [0, 0, 1, 0], [0, 1, 0, 1], [1, 1, 1, 1]]
    for pos, (v, c) in enumerate(zip(window, codes)):
        m.write(Region.ACT, pos * 4, [v] + [[0] * 4] * 3)
        m.write(Region.CODE, pos * 4, [c] + [[0] * 4] * 3)
    ins = empty_instruction(Op.POOL_CODE, a_base=0, a_tile_stride=4, tiles_r=1, tiles_c=1,
                            k_len=1, row_base=32, aux_base=0, windows=1, y_beats=2,
                            y_stride=8, x_beats=2, x_stride=4)
    m.run([ins, empty_instruction(Op.END)])
    assert m.read(Region.ACT, 32).tolist() == [6, 9, -3, 0]
    Z = ReluCode.ZERO
    assert m.read(Region.CODE, 0).tolist() == [Z, Z, 1, 2]     # lanes 2, 3: first of ties
    assert m.read(Region.CODE, 4).tolist() == [Z, 0, Z, Z]     # lane 1: 9 first here
    assert m.read(Region.CODE, 8).tolist() == [0, Z, Z, Z]     # lane 0: 6
    assert m.read(Region.CODE, 12).tolist() == [Z, Z, Z, Z]


def test_decoder_pools_never_read_padding_positions():
    """Padded decoder pools: every word POOL and POOL_CODE read is a real position of the
    block's map (the window classes), and padding's semantics matter here: golden with the
    authors' 0-padding trains differently."""
    spec = _spec((1, 7, 7), "c5", 3, decoder_dim=20)
    geom = Geometry(side=4, **ROOMY)
    plan = compile_network(spec, geom, 6)
    h = plan.grids["block0"]
    real = set()
    for base in (plan.regions["block0.h_fm"].base, plan.regions["block0.h_sm"].base):
        for y in range(h.h):
            for x in range(h.w):
                real.update(range(base + h.at(y, x), base + h.at(y, x) + h.pb))
    reads = []
    machine = IsaMachine(geom)
    original = machine._check_hazards

    def spy(where, r, w):
        if "POOL" in where:
            reads.extend(int(a) for a in np.concatenate(r[Region.ACT]))
        return original(where, r, w)

    machine._check_hazards = spy
    net = Network(spec, seed=1)
    machine.load(plan.pack_weights(net.weights()))
    rng = np.random.default_rng(1)
    x = rng.integers(-127, 128, size=(6, 1, 7, 7)).astype(np.int8)
    labels = rng.integers(0, 3, size=6)
    machine.load(plan.pack_batch(x, labels))
    machine.run(plan.program(256))
    assert reads and set(reads) <= real
    # the padding's value changes golden's training on this network
    zero = Network(_spec((1, 7, 7), "c5", 3, decoder_dim=20, decoder_pool_zero_pad=True), seed=1)
    zero.train_step(x, one_hot(labels, 3), 256)
    net.train_step(x, one_hot(labels, 3), 256)
    assert not np.array_equal(zero.weights()["block0.fwd"], net.weights()["block0.fwd"])
    got = plan.unpack_weights(machine.read_words)
    assert all(np.array_equal(got[k], v) for k, v in net.weights().items())


def test_window_classes():
    cls = compiler._window_classes
    assert cls(2, 4, 2, 7) == [(0, 1, 2, 2), (1, 1, 0, 4)]           # row 6 cropped
    assert cls(3, 4, 2, 9) == [(0, 1, 2, 2), (1, 1, 0, 4), (2, 1, 0, 3)]
    assert cls(4, 2, 1, 7) == [(0, 1, 1, 1), (1, 3, 0, 2)]
    assert cls(7, 4, 0, 28) == [(0, 7, 0, 4)]
    assert cls(1, 8, 4, 7) == [(0, 1, 4, 4)]


# --- overflow flags ---------------------------------------------------------------------

def test_conv_accumulator_overflow_raises_mac():
    """A conv block's forward sums beyond a 24-bit accumulator: OVERFLOW.mac (the sums wrap
    like the hardware's adder)."""
    spec = _spec((3, 5, 5), "c8", 3)
    geom = Geometry(side=4, **dict(ROOMY, acc_width=24))
    plan = compile_network(spec, geom, 4)
    ws = Network(spec, seed=0).weights()
    ws["block0.fwd"] = np.full_like(ws["block0.fwd"], 100_000)   # 27 * 127 * 1e5 > 2**23
    machine = IsaMachine(geom)
    machine.load(plan.pack_weights(ws))
    machine.load(plan.pack_batch(np.full((4, 3, 5, 5), 127, dtype=np.int8), np.zeros(4, int)))
    prog = plan.program(256)
    machine.run(prog[:1] + [prog[-1]])                            # the FORWARD alone
    assert prog[0]["op"] == Op.FORWARD and prog[0]["y_beats"] == 3
    assert machine.overflow == {"mac": True, "backerr": False, "sgd": False}
    ok = IsaMachine(Geometry(side=4, **ROOMY))
    ok.load(plan.pack_weights(ws))
    ok.load(plan.pack_batch(np.full((4, 3, 5, 5), 127, dtype=np.int8), np.zeros(4, int)))
    ok.run(prog[:1] + [prog[-1]])
    assert ok.overflow == CLEAN


def test_conv_backward_overflow_raises_backerr():
    """A conv block's back-propagated error beyond a 12-bit ERR lane: OVERFLOW.backerr, and
    it saturates before the ReLU backward."""
    spec = _spec((1, 4, 4), "c4", 3)
    geom = Geometry(side=4, **dict(ROOMY, err_width=12))
    plan = compile_network(spec, geom, 4)
    ws = Network(spec, seed=0).weights()
    ws["block0.local"] = np.full_like(ws["block0.local"], 20_000)
    machine = IsaMachine(geom)
    machine.load(plan.pack_weights(ws))
    machine.load(plan.pack_batch(np.ones((4, 1, 4, 4), dtype=np.int8), np.zeros(4, int)))
    prog = plan.program(256)
    upto = [i for i, ins in enumerate(prog) if ins["op"] == Op.BACKWARD][0]
    machine.run(prog[:upto + 1] + [prog[-1]])
    assert machine.overflow["backerr"] and not machine.overflow["mac"]
    d = machine.read(Region.ERR, plan.regions["d_sm"].base, plan.regions["d_sm"].words)
    assert np.abs(d).max() <= (1 << 11)


# --- layouts, packing, the program ------------------------------------------------------

def test_cnn_weights_round_trip():
    spec = _spec((3, 6, 5), "c5,p,c7,a,l9", 11, decoder_dim=30)
    geom = Geometry(side=4, **ROOMY)
    plan = compile_network(spec, geom, 8)
    rng = np.random.default_rng(7)
    ws = {k: rng.integers(-(1 << 17), 1 << 17, size=v.shape)
          for k, v in Network(spec, seed=0).weights().items()}
    machine = IsaMachine(geom)
    machine.load(plan.pack_weights(ws))
    back = plan.unpack_weights(machine.read_words)
    assert set(back) == set(ws) == set(plan.layer_names)
    for k in ws:
        assert back[k].dtype == np.int64 and np.array_equal(back[k], ws[k]), k
    # WlT holds the same values as Wl
    wl = machine.read(Region.WGT, plan.regions["block1.local"].base,
                      plan.regions["block1.local"].words)
    wlt = machine.read(Region.WGT, plan.regions["block1.local_t"].base,
                       plan.regions["block1.local_t"].words)
    assert sorted(wl.ravel().tolist()) == sorted(wlt.ravel().tolist())
    # the identity of the average pool: 256 on the diagonal
    ident = machine.read(Region.WGT, plan.regions["identity"].base,
                         plan.regions["identity"].words)
    assert ident.sum() == 256 * 8 and set(np.unique(ident)) == {0, 256}


def test_cnn_layout_formulas():
    """Input words land where the docstring says: fm ``pos*PB + g*C + c`` (a conv's input
    holds C channels), sm ``pos*PB + ct*Mp + m``, borders and padding 0; conv weights
    ``ft*9*Cp + (kk*3+ll)*Cp + c``."""
    spec = _spec((3, 3, 2), "c5", 4)
    geom = Geometry(side=2, **ROOMY)
    plan = compile_network(spec, geom, 3)
    S, Mp, G = 2, 4, 2
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(3, 3, 3, 2)).astype(np.int8)
    machine = IsaMachine(geom)
    machine.load(plan.pack_batch(x, np.array([0, 1, 3])))
    fm, sm = plan.regions["x_fm"].base, plan.regions["x_sm"].base
    Wg, Hg, Cp = 4, 5, 4
    for yy in range(Hg):
        for xx in range(Wg):
            pos = yy * Wg + xx
            real = 1 <= yy <= 3 and 1 <= xx <= 2
            for g in range(G):
                for c in range(3):
                    want = [int(x[g * S + i, c, yy - 1, xx - 1]) if real and g * S + i < 3 else 0
                            for i in range(S)]
                    assert machine.read(Region.ACT, fm + pos * G * 3 + g * 3 + c).tolist() == want
            for ct in range(Cp // S):
                for m in range(Mp):
                    want = [int(x[m, ct * S + j, yy - 1, xx - 1])
                            if real and m < 3 and ct * S + j < 3 else 0 for j in range(S)]
                    assert machine.read(Region.ACT, sm + pos * (Cp // S) * Mp + ct * Mp
                                        + m).tolist() == want
    w = Network(spec, seed=0).weights()["block0.fwd"]
    machine.load(plan.pack_weights(Network(spec, seed=0).weights()))
    base = plan.regions["block0.fwd"].base
    for ft in range(3):
        for kk in range(3):
            for ll in range(3):
                for c in range(Cp):
                    want = [int(w[ft * S + j, c, kk, ll]) if ft * S + j < 5 and c < 3 else 0
                            for j in range(S)]
                    got = machine.read(Region.WGT, base + ft * 9 * Cp + (kk * 3 + ll) * Cp + c)
                    assert got.tolist() == want


def test_cnn_programs_and_regions():
    spec = _spec((1, 8, 8), "c4,p,c6,l5", 3, decoder_dim=32)
    plan = compile_network(spec, Geometry(side=4, **ROOMY), 8)
    ops = [Op(i["op"]).name for i in plan.program(1)]
    assert ops == ["FORWARD", "POOL", "POOL_CODE", "LOSS", "BACKWARD", "SGD", "SGD",
                   "POOL", "POOL",
                   "FORWARD", "POOL", "POOL_CODE", "LOSS", "BACKWARD", "SGD", "SGD",
                   "FORWARD", "LOSS", "BACKWARD", "SGD", "SGD",
                   "LOSS", "SGD", "END"]
    assert plan.regions["program"].words == len(ops)
    # grids a conv block reads have a border and their own words; the others ping-pong
    assert plan.grids["x"].b == 1 and plan.grids["pool1"].b == 1
    assert plan.grids["block0"].b == 0 and plan.grids["block1"].b == 0
    assert plan.regions["block0.h_fm"] == plan.regions["h_fm.0"]
    assert plan.regions["block1.h_fm"] == plan.regions["h_fm.1"]
    assert plan.regions["block2.h_fm"] == plan.regions["h_fm.0"]
    spans = {}
    for a in plan.regions.values():
        spans.setdefault(a.region, set()).add((a.base, a.words))
    for region, ss in spans.items():
        ss = sorted(ss)
        for (b0, w0), (b1, _) in zip(ss, ss[1:]):
            assert b0 + w0 <= b1, region
    for name in ("block0.h_sm", "pooled_fm", "code", "d_sm", "block1.local_t"):
        assert name in plan.describe()
    assert "CNN c4,p,c6,l5" in plan.describe()
    # the pool unit's beats are not MAC-array beats
    assert plan.pool_beats() > 0
    assert plan.engine_beats() == sum(
        i["tiles_r"] * i["tiles_c"] * max(1, i["y_tiles"]) * max(1, i["y_repeat"])
        * max(1, i["x_tiles"]) * max(1, i["x_repeat"]) * i["k_len"] * max(1, i["y_beats"])
        * max(1, i["x_beats"]) for i in plan.program(1)[:-1] if i["op"] not in POOL_OPS)


@pytest.mark.parametrize("layers,shape,dd", [("c4,p,c6,l5", (1, 8, 8), 32),
                                             ("c3,a,c5,l4,l3", (2, 6, 6), 20)])
def test_every_weight_is_read_before_its_update(layers, shape, dd):
    """As golden: every read of a layer's weights (and of WlT) comes before the SGD that
    rewrites them, and each weight region is written by one instruction (its SGD)."""
    spec = _spec(shape, layers, 3, decoder_dim=dd)
    geom = Geometry(side=2, **ROOMY)
    plan = compile_network(spec, geom, 4)
    machine = IsaMachine(geom)
    log = []
    original = machine._check_hazards

    def spy(where, reads, writes):
        log.append((where, reads, writes))
        return original(where, reads, writes)

    machine._check_hazards = spy
    net = Network(spec, seed=0)
    machine.load(plan.pack_weights(net.weights()))
    machine.load(plan.pack_batch(np.ones((4,) + shape, dtype=np.int8), np.arange(4) % 3))
    machine.run(plan.program(256))
    weight_regions = [n for n in plan.regions if n.endswith((".fwd", ".local", ".local_t"))
                      or n == "output"]
    for name in weight_regions:
        a = plan.regions[name]
        span = set(range(a.base, a.base + a.words))
        read_at = [i for i, (_, r, _) in enumerate(log)
                   if span & set(np.concatenate(r.get(Region.WGT, [np.zeros(0, int)])).tolist())]
        write_at = [i for i, (_, _, w) in enumerate(log)
                    if span & set(np.concatenate(w.get(Region.WGT, [np.zeros(0, int)])).tolist())]
        assert len(write_at) == 1 and "SGD" in log[write_at[0]][0], name
        assert read_at and max(read_at) < write_at[0], name


def test_mlp_programs_leave_the_cnn_fields_zero():
    spec = _spec((1, 1, 13), "l5,l7", 4)
    plan = compile_network(spec, Geometry(side=4, **ROOMY), 10)
    for m in (None, 3):
        for ins in plan.program(256, m):
            assert all(ins[f] == 0 for f in CNN_FIELDS)
            assert ins["op"] in (Op.END, Op.FORWARD, Op.LOSS, Op.BACKWARD, Op.SGD)


@pytest.mark.parametrize("geom_kw,match", [
    (dict(err_depth=2048), r"ERR needs 4,(\d{3}) words, the trainer has 2,048"),
    (dict(code_depth=2048), r"CODE needs 4,096 words, the trainer has 2,048"),
    (dict(act_depth=16384), r"ACT needs [\d,]+ words, the trainer has 16,384"),
])
def test_cnn_does_not_fit(geom_kw, match):
    layers, extra = ARCHITECTURES["small"]
    spec = NetworkSpec((1, 8, 8), 10, tuple(layers.split(",")), **extra)
    with pytest.raises(DoesNotFit, match=match):
        compile_network(spec, Geometry(side=8, **dict(ROOMY, **geom_kw)), 8)


def test_level_counts_beyond_their_fields_do_not_fit():
    """A 300-wide map needs 300 tile steps of a spatial level: more than its 8-bit count."""
    spec = _spec((1, 1, 300), "c1", 2)
    with pytest.raises(DoesNotFit, match="x_tiles = 300 does not fit 8 bits"):
        compile_network(spec, Geometry(side=2, **ROOMY), 2)


def test_pack_batch_checks_cnn_input_shape():
    spec = _spec((2, 4, 4), "c3", 3)
    plan = compile_network(spec, Geometry(side=2, **ROOMY), 3)
    plan.pack_batch(np.zeros((2, 2, 4, 4), dtype=np.int8), np.zeros(2, int))
    with pytest.raises(ValueError, match="x must be"):
        plan.pack_batch(np.zeros((2, 32), dtype=np.int8), np.zeros(2, int))
    # the labels of padding samples
    blocks = plan.pack_batch(np.zeros((1, 2, 4, 4), dtype=np.int8), np.array([2]))
    assert blocks[2][2] == [2, PAD_LABEL, PAD_LABEL, PAD_LABEL]       # Mp = 4


def test_plan_is_a_plan():
    plan = compile_network(_spec((1, 4, 4), "c3", 3), Geometry(side=2, **ROOMY), 2)
    assert isinstance(plan, Plan) and plan.is_cnn and repr(plan).startswith("Plan(c3")


def test_largest_batch_of_a_cnn():
    """nitrod.board_build.network_max_batch on CNNs: the digits small CNN needs ACT 2,706.5,
    ERR 514 and CODE 512 words a sample at S = 8 and 27,552 of WGT: batch 24 with every
    memory 65,536 words deep, none on the ULX3S's Trainer geometry (built for the MNIST MLP)
    nor on the iCEBreaker's."""
    from boards.boards import ECP5_GEOMETRY, ICEBREAKER_GEOMETRY
    from nitrod.board_build import network_max_batch

    layers, extra = ARCHITECTURES["small"]
    spec = NetworkSpec((1, 8, 8), 10, tuple(layers.split(",")), **extra)
    assert network_max_batch(spec, Geometry(side=8, **ROOMY)) == (
        24, "ACT needs 86,608 words, the trainer has 65,536")
    batch, why = network_max_batch(spec, ECP5_GEOMETRY)
    assert batch is None
    assert why == ("ACT needs 21,652 words, the trainer has 16,384; WGT needs 27,552 words, "
                   "the trainer has 12,288; ERR needs 4,112 words, the trainer has 2,048; "
                   "CODE needs 4,096 words, the trainer has 2,048")
    batch, why = network_max_batch(spec, ICEBREAKER_GEOMETRY)
    assert batch is None and "WGT needs 84,192 words" in why
    plan = compile_network(spec, Geometry(side=8, **ROOMY), 16)
    per = plan.words_per_sample()
    assert per[Region.ERR] == 4112 * 2 / 16 and per[Region.CODE] == 512
