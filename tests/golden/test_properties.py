"""Property-based tests (hypothesis): the golden arithmetic against a plain-Python statement of
the spec (/work/shared/NITRO-D-SPEC.md, restated below with Python ints only), and the link's
encoder/decoder.

The plain statements use nothing of golden/: division toward zero is written from ``abs`` and
``//`` on non-negative Python ints, so a mistake in golden's vectorised tricks (the sign mask in
``tdiv``, clipping order, the argmax of pools) shows as a counterexample.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from golden.arith import (ACT_MAX, RELU_MEAN_CORRECTION, SCALE_SHIFT, nitro_relu,
                          nitro_relu_backward, nitro_scale, tdiv)
from golden.layers import (PoolGeometry, avgpool2d, avgpool2d_backward, maxpool2d,
                           maxpool2d_backward)
from golden.optim import sgd_update

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
INT = st.integers(-(2 ** 40), 2 ** 40)
SLOPES = st.sampled_from(sorted(RELU_MEAN_CORRECTION))


# --------------------------------------------------------------------------- the spec, plainly

def spec_tdiv(a: int, d: int) -> int:
    """Rounds toward zero: the quotient of the magnitudes, with the sign of a."""
    q = abs(a) // d
    return -q if a < 0 else q


def spec_clip(a: int, lo: int, hi: int) -> int:
    return lo if a < lo else hi if a > hi else a


def spec_scale(z: int, fan_in: int) -> int:
    return spec_clip(spec_tdiv(z, 2 ** 8 * fan_in), -127, 127)


def spec_relu(x: int, a: int) -> int:
    c = {3: 31, 4: 36, 5: 38, 7: 40, 8: 42, 10: 43, 15: 44, 16: 44, 20: 45}[a]
    return min(max(x, 0), 127) + spec_tdiv(min(max(x, -127), 0), a) - c


def spec_relu_backward(d: int, x: int, a: int) -> int:
    if 0 <= x < 127:
        return d
    if -127 <= x < 0:
        return spec_tdiv(d, a)
    return 0


def spec_sgd(w: int, g: int, lr_inv: int, amp: int, decay_inv: int) -> int:
    return w - (spec_tdiv(g, lr_inv * amp) + (spec_tdiv(w, decay_inv) if decay_inv > 0 else 0))


# --------------------------------------------------------------------------- arithmetic

@SETTINGS
@given(a=INT, d=st.integers(1, 2 ** 20))
def test_tdiv_rounds_toward_zero(a, d):
    assert int(tdiv(a, d)) == spec_tdiv(a, d)
    assert int(tdiv(np.array([a]), d)[0]) == spec_tdiv(a, d)
    assert int(tdiv(np.array([a]), np.array([d]))[0]) == spec_tdiv(a, d)


@SETTINGS
@given(a=st.lists(INT, min_size=1, max_size=20), d=st.integers(1, 2 ** 20),
       p=st.integers(1, 300), q=st.integers(1, 300))
def test_tdiv_vectorised_and_nested(a, d, p, q):
    arr = np.array(a, dtype=np.int64)
    assert tdiv(arr, d).tolist() == [spec_tdiv(v, d) for v in a]
    # the spec's composition rule
    assert tdiv(tdiv(arr, p), q).tolist() == tdiv(arr, p * q).tolist()


@SETTINGS
@given(z=st.lists(st.integers(-(2 ** 45), 2 ** 45), min_size=1, max_size=16),
       fan_in=st.integers(1, 5000))
def test_nitro_scaling(z, fan_in):
    got = nitro_scale(np.array(z, dtype=np.int64), fan_in)
    assert got.tolist() == [spec_scale(v, fan_in) for v in z]
    assert 2 ** SCALE_SHIFT == 256 and int(np.abs(got).max()) <= ACT_MAX


@SETTINGS
@given(x=st.lists(st.integers(-400, 400), min_size=1, max_size=32), a=SLOPES)
def test_nitro_relu_forward(x, a):
    assert nitro_relu(np.array(x), a).tolist() == [spec_relu(v, a) for v in x]


@SETTINGS
@given(pairs=st.lists(st.tuples(st.integers(-(2 ** 30), 2 ** 30), st.integers(-200, 200)),
                      min_size=1, max_size=32), a=SLOPES)
def test_nitro_relu_backward(pairs, a):
    d = np.array([p[0] for p in pairs], dtype=np.int64)
    x = np.array([p[1] for p in pairs], dtype=np.int64)
    assert nitro_relu_backward(d, x, a).tolist() == [spec_relu_backward(dv, xv, a)
                                                     for dv, xv in pairs]


@SETTINGS
@given(wg=st.lists(st.tuples(st.integers(-(2 ** 20), 2 ** 20), st.integers(-(2 ** 40), 2 ** 40)),
                   min_size=1, max_size=16),
       lr_inv=st.integers(1, 10_000), amp=st.sampled_from([1, 640, 64 * 3, 64 * 100]),
       decay_inv=st.sampled_from([0, 1, 7, 3000, 12000, 30000]))
def test_sgd_update(wg, lr_inv, amp, decay_inv):
    w = np.array([p[0] for p in wg], dtype=np.int64)
    g = np.array([p[1] for p in wg], dtype=np.int64)
    got = sgd_update(w, g, lr_inv, amp, decay_inv)
    assert got.tolist() == [spec_sgd(wv, gv, lr_inv, amp, decay_inv) for wv, gv in wg]


# --------------------------------------------------------------------------- pools

@st.composite
def pool_case(draw):
    k = draw(st.integers(2, 3))
    oh, ow = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    c = draw(st.integers(1, 2))
    b = draw(st.integers(1, 2))
    values = st.integers(-3, 3) if draw(st.booleans()) else st.integers(-128, 127)   # ties
    x = np.array(draw(st.lists(values, min_size=b * c * oh * k * ow * k,
                               max_size=b * c * oh * k * ow * k)), dtype=np.int64)
    d = np.array(draw(st.lists(st.integers(-10_000, 10_000), min_size=b * c * oh * ow,
                               max_size=b * c * oh * ow)), dtype=np.int64)
    return k, x.reshape(b, c, oh * k, ow * k), d.reshape(b, c, oh, ow)


def _windows(x, k):
    """Each window's elements in row-major order, plainly."""
    b, c, h, w = x.shape
    for n in range(b):
        for ch in range(c):
            for i in range(h // k):
                for j in range(w // k):
                    cells = [(i * k + r, j * k + s) for r in range(k) for s in range(k)]
                    yield (n, ch, i, j), cells


@SETTINGS
@given(case=pool_case())
def test_max_pool_and_its_backward_rule(case):
    """Forward: the max; backward: the error to the first maximum of each window in row-major
    order, zero elsewhere."""
    k, x, d = case
    geom = PoolGeometry(x.shape[2], x.shape[3], k, k)
    pooled, pos = maxpool2d(x, geom)
    back = maxpool2d_backward(d, pos, geom)
    want = np.zeros_like(x)
    for (n, ch, i, j), cells in _windows(x, k):
        vals = [int(x[n, ch, r, s]) for r, s in cells]
        assert pooled[n, ch, i, j] == max(vals)
        first = cells[vals.index(max(vals))]
        want[n, ch, first[0], first[1]] = d[n, ch, i, j]
    assert np.array_equal(back, want)


@SETTINGS
@given(case=pool_case())
def test_average_pool_and_its_backward_rule(case):
    """Forward ``tdiv(sum, k*k)``; backward spreads ``tdiv(d, k*k)`` over the window."""
    k, x, d = case
    geom = PoolGeometry(x.shape[2], x.shape[3], k, k)
    pooled = avgpool2d(x, geom)
    back = avgpool2d_backward(d, geom)
    for (n, ch, i, j), cells in _windows(x, k):
        total = sum(int(x[n, ch, r, s]) for r, s in cells)
        assert pooled[n, ch, i, j] == spec_tdiv(total, k * k)
        for r, s in cells:
            assert back[n, ch, r, s] == spec_tdiv(int(d[n, ch, i, j]), k * k)


# --------------------------------------------------------------------------- the link's frames

from hw.contract import link as P  # noqa: E402
from nitrod import link as L  # noqa: E402

WORDS = st.lists(st.integers(0, 2 ** 32 - 1), max_size=40)


@SETTINGS
@given(cmd=st.sampled_from(P.COMMANDS), addr=st.integers(0, 2 ** 32 - 1), words=WORDS,
       seq=st.integers(0, 255))
def test_request_frames_carry_their_fields(cmd, addr, words, seq):
    frame = L.encode_request(cmd, addr, words=words, seq=seq)
    body = frame[1:]
    assert frame[0] == P.SYNC and P.crc16(body) == 0
    assert body[P.REQ_CMD] == cmd and body[P.REQ_SEQ] == seq == L.request_seq(frame)
    assert body[P.REQ_COUNT] == len(words)
    assert int.from_bytes(body[P.REQ_ADDR:P.REQ_ADDR + 4], "little") == addr
    payload = body[P.REQUEST_HEADER_BYTES:-P.CRC_BYTES]
    assert [int.from_bytes(payload[i:i + 4], "little") for i in range(0, len(payload), 4)] == words


response = st.builds(
    lambda kind, info, seq, words, count: L.Response(
        kind, info, len(words) if kind == P.RSP_DATA else count,
        tuple(words) if kind == P.RSP_DATA else (), seq),
    st.sampled_from([P.RSP_ACK, P.RSP_DATA, P.RSP_ERROR]), st.integers(0, 255),
    st.integers(0, 255), WORDS, st.integers(0, 255))


def _encode(r):
    return L.encode_response(r.kind, r.info, r.count, r.words, seq=r.seq)


@SETTINGS
@given(rsps=st.lists(response, min_size=1, max_size=8), cuts=st.lists(st.integers(0, 400)),
       noise=st.lists(st.binary(max_size=8), max_size=8))
def test_decoder_returns_every_frame_whatever_the_chunking(rsps, cuts, noise):
    stream = b""
    for i, r in enumerate(rsps):
        junk = noise[i].replace(bytes([P.SYNC]), b"") if i < len(noise) else b""
        stream += junk + _encode(r)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    decoder = L.ResponseDecoder()
    events = []
    for a, b in zip(points, points[1:]):
        events += decoder.feed(stream[a:b])
    assert events == rsps and decoder.pending == 0


@SETTINGS
@given(r=response, flips=st.lists(st.tuples(st.integers(1, 10_000), st.integers(0, 7)),
                                   min_size=1, max_size=3))
def test_corrupted_responses_never_decode_as_good_ones(r, flips):
    frame = bytearray(_encode(r))
    for pos, bit in flips:
        frame[pos % (len(frame) - 1) + 1] ^= 1 << bit
    assume(bytes(frame) != _encode(r))
    decoder = L.ResponseDecoder()
    events = decoder.feed(bytes(frame)) + decoder.feed(bytes(1100))
    for e in events:
        if isinstance(e, L.Response):       # a good frame found inside: its CRC checked
            assert P.crc16(_encode(e)[1:]) == 0
    # up to 3 flipped bits in one frame: CRC-16/CCITT detects them all (Hamming distance 4)
    if len({p % (len(frame) - 1) + 1 for p, _ in flips}) == len(flips):
        assert r not in events
