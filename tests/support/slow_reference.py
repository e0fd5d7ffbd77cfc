"""An obviously-correct, slow NITRO-D written with Python ints and loops.

Independent of golden/ (it shares no code with it), so the golden model's fast
paths (float64 BLAS, vectorised truncation, im2col) are checked against plain
arithmetic.
"""

from __future__ import annotations

import math

RELU_C = {3: 31, 4: 36, 5: 38, 7: 40, 8: 42, 10: 43, 15: 44, 16: 44, 20: 45}


def tdiv(a: int, d: int) -> int:
    q = abs(a) // d
    return q if a >= 0 else -q


def clip(v, lo, hi):
    return lo if v < lo else hi if v > hi else v


def scale(z, fan_in):
    return clip(tdiv(z, 256 * fan_in), -127, 127)


def relu(x, a):
    return clip(x, 0, 127) + tdiv(clip(x, -127, 0), a) - RELU_C[a]


def relu_back(d, x, a):
    if 0 <= x < 127:
        return d
    if -127 <= x < 0:
        return tdiv(d, a)
    return 0


def matmul(A, B):
    """A (n x k) @ B (k x m) as lists of Python ints."""
    n, k, m = len(A), len(B), len(B[0])
    return [[sum(A[i][t] * B[t][j] for t in range(k)) for j in range(m)] for i in range(n)]


def transpose(A):
    return [list(r) for r in zip(*A)]


def sgd(W, G, lr_inv, amp, decay_inv):
    out = []
    for wr, gr in zip(W, G):
        out.append([w - (tdiv(g, lr_inv * amp) + (tdiv(w, decay_inv) if decay_inv else 0))
                    for w, g in zip(wr, gr)])
    return out


def linear_block_step(x, W, Wl, target, lr_inv, classes, a, fwd_decay, sub_decay):
    """One training step of a linear block; returns (h, W_new, Wl_new)."""
    fan_in, out_f = len(W[0]), len(W)
    z = matmul(x, transpose(W))
    y = [[scale(v, fan_in) for v in row] for row in z]
    h = [[relu(v, a) for v in row] for row in y]
    zl = matmul(h, transpose(Wl))
    yl = [[scale(v, out_f) for v in row] for row in zl]
    e = [[p - t for p, t in zip(pr, tr)] for pr, tr in zip(yl, target)]
    d = matmul(e, Wl)
    Gl = matmul(transpose(e), h)
    Wl_new = sgd(Wl, Gl, lr_inv, 1, sub_decay)
    d = [[relu_back(dv, yv, a) for dv, yv in zip(dr, yr)] for dr, yr in zip(d, y)]
    G = matmul(transpose(d), x)
    W_new = sgd(W, G, lr_inv, 64 * classes, fwd_decay)
    return h, W_new, Wl_new


def output_step(x, W, target, lr_inv, decay):
    fan_in = len(W[0])
    z = matmul(x, transpose(W))
    yhat = [[scale(v, fan_in) for v in row] for row in z]
    e = [[p - t for p, t in zip(pr, tr)] for pr, tr in zip(yhat, target)]
    G = matmul(transpose(e), x)
    return yhat, sgd(W, G, lr_inv, 1, decay)


def conv2d(x, W):
    """x[m][c][i][j], W[f][c][k][l]; 3x3, stride 1, zero padding 1."""
    M, C, H, Wd = len(x), len(x[0]), len(x[0][0]), len(x[0][0][0])
    F = len(W)

    def px(m, c, i, j):
        return x[m][c][i][j] if 0 <= i < H and 0 <= j < Wd else 0

    return [[[[sum(W[f][c][k][l] * px(m, c, i + k - 1, j + l - 1)
                   for c in range(C) for k in range(3) for l in range(3))
               for j in range(Wd)] for i in range(H)] for f in range(F)] for m in range(M)]


def conv2d_grad(d, x):
    M, C, H, Wd = len(x), len(x[0]), len(x[0][0]), len(x[0][0][0])
    F = len(d[0])

    def px(m, c, i, j):
        return x[m][c][i][j] if 0 <= i < H and 0 <= j < Wd else 0

    return [[[[sum(d[m][f][i][j] * px(m, c, i + k - 1, j + l - 1)
                   for m in range(M) for i in range(H) for j in range(Wd))
               for l in range(3)] for k in range(3)] for c in range(C)] for f in range(F)]


def maxpool(h, kh, kw, ph, pw, pad_value=None):
    """Max pool with stride = kernel, padding with -infinity; returns (pooled, argpos)
    with argpos the (i, j) of the first maximum in row-major window order.

    With ``pad_value`` (the authors' code: 0) the padding cells take part with that value;
    where one wins, argpos is None (its error goes nowhere)."""
    C, H, W = len(h), len(h[0]), len(h[0][0])
    oh = (H + 2 * ph - kh) // kh + 1
    ow = (W + 2 * pw - kw) // kw + 1
    out, pos = [], []
    for c in range(C):
        orow, prow = [], []
        for oi in range(oh):
            ovals, pvals = [], []
            for oj in range(ow):
                best, bpos = None, None
                for k in range(kh):
                    for l in range(kw):
                        i, j = oi * kh + k - ph, oj * kw + l - pw
                        if 0 <= i < H and 0 <= j < W:
                            v, p = h[c][i][j], (i, j)
                        elif pad_value is not None:
                            v, p = pad_value, None
                        else:
                            continue
                        if best is None or v > best:
                            best, bpos = v, p
                ovals.append(best)
                pvals.append(bpos)
            orow.append(ovals)
            prow.append(pvals)
        out.append(orow)
        pos.append(prow)
    return out, pos


def decoder_kernel(c, h, w, decoder_dim):
    kh = kw = 1
    turn_h = True
    while c * math.ceil(h / kh) * math.ceil(w / kw) > decoder_dim:
        if turn_h:
            kh *= 2
        else:
            kw *= 2
        turn_h = not turn_h
    return kh, kw, (kh * (math.ceil(h / kh) - h // kh)) // 2, (kw * (math.ceil(w / kw) - w // kw)) // 2


def conv_block_step(x, W, Wl, target, lr_inv, classes, a, fwd_decay, sub_decay, decoder_dim,
                    pad_value=None):
    """One training step of a conv block; returns (h, W_new, Wl_new). ``pad_value``: see
    :func:`maxpool`."""
    M, C = len(x), len(x[0])
    F, H, Wd = len(W), len(x[0][0]), len(x[0][0][0])
    fan_in = C * 9
    z = conv2d(x, W)
    y = [[[[scale(v, fan_in) for v in r] for r in ch] for ch in s] for s in z]
    h = [[[[relu(v, a) for v in r] for r in ch] for ch in s] for s in y]
    kh, kw, ph, pw = decoder_kernel(F, H, Wd, decoder_dim)
    pooled, poss = zip(*[maxpool(hm, kh, kw, ph, pw, pad_value) for hm in h])
    flat = [[v for ch in p for r in ch for v in r] for p in pooled]
    d_in = len(flat[0])
    zl = matmul(flat, transpose(Wl))
    yl = [[scale(v, d_in) for v in row] for row in zl]
    e = [[p - t for p, t in zip(pr, tr)] for pr, tr in zip(yl, target)]
    dflat = matmul(e, Wl)
    Gl = matmul(transpose(e), flat)
    Wl_new = sgd(Wl, Gl, lr_inv, 1, sub_decay)
    oh, ow = len(pooled[0][0]), len(pooled[0][0][0])
    dh = [[[[0] * Wd for _ in range(H)] for _ in range(F)] for _ in range(M)]
    for m in range(M):
        for f in range(F):
            for oi in range(oh):
                for oj in range(ow):
                    if poss[m][f][oi][oj] is None:
                        continue
                    i, j = poss[m][f][oi][oj]
                    dh[m][f][i][j] += dflat[m][(f * oh + oi) * ow + oj]
    dy = [[[[relu_back(dh[m][f][i][j], y[m][f][i][j], a) for j in range(Wd)] for i in range(H)]
           for f in range(F)] for m in range(M)]
    G = conv2d_grad(dy, x)
    amp = 64 * classes
    W_new = [[[[w - (tdiv(g, lr_inv * amp) + (tdiv(w, fwd_decay) if fwd_decay else 0))
                for w, g in zip(wr, gr)] for wr, gr in zip(wk, gk)] for wk, gk in zip(wc, gc)]
             for wc, gc in zip(W, G)]
    return h, W_new, Wl_new
