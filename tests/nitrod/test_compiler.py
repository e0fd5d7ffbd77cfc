"""nitrod.compiler + nitrod.isa_model: compiled MLP training steps are bit-exact with golden
(CNNs: test_cnn.py)."""

import numpy as np
import pytest

from golden.datasets import one_hot
from golden.network import Network, NetworkSpec
from hw.contract import (INSTRUCTION_FIELDS, PAD_LABEL, Geometry, Op, Region, pack_lanes,
                         pack_word, unpack_lanes, unpack_word)
from nitrod.compiler import (Allocation, CompileError, DoesNotFit, Plan, compile_network,
                             hardware_refusal)
from nitrod.isa_model import HazardError, IsaError, IsaMachine

BIG = dict(act_depth=8192, wgt_depth=8192, err_depth=2048, code_depth=2048, label_depth=256,
           prog_depth=64)


def _spec(in_features, hidden, classes, **kw):
    kw.setdefault("fwd_decay_inv", 700)
    kw.setdefault("subnet_decay_inv", 300)
    return NetworkSpec((1, 1, in_features), classes, tuple(f"l{n}" for n in hidden), **kw)


def _mismatches(plan, net, machine, yhat_golden, labels):
    """Names of everything the machine disagrees with golden on (empty: bit-exact)."""
    bad = []
    got = plan.unpack_weights(machine.read_words)
    for name, w in net.weights().items():
        if not np.array_equal(got[name], w):
            bad.append(name)
    if not np.array_equal(plan.unpack_yhat(machine.read_words, labels), yhat_golden):
        bad.append("yhat")
    return bad


# in_features, hidden, classes, side, batch capacity, seed, lr_inv, slope
CONFIGS = [
    (13, [5], 3, 2, 5, 1, 256, 4),
    (37, [13, 5], 12, 4, 70, 2, 512, 4),
    (5, [37, 13, 5], 7, 8, 21, 3, 128, 3),
    (20, [13], 10, 8, 64, 4, 512, 8),
    (9, [5, 37], 4, 4, 11, 5, 1024, 5),
    (37, [37, 5, 13], 12, 2, 33, 6, 300, 16),
    (16, [8, 8], 8, 8, 8, 7, 512, 4),
    (3, [2], 3, 4, 6, 8, 64, 20),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c[0]}-{'-'.join(map(str, c[1]))}-{c[2]}"
                         f"_S{c[3]}_M{c[4]}")
def test_training_steps_bit_exact_with_golden(cfg):
    k, hidden, classes, side, cap, seed, lr_inv, slope = cfg
    rng = np.random.default_rng(seed)
    spec = _spec(k, hidden, classes, relu_inv_slope=slope,
                 fwd_decay_inv=int(rng.integers(200, 5000)),
                 subnet_decay_inv=int(rng.integers(50, 3000)))
    geom = Geometry(side=side, **BIG)
    plan = compile_network(spec, geom, cap)
    net = Network(spec, seed=seed)
    machine = IsaMachine(geom)
    machine.load(plan.pack_weights(net.weights()))
    program = plan.program(lr_inv)
    assert program[-1]["op"] == Op.END and len(program) == 5 * len(hidden) + 3
    sizes = [cap, max(1, cap - side - 1), int(rng.integers(1, cap + 1))]   # full and partial
    for step, m in enumerate(sizes):
        x = rng.integers(-127, 128, size=(m, k)).astype(np.int8)
        labels = rng.integers(0, classes, size=m)
        machine.load(plan.pack_batch(x, labels))
        trimmed = step % 2 == 1          # alternate the full and the per-batch program
        prog = plan.program(lr_inv, m) if trimmed else program
        stats = machine.run(prog)
        yhat = net.train_step(x.reshape(m, 1, 1, k), one_hot(labels, classes), lr_inv)
        assert _mismatches(plan, net, machine, yhat, labels) == []
        assert stats.overflow == {"mac": False, "backerr": False, "sgd": False}
        assert stats.retired == len(prog) - 1
        assert stats.beats == plan.engine_beats(m if trimmed else None)
        if trimmed and m < plan.padded_batch:
            assert stats.beats < plan.engine_beats()
    assert plan.useful_macs(7) == net.macs_per_sample() * 7


def _trained_setup(seed=11):
    rng = np.random.default_rng(seed)
    spec = _spec(13, [5, 7], 4)
    geom = Geometry(side=4, **BIG)
    plan = compile_network(spec, geom, 10)
    net = Network(spec, seed=seed)
    x = rng.integers(-127, 128, size=(9, 13)).astype(np.int8)
    labels = rng.integers(0, 4, size=9)
    return plan, net, geom, x, labels


@pytest.mark.parametrize("mutation", ["x_fm_gets_x_sm", "no_local_t", "divisor", "tc_stride",
                                      "labels_shifted", "none"])
def test_comparison_catches_a_wrong_layout(mutation):
    """The bit-exact comparison is able to fail: each deliberate mistake breaks it."""
    plan, net, geom, x, labels = _trained_setup()
    machine = IsaMachine(geom)
    wblocks = plan.pack_weights(net.weights())
    if mutation == "no_local_t":
        wblocks = [b for b in wblocks if b[1] != plan.regions["block0.local_t"].base]
    machine.load(wblocks)
    bblocks = plan.pack_batch(x, labels)
    if mutation == "x_fm_gets_x_sm":
        (r0, b0, _), (r1, b1, w1) = bblocks[:2]
        bblocks = [(r0, b0, w1), (r1, b1, w1), bblocks[2]]
    if mutation == "labels_shifted":
        r, b, w = bblocks[2]
        bblocks = bblocks[:2] + [(r, b, w[1:] + w[:1])]
    machine.load(bblocks)
    program = plan.program(256)
    if mutation == "divisor":
        program[0] = dict(program[0], divisor=1)
    if mutation == "tc_stride":
        program[5] = dict(program[5], tc_stride=program[5]["tc_stride"] + 1)
    machine.run(program)
    yhat = net.train_step(x.reshape(9, 1, 1, 13), one_hot(labels, 4), 256)
    bad = _mismatches(plan, net, machine, yhat, labels)
    if mutation == "none":
        assert bad == []
    else:
        assert bad, mutation


@pytest.mark.parametrize("pad_errors", [True, False])
def test_per_batch_program_needs_no_padding_rule(pad_errors):
    """program(lr_inv, m) never reads padding rows: exact on a Trainer without the LOSS
    padding rule; the full program relies on the rule for a partial batch."""
    plan, net, geom, x, labels = _trained_setup(seed=12)
    x, labels = x[:5], labels[:5]                   # 5 of 10 (padded 12): padding rows
    results = {}
    for trimmed in (True, False):
        net2 = Network(plan.spec, seed=12)
        machine = IsaMachine(geom, pad_errors=pad_errors)
        machine.load(plan.pack_weights(net2.weights()))
        for _ in range(2):
            machine.load(plan.pack_batch(x, labels))
            machine.run(plan.program(256, 5) if trimmed else plan.program(256))
            yhat = net2.train_step(x.reshape(5, 1, 1, 13), one_hot(labels, 4), 256)
        results[trimmed] = _mismatches(plan, net2, machine, yhat, labels)
    assert results[True] == []
    if pad_errors:
        assert results[False] == []
    else:
        assert results[False] != []


def test_layout_formulas():
    """Words land where the documented formulas say (checked word by word)."""
    spec = _spec(6, [5], 3)
    geom = Geometry(side=4, **BIG)
    plan = compile_network(spec, geom, 6)
    S, Mp = 4, 8
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(6, 6)).astype(np.int8)
    labels = np.array([0, 1, 2, 2, 1, 0])
    machine = IsaMachine(geom)
    machine.load(plan.pack_batch(x, labels))
    fm, sm = plan.regions["x_fm"], plan.regions["x_sm"]
    Fp = 8
    for mb in range(Mp // S):
        for f in range(Fp):
            want = [int(x[mb * S + i, f]) if mb * S + i < 6 and f < 6 else 0 for i in range(S)]
            assert machine.read(Region.ACT, fm.base + mb * Fp + f).tolist() == want
    for fb in range(Fp // S):
        for m in range(Mp):
            want = [int(x[m, fb * S + j]) if m < 6 and fb * S + j < 6 else 0 for j in range(S)]
            assert machine.read(Region.ACT, sm.base + fb * Mp + m).tolist() == want
    lab = plan.regions["labels"]
    assert machine.read(Region.LABEL, lab.base, Mp).tolist() == labels.tolist() + [PAD_LABEL] * 2
    net = Network(spec, seed=1)
    machine.load(plan.pack_weights(net.weights()))
    w, wl = net.weights()["block0.fwd"], net.weights()["block0.local"]
    wa, la, ta = (plan.regions[n] for n in ("block0.fwd", "block0.local", "block0.local_t"))
    Kp, Np, Cp = 8, 8, 4
    for nb in range(Np // S):
        for k in range(Kp):
            want = [int(w[nb * S + j, k]) if nb * S + j < 5 and k < 6 else 0 for j in range(S)]
            assert machine.read(Region.WGT, wa.base + nb * Kp + k).tolist() == want
        for c in range(Cp):
            want = [int(wl[c, nb * S + i]) if nb * S + i < 5 and c < 3 else 0 for i in range(S)]
            assert machine.read(Region.WGT, ta.base + nb * Cp + c).tolist() == want
    for cb in range(Cp // S):
        for n in range(Np):
            want = [int(wl[cb * S + j, n]) if cb * S + j < 3 and n < 5 else 0 for j in range(S)]
            assert machine.read(Region.WGT, la.base + cb * Np + n).tolist() == want


def test_weight_round_trip_and_overflow():
    spec = _spec(11, [9, 6], 5)
    geom = Geometry(side=4, **BIG)
    plan = compile_network(spec, geom, 8)
    net = Network(spec, seed=4)
    rng = np.random.default_rng(4)
    ws = {k: rng.integers(-(1 << 17), 1 << 17, size=v.shape) for k, v in net.weights().items()}
    machine = IsaMachine(geom)
    machine.load(plan.pack_weights(ws))
    back = plan.unpack_weights(machine.read_words)
    assert set(back) == set(ws) == set(plan.layer_names)
    for k in ws:
        assert back[k].dtype == np.int64 and np.array_equal(back[k], ws[k]), k
    # every packed word is isa.pack_word of its lanes
    region, base, words = plan.pack_weights(ws)[0]
    lanes = machine.read(region, base, len(words))
    assert words == [pack_word(row, geom.wgt_width) for row in lanes]
    assert np.array_equal(unpack_lanes(words, geom.wgt_width, 4),
                          [unpack_word(w, geom.wgt_width, 4) for w in words])
    ws["block1.local"] = ws["block1.local"].copy()
    ws["block1.local"][2, 3] = 1 << 17
    with pytest.raises(OverflowError, match="block1.local"):
        plan.pack_weights(ws)
    with pytest.raises(ValueError, match="block0.fwd"):
        plan.pack_weights(dict(ws, **{"block0.fwd": np.zeros((9, 12), dtype=np.int64)}))
    with pytest.raises(KeyError):
        plan.pack_weights({k: v for k, v in ws.items() if k != "output"})


def test_pack_lanes_matches_isa_pack_word():
    rng = np.random.default_rng(1)
    for width, lanes in ((9, 8), (18, 4), (24, 2)):
        v = rng.integers(-(1 << (width - 1)), 1 << (width - 1), size=(20, lanes))
        words = pack_lanes(v, width)
        assert words == [pack_word(r, width) for r in v]
        assert np.array_equal(unpack_lanes(words, width, lanes), v)
    with pytest.raises(OverflowError):
        pack_lanes(np.array([[256, 0]]), 9)


def test_pack_batch_rejects_bad_input():
    plan = compile_network(_spec(6, [5], 3), Geometry(side=4, **BIG), 6)
    x = np.zeros((4, 6), dtype=np.int8)
    y = np.zeros(4, dtype=np.int64)
    plan.pack_batch(x, y)
    plan.pack_batch(x.reshape(4, 1, 1, 6), y)
    for bad_x, bad_y in [
        (np.zeros((4, 5), dtype=np.int8), y),            # features
        (np.zeros((7, 6), dtype=np.int8), np.zeros(7, dtype=np.int64)),  # > batch
        (np.zeros((0, 6), dtype=np.int8), np.zeros(0, dtype=np.int64)),
        (np.zeros((4, 6), dtype=np.float32), y),          # dtype
        (np.full((4, 6), 128, dtype=np.int64), y),        # range
        (x, np.zeros(3, dtype=np.int64)),                 # labels shape
        (x, np.full(4, 3)),                               # label >= classes
        (x, np.full(4, -1)),
        (x, np.zeros(4, dtype=np.float64)),
    ]:
        with pytest.raises(ValueError):
            plan.pack_batch(bad_x, bad_y)


def test_compile_errors():
    g = Geometry(side=4, **BIG)
    # a CNN compiles; a core without RUNS_CNN refuses it (hardware_refusal)
    cnn = NetworkSpec((1, 4, 4), 3, ("c4", "l5"))
    compile_network(cnn, g, 8)
    assert "RUNS_CNN" in hardware_refusal(cnn)
    assert hardware_refusal(cnn, runs_cnn=True) is None
    assert hardware_refusal(_spec(6, [5], 3)) is None
    assert "int8 loss error" in hardware_refusal(_spec(6, [5], 3, int8_loss_error=True),
                                                 runs_cnn=True)
    with pytest.raises(CompileError, match="average pool before the first conv block"):
        compile_network(NetworkSpec((1, 4, 4), 3, ("p", "a", "c4")), g, 8)
    with pytest.raises(CompileError, match="does not implement the int8 loss error"):
        compile_network(_spec(6, [5], 3, int8_loss_error=True), g, 8)
    # every quirk of the authors' mode is refused, not silently ignored
    with pytest.raises(CompileError, match="int32 wrapping accumulators"):
        compile_network(_spec(6, [5], 3, int32_wrap=True), g, 8)
    assert issubclass(DoesNotFit, CompileError) and issubclass(CompileError, ValueError)


@pytest.mark.parametrize("geom_kw,spec_args,batch,match", [
    (dict(wgt_depth=512), (64, [40], 10), 8, r"WGT needs 1,\d{3} words, the trainer has 512"),
    (dict(act_depth=256), (300, [8], 10), 16, r"ACT needs [\d,]+ words, the trainer has 256"),
    (dict(err_depth=64), (8, [40], 10), 32, r"ERR needs [\d,]+ words, the trainer has 64"),
    (dict(code_depth=32), (8, [40], 10), 32, r"CODE needs [\d,]+ words, the trainer has 32"),
    (dict(prog_depth=12), (8, [4, 4], 3), 8, r"PROG needs 13 words, the trainer has 12"),
    (dict(label_depth=16), (8, [4], 3), 17, r"LABEL needs 20 words"),
    (dict(divisor_max=50), (51, [4], 3), 8, r"block0 forward.*divisor.*51.*DIVISOR_MAX 50"),
    (dict(divisor_max=50), (8, [60], 3), 8, r"block0 local classifier.*60"),
    (dict(d_w_width=9), (8, [4], 3), 8, r"fwd_decay_inv = 700"),
    (dict(), (8, [4], 256), 8, r"256 classes"),
    (dict(side=8), (8, [4], 250), 8, r"250 classes \(padded to 256\)"),
])
def test_does_not_fit(geom_kw, spec_args, batch, match):
    g = Geometry(**dict(BIG, side=4, **geom_kw)) if "side" not in geom_kw else \
        Geometry(**dict(BIG, **geom_kw))
    k, hidden, classes = spec_args
    with pytest.raises(DoesNotFit, match=match):
        compile_network(_spec(k, hidden, classes), g, batch)
    if "classes" not in match:   # the same network fits a roomy trainer
        compile_network(_spec(k, hidden, classes), Geometry(side=4, **dict(BIG, wgt_depth=65536,
                                                                      act_depth=65536)), batch)


def test_learning_rate_must_fit_d_g():
    plan = compile_network(_spec(8, [4], 10), Geometry(side=4, **dict(BIG, d_g_width=16)), 8)
    plan.program(100)               # 100 * 640 < 2**16
    with pytest.raises(DoesNotFit, match="D_G_WIDTH"):
        plan.program(103)           # 103 * 640 >= 2**16


def test_describe_and_regions():
    plan = compile_network(_spec(13, [7, 5, 6], 4), Geometry(side=4, **BIG), 10)
    text = plan.describe()
    for name in ("x_fm", "block2.fwd", "block1.local_t", "output", "ACT", "WGT", "LABEL"):
        assert name in text
    assert isinstance(plan.regions["output"], Allocation)
    assert plan.regions["block0.h_fm"] == plan.regions["block2.h_fm"] != plan.regions["block1.h_fm"]
    # no two distinct (non-aliased) regions of one memory overlap
    spans = {}
    for name, a in plan.regions.items():
        spans.setdefault(a.region, set()).add((a.base, a.words))
    for region, ss in spans.items():
        ss = sorted(ss)
        for (b0, w0), (b1, _) in zip(ss, ss[1:]):
            assert b0 + w0 <= b1, region
    assert isinstance(plan, Plan) and plan.padded_batch == 12


# --- the machine's overflow flags, bounds and hazards -----------------------------------

def _ins(**f):
    ins = {name: 0 for name, _ in INSTRUCTION_FIELDS}
    ins.update(row_len=0xFFFF, col_len=0xFFFF)      # no masking unless asked for
    ins.update(f)
    return ins


def _sgd_machine(w_value, a_value, b_value, **geom):
    g = Geometry(side=2, act_depth=16, wgt_depth=16, err_depth=16, code_depth=16, label_depth=16,
                 prog_depth=4, **geom)
    m = IsaMachine(g)
    m.write(Region.ACT, 0, [[a_value, a_value]] * 4)
    m.write(Region.ERR, 0, [[b_value, b_value]] * 4)
    m.write(Region.WGT, 0, [[w_value, -w_value]] * 2)
    prog = [_ins(op=Op.SGD, b_src=1, a_base=0, a_k_stride=1, b_base=0, b_k_stride=1, k_len=4,
                 tiles_r=1, tiles_c=1, row_base=0, tc_stride=2, d_g=1, d_w=0), _ins(op=Op.END)]
    return m, prog


def test_sgd_overflow_saturates():
    m, prog = _sgd_machine(120000, -100, 100)       # w - 4*(-100*100) = w + 40000
    stats = m.run(prog)
    assert stats.overflow == {"mac": False, "backerr": False, "sgd": True}
    assert m.read(Region.WGT, 0).tolist() == [(1 << 17) - 1, -120000 + 40000]
    m, prog = _sgd_machine(80000, -100, 100)         # fits: no flag
    assert m.run(prog).overflow["sgd"] is False
    assert m.read(Region.WGT, 0).tolist() == [120000, -40000]


def test_backerr_overflow_saturates_before_relu_backward():
    g = Geometry(side=2, act_depth=16, wgt_depth=16, err_depth=16, code_depth=16, label_depth=16,
                 prog_depth=4)
    m = IsaMachine(g)
    m.write(Region.ACT, 0, [[255, 1]] * 4)
    m.write(Region.WGT, 0, [[(1 << 17) - 1, -3]] * 4)
    m.write(Region.CODE, 0, [[0, 1], [1, 2]])        # rows 0, 1: PASS/DIV, DIV/ZERO
    prog = [_ins(op=Op.BACKWARD, inv_slope=4, a_k_stride=1, b_k_stride=1, k_len=4, tiles_r=1,
                 tiles_c=1, row_base=4, tc_stride=2, aux_base=0), _ins(op=Op.END)]
    assert m.run(prog).overflow == {"mac": False, "backerr": True, "sgd": False}
    top = (1 << 23) - 1
    assert m.read(Region.ERR, 4).tolist() == [top, -765]       # PASS saturated; DIV tdiv(-3060, 4)
    assert m.read(Region.ERR, 5).tolist() == [(4 * ((1 << 17) - 1)) // 4, 0]
    # without the overflow: no flag
    m.clear_overflow()
    m.write(Region.WGT, 0, [[1000, -3]] * 4)
    assert m.run(prog).overflow["backerr"] is False
    assert m.read(Region.ERR, 4).tolist() == [255 * 4000, -(255 * 12) // 4]


def test_mac_overflow_partial_sums():
    g = Geometry(side=2, act_depth=16, wgt_depth=16, err_depth=16, code_depth=16, label_depth=16,
                 prog_depth=4, acc_width=20)
    m = IsaMachine(g)
    # partial sums reach 2*255*1100 = 561,000 > 2**19 - 1, the total is 0: still an overflow
    m.write(Region.ACT, 0, [[255, 0], [255, 0], [-255, 0], [-255, 0]])
    m.write(Region.WGT, 0, [[1100, 0]] * 4)
    m.write(Region.LABEL, 0, [PAD_LABEL - 1, PAD_LABEL])
    prog = [_ins(op=Op.LOSS, a_k_stride=1, b_k_stride=1, k_len=4, tiles_r=1, tiles_c=1,
                 row_base=0, tc_stride=2, divisor=1), _ins(op=Op.END)]
    assert m.run(prog).overflow == {"mac": True, "backerr": False, "sgd": False}
    m2 = IsaMachine(g)
    m2.write(Region.ACT, 0, [[255, 0], [-255, 0], [255, 0], [-255, 0]])   # partials stay small
    m2.write(Region.WGT, 0, [[1100, 0]] * 4)
    assert m2.run(prog).overflow["mac"] is False


def test_loss_pads_and_targets():
    g = Geometry(side=2, act_depth=16, wgt_depth=16, err_depth=16, code_depth=16, label_depth=16,
                 prog_depth=4)
    m = IsaMachine(g)
    m.write(Region.ACT, 0, [[256 // 2, 0], [0, 0]])        # sample 0: 128, sample 1: 0
    m.write(Region.WGT, 0, [[10, -20], [0, 0]])
    m.write(Region.LABEL, 0, [1, 4])                      # sample 1 padding (4 >= 2 columns)
    prog = [_ins(op=Op.LOSS, a_k_stride=1, b_k_stride=1, k_len=2, tiles_r=1, tiles_c=1,
                 row_base=0, tc_stride=2, divisor=1, col_en=1, col_base=8, col_tr_stride=2),
            _ins(op=Op.END)]
    m.run(prog)
    # acc = 1280, -2560 -> Scale(/256) = 5, -10; label 1 subtracts 32 there
    assert m.read(Region.ERR, 0).tolist() == [5, -42]
    assert m.read(Region.ERR, 1).tolist() == [0, 0]
    assert m.read(Region.ACT, 8, 2).tolist() == [[5, 0], [-42, 0]]


def test_machine_catches_compiler_bugs():
    g = Geometry(side=2, act_depth=16, wgt_depth=16, err_depth=16, code_depth=16, label_depth=16,
                 prog_depth=4)
    m = IsaMachine(g)
    fwd = _ins(op=Op.FORWARD, inv_slope=4, a_k_stride=1, b_k_stride=1, k_len=2, tiles_r=1,
               tiles_c=1, row_base=4, tc_stride=2, aux_base=0, divisor=2)
    m.run([fwd, _ins(op=Op.END)])
    with pytest.raises(IndexError, match="ACT address 16"):
        m.run([dict(fwd, row_base=15), _ins(op=Op.END)])
    with pytest.raises(IndexError, match="WGT address 17"):
        m.run([dict(fwd, b_base=16), _ins(op=Op.END)])
    with pytest.raises(IndexError, match="CODE"):
        m.run([dict(fwd, aux_base=15), _ins(op=Op.END)])
    with pytest.raises(HazardError, match="ACT"):
        m.run([dict(fwd, row_base=1), _ins(op=Op.END)])          # overwrites its operand A
    with pytest.raises(HazardError, match="more than once"):
        m.run([dict(fwd, col_en=1, col_base=5), _ins(op=Op.END)])  # cols onto rows
    with pytest.raises(IsaError, match="inv_slope"):
        m.run([dict(fwd, inv_slope=6), _ins(op=Op.END)])
    with pytest.raises(IsaError, match="divisor"):
        m.run([dict(fwd, divisor=0), _ins(op=Op.END)])
    with pytest.raises(IndexError, match="PROG"):
        m.run([fwd])                                              # no END
    with pytest.raises(IndexError, match="PROG"):
        m.run([fwd] * 4 + [_ins(op=Op.END)])                      # longer than PROG
    with pytest.raises(IndexError, match="LABEL"):
        m.write(Region.LABEL, 16, 3)
    with pytest.raises(OverflowError, match="ACT"):
        m.write(Region.ACT, 0, [256, 0])


def test_padding_stays_zero_while_training():
    """The row_len/col_len masks keep every padded word 0 (NITRO-ReLU(0) is not 0: without
    them padded neurons would train as phantom ones); checked over the whole WGT/ACT/ERR."""
    rng = np.random.default_rng(11)
    spec = _spec(13, [7, 5], 6)
    geom = Geometry(side=4, **BIG)
    plan = compile_network(spec, geom, 10)
    net = Network(spec, seed=3)
    machine = IsaMachine(geom)
    machine.load(plan.pack_weights(net.weights()))
    for m in (10, 7, 10):
        x = rng.integers(-127, 128, size=(m, 13)).astype(np.int8)
        labels = rng.integers(0, 6, size=m)
        machine.load(plan.pack_batch(x, labels))
        machine.run(plan.program(256))          # the full-batch program: padded samples too
        net.train_step(x.reshape(m, 1, 1, 13), one_hot(labels, 6), 256)
    # re-packing the golden weights gives exactly the words in WGT, padding included
    for region, base, words in plan.pack_weights(net.weights()):
        assert machine.read_words(region, base, len(words)) == words
    # and the hidden activations' padded neuron (lane 3 of block 1: neuron 7 of 7) is 0
    mp = plan.padded_batch
    h = machine.read(Region.ACT, plan.regions["block0.h_sm"].base + mp, 10)   # neurons 4..7
    assert h.shape == (10, 4)
    assert (h[:, 3] == 0).all() and (h[:, :3] != 0).any()


@pytest.mark.parametrize("layers, shape", [(("l100", "l50"), (1, 1, 784)),
                                           (("c32", "c64", "p", "l64"), (1, 8, 8)),
                                           (("c3", "a", "c5"), (2, 6, 5))])
def test_each_instruction_names_its_product_and_the_products_share_the_useful_macs(layers,
                                                                                   shape):
    """``instruction_products``: one of PRODUCTS per instruction (END excluded), the one its
    op computes; ``product_macs`` adds up to golden's MACs per sample, the pools' none."""
    from nitrod.compiler import PRODUCTS

    spec = NetworkSpec(shape, 10, layers, fwd_decay_inv=30000)
    plan = compile_network(spec, Geometry(side=8, act_depth=65536, wgt_depth=65536,
                                          err_depth=16384, code_depth=16384, label_depth=64,
                                          prog_depth=256), 16)
    ops = {"forward": {Op.FORWARD}, "loss": {Op.LOSS}, "backward": {Op.BACKWARD},
           "classifier sgd": {Op.SGD}, "block sgd": {Op.SGD},
           "pool": {Op.POOL, Op.POOL_CODE, Op.SCALE}}
    program, products = plan.program(512, 5), plan.instruction_products(5)
    assert len(products) == len(program) - 1
    for ins, product in zip(program, products):
        assert ins["op"] in ops[product], (ins["op"], product)
    blocks = sum(1 for x in layers if x[0] in "cl")
    assert products.count("block sgd") == products.count("forward") == blocks
    assert products.count("classifier sgd") == products.count("loss") == blocks + 1
    macs = plan.product_macs(5)
    assert set(macs) == set(PRODUCTS) and macs["pool"] == 0
    assert sum(macs.values()) == 5 * Network(spec).macs_per_sample() == plan.useful_macs(5)
    assert macs["forward"] == macs["block sgd"]


def test_a_profiled_step_needs_room_for_an_end_after_each_instruction():
    """``AcceleratorBackend.profile_step`` refuses, before touching the bus, a PROG that
    cannot hold an END after every instruction of the step."""
    from nitrod.backends import AcceleratorBackend

    spec = NetworkSpec((1, 1, 13), 5, ("l7",))
    backend = AcceleratorBackend.__new__(AcceleratorBackend)   # no bus: nothing may be sent
    backend.geometry = Geometry(side=4, prog_depth=12)
    backend.plan = compile_network(spec, backend.geometry, 8)
    assert len(backend.plan.program(256, 8)) == 8                # fits PROG itself
    x = np.zeros((8, 13), dtype=np.int8)
    with pytest.raises(CompileError, match="7 instructions needs 14 program words; PROG "
                                           "holds 12"):
        backend.profile_step(x, one_hot(np.zeros(8, dtype=int), 5), 256)
