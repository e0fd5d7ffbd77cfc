"""``compat="authors"``: each quirk of the authors' code, present in authors mode and absent in
spec mode (golden/compat.py), the modes' plumbing, checkpoints and the command line."""

import json

import numpy as np
import pytest

from golden.arith import exact_matmul, nitro_relu, nitro_relu_backward, nitro_scale
from golden.blocks import ConvBlock, amplification, loss_error
from golden.compat import NETWORK_QUIRKS, int32_matmul, wrap_int32
from golden.datasets import Dataset, load_dataset, one_hot
from golden.layers import flatten, linear, linear_weight_grad
from golden.network import Network, NetworkSpec, parse_layers
from golden.optim import sgd_update
from golden.train import TrainConfig, evaluate, load_checkpoint, train
from golden.ranges import RangeTracker
from nitrod.cli import main

from tests.support import slow_reference as ref

INT32_MAX = 2 ** 31 - 1


def _batch(rng, shape, n, classes):
    x = rng.integers(-128, 128, size=(n,) + shape).astype(np.int8)
    return x, one_hot(rng.integers(0, classes, size=n), classes)


def _py_wrap32(v: int) -> int:
    return (v + 2 ** 31) % 2 ** 32 - 2 ** 31


# --- the modes ---------------------------------------------------------------------------

def test_spec_is_the_default_and_authors_turns_every_network_quirk_on():
    base = dict(input_shape=(1, 4, 4), classes=3, layers=("c2", "p", "l5"))
    spec = NetworkSpec(**base)
    assert spec.compat == "spec" and not any(getattr(spec, q) for q in NETWORK_QUIRKS)
    authors = NetworkSpec(**base, compat="authors")
    assert all(getattr(authors, q) for q in NETWORK_QUIRKS)
    assert authors.int8_loss_error            # authors mode implies --int8-loss-error
    with pytest.raises(ValueError, match="compat"):
        NetworkSpec(**base, compat="paper")
    assert TrainConfig().compat == "spec" and not TrainConfig().drop_last_batch
    assert TrainConfig(compat="authors").drop_last_batch
    with pytest.raises(ValueError, match="compat"):
        TrainConfig(compat="nope")


def test_active_quirks_name_only_what_changes_the_network():
    mlp = NetworkSpec((1, 8, 8), 10, ("l100", "l50"), compat="authors")
    assert mlp.active_quirks() == ("int8_loss_error", "int32_wrap")
    small = NetworkSpec((1, 8, 8), 10, parse_layers("c32,c64,p,l64"), compat="authors")
    assert small.active_quirks() == ("int8_loss_error", "int32_wrap", "double_linear_update")
    # the third conv block works on 7x7: its decoder pool (2x1 kernel) is padded
    padded = NetworkSpec((1, 28, 28), 10, parse_layers("c16,p,c32,p,c64,l64"), compat="authors")
    assert "decoder_pool_zero_pad" in padded.active_quirks()
    assert NetworkSpec((1, 8, 8), 10, ("c4",), compat="authors").active_quirks() == (
        "int8_loss_error", "int32_wrap")       # a CNN without linear blocks: nothing to update twice
    assert NetworkSpec((1, 8, 8), 10, ("l10",)).active_quirks() == ()


def test_spec_json_round_trip_and_old_json_without_compat():
    spec = NetworkSpec((1, 4, 4), 3, ("c2", "p", "l5"), compat="authors")
    assert NetworkSpec.from_json(spec.to_json()) == spec
    one = NetworkSpec((1, 4, 4), 3, ("l5",), decoder_pool_zero_pad=True)
    assert NetworkSpec.from_json(one.to_json()) == one
    old = json.loads(NetworkSpec((1, 4, 4), 3, ("l5",)).to_json())
    for name in ("compat", "int32_wrap", "double_linear_update", "decoder_pool_zero_pad"):
        del old[name]
    assert NetworkSpec.from_json(json.dumps(old)) == NetworkSpec((1, 4, 4), 3, ("l5",))


# --- double update of linear blocks in CNNs ----------------------------------------------

def _learn(w, wl, x, y, h, t, lr, classes, a, fwd_decay, sub_decay):
    """A linear block's learning part from stored x, y, h (golden's primitives)."""
    yl = nitro_scale(linear(h, wl), wl.shape[1])
    e = loss_error(yl, t)
    d = exact_matmul(e, wl)
    wl2 = sgd_update(wl, linear_weight_grad(e, h), lr, 1, sub_decay)
    d = nitro_relu_backward(d, y, a)
    w2 = sgd_update(w, linear_weight_grad(d, x), lr, amplification(classes), fwd_decay)
    return w2, wl2


@pytest.mark.parametrize("seed", range(3))
def test_cnn_linear_blocks_are_updated_twice_in_authors_mode(seed):
    rng = np.random.default_rng(seed)
    classes, lr, fd, sd = 3, 1, 7, 5
    base = dict(input_shape=(1, 4, 4), classes=classes, layers=("c2", "p", "l5", "l4"),
                decoder_dim=8, fwd_decay_inv=fd, subnet_decay_inv=sd)
    once = Network(NetworkSpec(**base), seed=seed)
    twice = Network(NetworkSpec(**base, double_linear_update=True), seed=seed)
    # weights large enough that every update moves them
    w = {k: rng.integers(-2 ** 12, 2 ** 12, size=v.shape) for k, v in once.weights().items()}
    for net in (once, twice):
        net.load_weights(w)
    x, t = _batch(rng, (1, 4, 4), 6, classes)

    # the inputs each linear block sees in the forward pass (weights before the step)
    xin = {}
    v = x
    for s in once.stages:
        v = flatten(v) if s.kind == "linear" and v.ndim > 2 else v
        xin[s.name] = v
        v = s.forward(v)

    once.train_step(x, t, lr)
    twice.train_step(x, t, lr)
    got_once, got_twice = once.weights(), twice.weights()
    for s in once.stages:
        if s.kind != "linear":
            continue
        wf, wl = w[f"{s.name}.fwd"], w[f"{s.name}.local"]
        xs = xin[s.name]
        y = nitro_scale(linear(xs, wf), wf.shape[1])
        h = nitro_relu(y, 4)
        w1, wl1 = _learn(wf, wl, xs, y, h, t, lr, classes, 4, fd, sd)
        # the second time: the stored x, y, h with the once-updated weights
        w2, wl2 = _learn(w1, wl1, xs, y, h, t, lr, classes, 4, fd, sd)
        assert got_once[f"{s.name}.fwd"].tolist() == w1.tolist()
        assert got_once[f"{s.name}.local"].tolist() == wl1.tolist()
        assert got_twice[f"{s.name}.fwd"].tolist() == w2.tolist()
        assert got_twice[f"{s.name}.local"].tolist() == wl2.tolist()
        assert not np.array_equal(w2, w1)
        # the test tells the order apart: recomputing the forward pass with the updated
        # weights before the second learning part would give other weights
        y_re = nitro_scale(linear(xs, w1), wf.shape[1])
        w2_re, wl2_re = _learn(w1, wl1, xs, y_re, nitro_relu(y_re, 4), t, lr, classes, 4, fd, sd)
        assert not (np.array_equal(w2_re, w2) and np.array_equal(wl2_re, wl2))
    # conv blocks and the output layer are updated once
    for name in ("block0.fwd", "block0.local", "output"):
        assert got_twice[name].tolist() == got_once[name].tolist()


def test_mlps_are_never_updated_twice():
    rng = np.random.default_rng(3)
    base = dict(input_shape=(1, 3, 3), classes=3, layers=("l6", "l4"), fwd_decay_inv=13,
                subnet_decay_inv=9)
    a = Network(NetworkSpec(**base), seed=1)
    b = Network(NetworkSpec(**base, double_linear_update=True), seed=1)
    for _ in range(3):
        x, t = _batch(rng, (1, 3, 3), 5, 3)
        a.train_step(x, t, 2)
        b.train_step(x, t, 2)
    assert all(np.array_equal(a.weights()[k], b.weights()[k]) for k in a.weights())


def test_authors_mode_mlp_is_the_int8_loss_error_mlp():
    """MLPs: authors mode differs from --int8-loss-error only where int32 accumulators wrap."""
    rng = np.random.default_rng(4)
    base = dict(input_shape=(1, 8, 8), classes=10, layers=("l20", "l10"))
    a = Network(NetworkSpec(**base, compat="authors"), seed=2)
    b = Network(NetworkSpec(**base, int8_loss_error=True), seed=2)
    tracker = RangeTracker()
    for _ in range(10):
        x, t = _batch(rng, (1, 8, 8), 16, 10)
        assert np.array_equal(a.train_step(x, t, 64), b.train_step(x, t, 64, observe=tracker))
    assert all(np.array_equal(a.weights()[k], b.weights()[k]) for k in a.weights())
    assert max(tracker.by_kind.values()) < 2 ** 31


# --- the int8 loss error -----------------------------------------------------------------

@pytest.mark.parametrize("mode", ["spec", "authors"])
def test_int8_loss_error_wraps_in_authors_mode_only(mode):
    classes = 3
    net = Network(NetworkSpec((1, 1, 4), classes, ("l2",), compat=mode), seed=0)
    w = net.weights()
    w["block0.fwd"] = np.zeros_like(w["block0.fwd"])      # h = relu(0) = -36 everywhere
    w["output"] = np.full_like(w["output"], 1024)         # yhat = -127 for every class
    net.load_weights(w)
    x = np.ones((1, 1, 1, 4), dtype=np.int8)
    t = one_hot(np.array([1]), classes)
    seen = {}
    net.train_step(x, t, 1, observe=lambda k, l, a: seen.setdefault((k, l), a.copy()))
    e = seen[("local_error", "output")]
    # -127 - 32 = -159 on the true class: exact in the spec, wrapped to 97 in int8 by the authors
    assert e.tolist() == [[-127, 97 if mode == "authors" else -159, -127]]
    h = np.full((1, 2), -36)
    want = sgd_update(w["output"], exact_matmul(e.T.astype(np.int64), h), 1, 1, 3000)
    assert net.weights()["output"].tolist() == want.tolist()


# --- int32 wrap-around -------------------------------------------------------------------

def test_int32_matmul_is_the_wrapped_exact_product():
    rng = np.random.default_rng(0)
    for lim_a, lim_b, k in [(128, 2 ** 24, 50), (2 ** 31, 2 ** 31, 7), (2 ** 40, 2 ** 40, 5),
                            (2 ** 62, 2 ** 62, 9)]:        # the last could overflow int64
        a = rng.integers(-lim_a, lim_a, size=(3, k))
        b = rng.integers(-lim_b, lim_b, size=(k, 4))
        got = int32_matmul(a, b)
        want = [[_py_wrap32(sum(int(a[i, t]) * int(b[t, j]) for t in range(k)))
                 for j in range(4)] for i in range(3)]
        assert got.tolist() == want
        assert got.min() >= -2 ** 31 and got.max() <= INT32_MAX
    assert wrap_int32(np.array([2 ** 31, -2 ** 31 - 1, 2 ** 32 + 5])).tolist() == [
        -2 ** 31, INT32_MAX, 5]


@pytest.mark.parametrize("mode", ["spec", "authors"])
def test_int32_wrap_of_forward_sums_and_gradients(mode):
    """A linear block whose forward sums and gradients pass 2**31: wrapped in authors mode only."""
    rng = np.random.default_rng(1)
    classes, fin, fout, lr = 3, 64, 4, 1
    net = Network(NetworkSpec((1, 8, 8), classes, (f"l{fout}",), fwd_decay_inv=0,
                              subnet_decay_inv=0, int32_wrap=(mode == "authors")), seed=0)
    w = net.weights()
    w["block0.fwd"] = rng.integers(-2 ** 26, 2 ** 26, size=(fout, fin))
    w["block0.local"] = rng.integers(-2 ** 24, 2 ** 24, size=(classes, fout))
    net.load_weights(w)
    x, t = _batch(rng, (1, 8, 8), 8, classes)
    xf = flatten(x)
    tracker = RangeTracker()
    net.train_step(x, t, lr, observe=tracker)

    wrap = (lambda a: (a + 2 ** 31) % 2 ** 32 - 2 ** 31) if mode == "authors" else (lambda a: a)
    z = exact_matmul(xf, w["block0.fwd"].T)
    assert np.abs(z).max() > 2 ** 31                      # the exact sums need more than int32
    y = nitro_scale(wrap(z), fin)
    h = nitro_relu(y, 4)
    e = loss_error(nitro_scale(wrap(exact_matmul(h, w["block0.local"].T)), fout), t)
    d = nitro_relu_backward(wrap(exact_matmul(e, w["block0.local"])), y, 4)
    g = wrap(exact_matmul(d.T, xf))
    want = sgd_update(w["block0.fwd"], g, lr, amplification(classes), 0)
    assert net.weights()["block0.fwd"].tolist() == want.tolist()
    big = tracker.by_kind["forward_acc"]
    assert (big <= 2 ** 31) if mode == "authors" else (big > 2 ** 31)


def test_int32_wrap_changes_training_at_a_huge_learning_rate():
    """lr_inv 16 on digits (the recipe: 512): weight gradients pass 2**31 within an epoch,
    int32 wraps them."""
    ds = load_dataset("digits")
    runs = {}
    for wrap in (False, True):
        spec = NetworkSpec(ds.input_shape, ds.classes, ("l100", "l50"), int32_wrap=wrap)
        runs[wrap] = train(ds, spec, TrainConfig(epochs=1, lr_inv=16, seed=1), progress=False,
                           log=lambda s: None)
    assert runs[False].ranges.by_kind["weight_grad"] > 2 ** 31
    assert runs[True].ranges.by_kind["weight_grad"] <= 2 ** 31
    a, b = runs[False].network.weights(), runs[True].network.weights()
    assert any(not np.array_equal(a[k], b[k]) for k in a)


# --- the decoder pool's padding ----------------------------------------------------------

@pytest.mark.parametrize("zero_pad", [False, True])
def test_decoder_pool_padding_wins_with_zero_pad_only(zero_pad):
    """Conv weights 0 make every activation relu(0) = -36: 0-padding then wins every padded
    window (and its error goes nowhere); the most negative value never does."""
    rng = np.random.default_rng(0)
    classes, c, f, h, w, dd = 3, 1, 2, 3, 3, 4
    blk = ConvBlock("b", c, f, h, w, classes, rng, decoder_dim=dd, fwd_decay_inv=0,
                    subnet_decay_inv=0, decoder_pool_zero_pad=zero_pad)
    # decoder pool 4x2 with padding (2, 1): each of its 1x2 windows holds padding cells
    assert (blk.pool.kh, blk.pool.kw, blk.pool.ph, blk.pool.pw) == (4, 2, 2, 1)
    blk.w = np.zeros_like(blk.w)
    blk.w_local = wl = rng.integers(-2 ** 10, 2 ** 10, size=blk.w_local.shape)
    x, t = _batch(rng, (c, h, w), 2, classes)
    seen = {}
    blk.train_step(x, t, 1, observe=lambda k, l, a: seen.setdefault((k, l), a.copy()))
    assert (seen[("activation", "b.fwd")] == -36).all()
    pooled = np.full((2, blk.decoder_in), 0 if zero_pad else -36)
    assert seen[("forward_acc", "b.local")].tolist() == exact_matmul(pooled, wl.T).tolist()
    assert seen[("backprop_error", "b.local")].any()
    g = seen[("weight_grad", "b.fwd")]
    if zero_pad:     # every window's maximum is a padding cell: no error reaches the conv layer
        assert not g.any()
    else:
        assert g.any()


@pytest.mark.parametrize("seed,c,f,h,w,dd", [(0, 1, 4, 5, 3, 12), (1, 3, 2, 6, 6, 8),
                                              (2, 2, 5, 3, 3, 5), (3, 2, 3, 7, 5, 12)])
@pytest.mark.parametrize("zero_pad", [False, True])
def test_conv_block_with_either_padding_matches_slow_reference(seed, c, f, h, w, dd, zero_pad):
    """Random data; the slow reference's pool lets 0-padding compete only when asked."""
    rng = np.random.default_rng(seed)
    classes, batch = 3, 3
    blk = ConvBlock("b", c, f, h, w, classes, rng, decoder_dim=dd, fwd_decay_inv=11,
                    subnet_decay_inv=5, decoder_pool_zero_pad=zero_pad)
    assert blk.pool.ph or blk.pool.pw
    # small conv weights: activations near relu(0) = -36, so padding often wins with 0
    blk.w = rng.integers(-2 ** 6, 2 ** 6, size=blk.w.shape)
    blk.w_local = rng.integers(-2 ** 10, 2 ** 10, size=blk.w_local.shape)
    x = rng.integers(-128, 128, size=(batch, c, h, w)).astype(np.int8)
    t = one_hot(rng.integers(0, classes, size=batch), classes)
    hh, w_new, wl_new = ref.conv_block_step(x.tolist(), blk.w.tolist(), blk.w_local.tolist(),
                                            t.tolist(), 2, classes, 4, 11, 5, dd,
                                            pad_value=0 if zero_pad else None)
    assert blk.train_step(x, t, 2).tolist() == hh
    assert blk.w_local.tolist() == wl_new
    assert blk.w.tolist() == w_new


def test_zero_padding_changes_a_padded_cnn_only_in_authors_mode():
    rng = np.random.default_rng(5)
    base = dict(input_shape=(1, 5, 5), classes=3, layers=("c2", "l4"), decoder_dim=12)
    nets = {q: Network(NetworkSpec(**base, decoder_pool_zero_pad=q), seed=0) for q in (0, 1)}
    assert "decoder_pool_zero_pad" in nets[1].spec.active_quirks()
    for _ in range(3):
        x, t = _batch(rng, (1, 5, 5), 8, 3)
        for net in nets.values():
            net.train_step(x, t, 4)
    a, b = nets[0].weights(), nets[1].weights()
    assert not np.array_equal(a["block0.local"], b["block0.local"])


# --- dropping the last partial batch -----------------------------------------------------

def _tiny_dataset(n_train):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n_train + 10, 1, 4, 4)).astype(np.uint8)
    y = rng.integers(0, 3, size=n_train + 10)
    return Dataset("tiny", x[:n_train], y[:n_train], x[n_train:], y[n_train:], 3)


@pytest.mark.parametrize("n,batch,mode,steps", [
    (50, 16, "spec", 4), (50, 16, "authors", 3), (48, 16, "spec", 3), (48, 16, "authors", 3)])
def test_batches_per_epoch(n, batch, mode, steps):
    ds = _tiny_dataset(n)
    spec = NetworkSpec(ds.input_shape, 3, ("l5",), compat=mode)
    sizes = []
    res = train(ds, spec, TrainConfig(epochs=2, batch=batch, compat=mode), progress=False,
                log=lambda s: None, after_step=lambda e, b, x, t, lr, y: sizes.append(len(x)))
    per_epoch = sizes[:len(sizes) // 2]
    assert len(per_epoch) == steps and len(sizes) == 2 * steps
    assert sum(per_epoch) == (n if mode == "spec" else n // batch * batch)
    assert res.metrics["config"]["drop_last_batch"] == (mode == "authors")


def test_digits_epoch_has_22_batches_of_64_in_authors_mode():
    ds = load_dataset("digits")
    counts = {}
    for mode in ("spec", "authors"):
        spec = NetworkSpec(ds.input_shape, ds.classes, ("l8",), compat=mode)
        steps = []
        train(ds, spec, TrainConfig(epochs=1, compat=mode, track_ranges=False), progress=False,
              log=lambda s: None, after_step=lambda *a: steps.append(len(a[2])))
        counts[mode] = (len(steps), steps[-1])
    assert counts == {"spec": (23, 1437 - 22 * 64), "authors": (22, 64)}


def test_drop_last_batch_alone_and_modes_must_agree():
    ds = _tiny_dataset(50)
    sizes = []
    train(ds, NetworkSpec(ds.input_shape, 3, ("l5",)), TrainConfig(epochs=1, batch=16,
          drop_last_batch=True), progress=False, log=lambda s: None,
          after_step=lambda *a: sizes.append(len(a[2])))
    assert sizes == [16, 16, 16]
    with pytest.raises(ValueError, match="compat"):
        train(ds, NetworkSpec(ds.input_shape, 3, ("l5",), compat="authors"),
              TrainConfig(epochs=1), progress=False, log=lambda s: None)
    with pytest.raises(ValueError, match="no batch"):
        train(ds, NetworkSpec(ds.input_shape, 3, ("l5",)),
              TrainConfig(epochs=1, batch=64, drop_last_batch=True), progress=False,
              log=lambda s: None)


# --- spec mode unchanged; checkpoints ----------------------------------------------------

def test_spec_mode_with_every_flag_off_is_the_old_network():
    """compat="spec" builds exactly what the NetworkSpec without the new fields built."""
    rng = np.random.default_rng(9)
    base = dict(input_shape=(1, 7, 7), classes=3, layers=("c3", "p", "l5"), decoder_dim=20)
    a = Network(NetworkSpec(**base), seed=4)
    b = Network(NetworkSpec(**base, compat="spec", int8_loss_error=False), seed=4)
    for _ in range(2):
        x, t = _batch(rng, (1, 7, 7), 4, 3)
        assert np.array_equal(a.train_step(x, t, 2), b.train_step(x, t, 2))
    assert all(np.array_equal(a.weights()[k], b.weights()[k]) for k in a.weights())


def test_checkpoint_records_and_reloads_the_mode(tmp_path):
    ds = load_dataset("digits")
    spec = NetworkSpec(ds.input_shape, ds.classes, ("c4", "p", "l8"), compat="authors")
    res = train(ds, spec, TrainConfig(epochs=1, compat="authors", track_ranges=False),
                out_dir=tmp_path, progress=False, log=lambda s: None)
    net, norm, meta = load_checkpoint(tmp_path / "checkpoint.npz")
    assert net.spec == spec and net.spec.compat == "authors"
    assert all(getattr(net.spec, q) for q in NETWORK_QUIRKS)
    assert meta["compat"] == "authors" and meta["drop_last_batch"] is True
    assert [s.double_update for s in net.stages if s.kind == "linear"] == [True]
    assert evaluate(net, norm(ds.x_test), ds.y_test) == res.metrics["final_test_accuracy"]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["spec"]["compat"] == "authors" and m["config"]["compat"] == "authors"


# --- command line ------------------------------------------------------------------------

def test_cli_train_compat_authors(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--model", "cnn", "--arch", "c4,p,l8",
                 "--epochs", "1", "--quiet", "--compat", "authors", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "compat authors: int8_loss_error, int32_wrap, double_linear_update, drop_last_batch" \
        in text
    m = json.loads((out / "metrics.json").read_text())
    assert m["spec"]["compat"] == "authors" and m["config"]["drop_last_batch"] is True
    assert main(["eval", "--checkpoint", str(out / "checkpoint.npz")]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev["test_accuracy"] == m["final_test_accuracy"]
    assert main(["ranges", "--dataset", "digits", "--hidden", "8", "--epochs", "1", "--quiet",
                 "--compat", "authors"]) == 0


@pytest.mark.parametrize("argv", [
    ["sim", "--dataset", "digits", "--epochs", "1", "--compat", "authors"],
    ["board", "train", "--port", "/dev/nonexistent", "--dataset", "digits", "--epochs", "1",
     "--compat", "authors"],
])
def test_hardware_refuses_authors_mode_naming_the_quirks(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1                 # one line, before any simulator or port
    assert "--compat authors" in err and "int8 loss error" in err and "int32" in err
    assert "last partial batch" in err and "could not open port" not in err


# --- the figures of the docs -------------------------------------------------------------

@pytest.mark.slow
def test_digits_small_cnn_five_epochs_figures():
    """docs/compat.md: 15.28% (spec), 48.06% (the authors' network quirks on golden's
    batches: the spec's 48.1%), 46.11% (--compat authors, last partial batch dropped)."""
    ds = load_dataset("digits")
    layers = parse_layers("c32,c64,p,l64")
    got = {}
    for name, mode, q in [("spec", "spec", {}), ("network", "spec", dict(
            int8_loss_error=True, int32_wrap=True, double_linear_update=True,
            decoder_pool_zero_pad=True)), ("authors", "authors", {})]:
        spec = NetworkSpec(ds.input_shape, ds.classes, layers, fwd_decay_inv=30000, compat=mode,
                           **q)
        r = train(ds, spec, TrainConfig(epochs=5, seed=42, compat=mode, track_ranges=False),
                  progress=False, log=lambda s: None)
        got[name] = round(100 * r.metrics["best_test_accuracy"], 2)
    assert got == {"spec": 15.28, "network": 48.06, "authors": 46.11}
