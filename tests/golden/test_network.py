"""Networks from layer lists, integer dtypes at every boundary, checkpoints, schedule."""

import numpy as np
import pytest

from golden.datasets import one_hot
from golden.network import ARCHITECTURES, Network, NetworkSpec, mlp_layers, parse_layers
from golden.ranges import KINDS, RangeTracker
from golden.train import Schedule, TrainConfig, load_checkpoint, save_checkpoint
from golden.datasets import Normaliser

from tests.support import slow_reference as ref


def _batch(rng, shape, n, classes):
    x = rng.integers(-128, 128, size=(n,) + shape).astype(np.int8)
    return x, one_hot(rng.integers(0, classes, size=n), classes)


@pytest.mark.parametrize("layers,shape", [
    ("l7,l5,l3", (1, 4, 4)),
    ("c4,p,l6", (2, 6, 6)),
    ("c3,a,c5,p,l4,l3", (1, 8, 8)),
    ("c3", (1, 5, 5)),
])
def test_every_boundary_tensor_is_integer(layers, shape):
    rng = np.random.default_rng(0)
    net = Network(NetworkSpec(shape, 4, parse_layers(layers), decoder_dim=40), seed=1)
    seen = []

    def observe(kind, layer, array):
        assert kind in KINDS
        assert isinstance(array, np.ndarray) and array.dtype.kind in "iu", (kind, layer, array.dtype)
        if kind in ("input", "activation"):
            assert array.dtype.itemsize <= 2 and np.abs(array.astype(np.int64)).max() <= 128
        seen.append(kind)

    x, t = _batch(rng, shape, 5, 4)
    for _ in range(2):
        yhat = net.train_step(x, t, 8, observe=observe)
        assert yhat.dtype.kind == "i"
    assert set(seen) == set(KINDS)
    for name, w in net.weights().items():
        assert w.dtype == np.int64, name


def test_mlp_step_matches_slow_reference_end_to_end():
    rng = np.random.default_rng(5)
    spec = NetworkSpec((1, 3, 3), 3, mlp_layers("6,4"), fwd_decay_inv=13, subnet_decay_inv=9)
    net = Network(spec, seed=3)
    w = {k: v.tolist() for k, v in net.weights().items()}
    x, t = _batch(rng, (1, 3, 3), 4, 3)
    net.train_step(x, t, 2)
    h0, w0, wl0 = ref.linear_block_step(x.reshape(4, -1).tolist(), w["block0.fwd"], w["block0.local"],
                                        t.tolist(), 2, 3, 4, 13, 9)
    h1, w1, wl1 = ref.linear_block_step(h0, w["block1.fwd"], w["block1.local"], t.tolist(), 2, 3, 4, 13, 9)
    _, wo = ref.output_step(h1, w["output"], t.tolist(), 2, 9)
    got = net.weights()
    assert got["block0.fwd"].tolist() == w0 and got["block0.local"].tolist() == wl0
    assert got["block1.fwd"].tolist() == w1 and got["block1.local"].tolist() == wl1
    assert got["output"].tolist() == wo


def test_vgg8b_is_expressible():
    text, extra = ARCHITECTURES["vgg8b"]
    net = Network(NetworkSpec((1, 28, 28), 10, parse_layers(text), **extra), seed=0)
    convs = [s for s in net.stages if s.kind == "conv"]
    assert [s.out_channels for s in convs] == [128, 256, 256, 512, 512, 512]
    assert all(s.decoder_in <= 4096 for s in convs)
    assert net.output.in_features == 1024
    x = np.zeros((1, 1, 28, 28), dtype=np.int8)
    assert net.forward(x).shape == (1, 10)


@pytest.mark.parametrize("bad", ["", "x5", "c", "l0", "p1", "l10,c5"])
def test_bad_layer_lists_are_refused(bad):
    with pytest.raises(ValueError):
        Network(NetworkSpec((1, 8, 8), 10, tuple(bad.split(",")) if bad else ()), seed=0)


def test_bad_inputs_are_refused():
    net = Network(NetworkSpec((1, 4, 4), 3, ("l5",)), seed=0)
    with pytest.raises(TypeError):
        net.forward(np.zeros((2, 1, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError):
        net.forward(np.zeros((2, 1, 5, 4), dtype=np.int8))


def test_checkpoint_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    spec = NetworkSpec((1, 4, 4), 3, ("c2", "p", "l5"), decoder_dim=20)
    net = Network(spec, seed=7)
    x, t = _batch(rng, (1, 4, 4), 6, 3)
    net.train_step(x, t, 4)
    norm = Normaliser(np.array([3]), np.array([40]))
    save_checkpoint(tmp_path / "c.npz", net, norm, {"dataset": "toy"})
    net2, norm2, meta = load_checkpoint(tmp_path / "c.npz")
    assert net2.spec == spec and meta == {"dataset": "toy"}
    for k, v in net.weights().items():
        assert np.array_equal(v, net2.weights()[k])
    assert np.array_equal(net.forward(x), net2.forward(x))
    assert norm2.mu.tolist() == [3] and norm2.mad.tolist() == [40]
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError):
        load_checkpoint(tmp_path / "bad.npz")


def test_load_weights_checks_shapes_and_dtypes():
    net = Network(NetworkSpec((1, 2, 2), 2, ("l3",)), seed=0)
    ws = net.weights()
    with pytest.raises(KeyError):
        net.load_weights({"output": ws["output"]})
    bad = dict(ws, output=np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(ValueError):
        net.load_weights(bad)
    bad = dict(ws, output=ws["output"].astype(float))
    with pytest.raises(TypeError):
        net.load_weights(bad)


def test_range_tracker():
    tr = RangeTracker()
    tr("weights", "a", np.array([3, -70]))
    tr("weights", "b", np.array([5]))
    tr("local_error", "b", np.array([-159]))
    d = tr.as_dict()
    assert d["by_kind"]["weights"] == {"maxabs": 70, "signed_bits": 8}
    assert d["by_kind"]["local_error"]["signed_bits"] == 9
    assert "weights" in tr.table() and "a" in tr.table()


def test_schedule_reduces_lr_then_stops():
    s = Schedule(TrainConfig(epochs=200, lr_inv=512))
    stop_at = None
    lrs = []
    for epoch in range(1, 200):
        acc = 0.5 if epoch == 1 else 0.505        # never improves by 0.01 after epoch 1
        if s.update(epoch, acc):
            stop_at = epoch
            break
        lrs.append(s.lr_inv)
    # lrs[i] is after epoch i+1; epochs 2..16 are 15 epochs without improvement
    assert lrs[15] == 512 * 3 and lrs[14] == 512
    assert lrs[30] == 512 * 9 and lrs[29] == 512 * 3
    assert stop_at == 36                                  # 35 epochs without improvement
    s = Schedule(TrainConfig(epochs=200))
    for epoch in range(1, 20):                             # steady improvement: nothing happens
        assert not s.update(epoch, 0.02 * epoch)
    assert s.lr_inv == 512


def test_predict_is_the_same_in_any_chunks():
    spec = NetworkSpec((1, 12, 12), 10, parse_layers("c8,p,c16,l20"))
    net = Network(spec, seed=2)
    assert 1 <= net.eval_batch() < 1024 and net.eval_batch(budget=1) == 1
    x = np.random.default_rng(0).integers(-127, 128, size=(37, 1, 12, 12)).astype(np.int8)
    whole = net.forward(x).argmax(axis=1)
    for batch in (None, 1, 5, 64):
        assert net.predict(x, batch=batch).tolist() == whole.tolist()
