"""Layers, blocks and whole steps against the slow reference."""

import numpy as np
import pytest

from golden.blocks import ConvBlock, LinearBlock, OutputLayer, loss_error
from golden.datasets import one_hot
from golden.layers import (PoolGeometry, avgpool2d, avgpool2d_backward, conv2d, conv2d_weight_grad,
                           decoder_pool_geometry, maxpool2d, maxpool2d_backward)
from golden.init import kaiming_bound

from tests.support import slow_reference as ref


def test_conv2d_and_its_gradient_against_loops():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(2, 3, 5, 4)).astype(np.int8)
    w = rng.integers(-64, 65, size=(4, 3, 3, 3))
    assert conv2d(x, w).tolist() == ref.conv2d(x.tolist(), w.tolist())
    d = rng.integers(-5000, 5000, size=(2, 4, 5, 4))
    assert conv2d_weight_grad(d, x).tolist() == ref.conv2d_grad(d.tolist(), x.tolist())


def test_maxpool_first_maximum_and_padding():
    h = np.array([[[[5, 5, 1], [2, 5, 0], [7, -3, 7]]]], dtype=np.int8)   # 3x3
    g = PoolGeometry(3, 3, 2, 2, 1, 1)         # out 2x2, windows start at -1
    p, pos = maxpool2d(h, g)
    assert p.tolist() == [[[[5, 5], [7, 7]]]]
    back = maxpool2d_backward(np.array([[[[1, 2], [3, 4]]]]), pos, g)
    # window (0,0) holds only h[0,0]; window (0,1) holds 5,1,5,0 -> first 5 at (0,1)
    assert back.tolist() == [[[[1, 2, 0], [0, 0, 0], [3, 0, 4]]]]
    # against loops on random data with ties
    rng = np.random.default_rng(1)
    for (H, W, kh, kw, ph, pw) in ((8, 8, 2, 2, 0, 0), (7, 7, 2, 2, 1, 1), (7, 5, 4, 2, 2, 1),
                                   (3, 3, 4, 4, 2, 2), (6, 6, 4, 2, 1, 0)):
        h = rng.integers(-3, 3, size=(2, 3, H, W)).astype(np.int8)
        g = PoolGeometry(H, W, kh, kw, ph, pw)
        p, pos = maxpool2d(h, g)
        for m in range(2):
            rp, rpos = ref.maxpool(h[m].tolist(), kh, kw, ph, pw)
            assert p[m].tolist() == rp
        d = rng.integers(-100, 100, size=p.shape)
        back = maxpool2d_backward(d, pos, g)
        for m in range(2):
            _, rpos = ref.maxpool(h[m].tolist(), kh, kw, ph, pw)
            expect = np.zeros((3, H, W), dtype=np.int64)
            for c in range(3):
                for oi in range(g.out_h):
                    for oj in range(g.out_w):
                        i, j = rpos[c][oi][oj]
                        expect[c, i, j] += d[m, c, oi, oj]
            assert back[m].tolist() == expect.tolist()


def test_avgpool_truncates_and_spreads():
    x = np.array([[[[-1, -2], [0, 0]]]], dtype=np.int8)
    g = PoolGeometry(2, 2, 2, 2)
    assert avgpool2d(x, g).tolist() == [[[[0]]]]           # tdiv(-3, 4) = 0, floor would be -1
    x = np.array([[[[-4, -3], [-2, -2]]]], dtype=np.int8)
    assert avgpool2d(x, g).tolist() == [[[[-2]]]]          # tdiv(-11, 4)
    assert avgpool2d_backward(np.array([[[[-7]]]]), g).tolist() == [[[[-1, -1], [-1, -1]]]]


@pytest.mark.parametrize("c,h,w,dd,expect", [
    (32, 8, 8, 2048, (1, 1, 0, 0)),
    (64, 8, 8, 2048, (2, 1, 0, 0)),
    (128, 28, 28, 2048, (8, 8, 4, 4)),
    (128, 28, 28, 4096, (8, 4, 4, 0)),
    (256, 7, 7, 2048, (4, 2, 2, 1)),
    (512, 3, 3, 4096, (2, 1, 1, 0)),
    (512, 3, 3, 2048, (2, 2, 1, 1)),
])
def test_decoder_pool_rule(c, h, w, dd, expect):
    g = decoder_pool_geometry(c, h, w, dd)
    assert (g.kh, g.kw, g.ph, g.pw) == expect == ref.decoder_kernel(c, h, w, dd)
    assert c * g.out_h * g.out_w <= dd


def test_kaiming_bound():
    assert kaiming_bound(1) == 64 and kaiming_bound(784) == 10 and kaiming_bound(100) == 30
    assert kaiming_bound(50) == 43 and kaiming_bound(9) == 64


def test_loss_error_exact_and_optional_wrap():
    y = np.array([[-127, 0, 127]], dtype=np.int16)
    t = np.array([[32, 0, 0]], dtype=np.int16)
    assert loss_error(y, t).tolist() == [[-159, 0, 127]]
    assert loss_error(y, t, int8_wrap=True).tolist() == [[97, 0, 127]]   # the authors' int8 wrap


def _sizes(rng):
    return int(rng.integers(1, 6)), int(rng.integers(1, 12)), int(rng.integers(1, 9))


@pytest.mark.parametrize("seed", range(6))
def test_linear_block_step_matches_slow_reference(seed):
    rng = np.random.default_rng(seed)
    batch, fin, fout = _sizes(rng)
    classes = int(rng.integers(2, 5))
    a = [3, 4, 5, 7, 8, 10, 15, 16, 20][seed % 9]
    blk = LinearBlock("b", fin, fout, classes, rng, relu_inv_slope=a, fwd_decay_inv=int(rng.integers(0, 50)),
                      subnet_decay_inv=int(rng.integers(0, 50)))
    # big weights so that scaling saturates and negative rounding matters
    blk.w = rng.integers(-2**16, 2**16, size=blk.w.shape)
    blk.w_local = rng.integers(-2**12, 2**12, size=blk.w_local.shape)
    x = rng.integers(-128, 128, size=(batch, fin)).astype(np.int8)
    t = one_hot(rng.integers(0, classes, size=batch), classes)
    lr = int(rng.integers(1, 9))
    h, w_new, wl_new = ref.linear_block_step(x.tolist(), blk.w.tolist(), blk.w_local.tolist(), t.tolist(),
                                             lr, classes, a, blk.fwd_decay_inv, blk.subnet_decay_inv)
    got_h = blk.train_step(x, t, lr)
    assert got_h.tolist() == h
    assert blk.w_local.tolist() == wl_new
    assert blk.w.tolist() == w_new


@pytest.mark.parametrize("seed", range(3))
def test_output_layer_step_matches_slow_reference(seed):
    rng = np.random.default_rng(100 + seed)
    batch, fin, classes = _sizes(rng)
    classes += 1
    out = OutputLayer(fin, classes, rng, subnet_decay_inv=7)
    out.w = rng.integers(-2**14, 2**14, size=out.w.shape)
    x = rng.integers(-128, 128, size=(batch, fin)).astype(np.int8)
    t = one_hot(rng.integers(0, classes, size=batch), classes)
    yhat, w_new = ref.output_step(x.tolist(), out.w.tolist(), t.tolist(), 3, 7)
    assert out.train_step(x, t, 3).tolist() == yhat
    assert out.w.tolist() == w_new


@pytest.mark.parametrize("seed,c,f,h,w,dd", [(0, 2, 3, 4, 4, 2048), (1, 1, 4, 5, 3, 12),
                                              (2, 3, 2, 6, 6, 8), (3, 2, 5, 3, 3, 5)])
def test_conv_block_step_matches_slow_reference(seed, c, f, h, w, dd):
    rng = np.random.default_rng(seed)
    classes, batch = 3, 2
    blk = ConvBlock("b", c, f, h, w, classes, rng, decoder_dim=dd, fwd_decay_inv=11, subnet_decay_inv=5)
    blk.w = rng.integers(-2**12, 2**12, size=blk.w.shape)
    blk.w_local = rng.integers(-2**10, 2**10, size=blk.w_local.shape)
    x = rng.integers(-128, 128, size=(batch, c, h, w)).astype(np.int8)
    t = one_hot(rng.integers(0, classes, size=batch), classes)
    hh, w_new, wl_new = ref.conv_block_step(x.tolist(), blk.w.tolist(), blk.w_local.tolist(), t.tolist(),
                                            2, classes, 4, 11, 5, dd)
    assert blk.train_step(x, t, 2).tolist() == hh
    assert blk.w_local.tolist() == wl_new
    assert blk.w.tolist() == w_new
