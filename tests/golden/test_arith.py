"""Integer primitives against hand-worked cases and plain Python ints."""

import numpy as np
import pytest

from golden.arith import (FLOAT64_EXACT_LIMIT, RELU_MEAN_CORRECTION, exact_matmul, nitro_relu,
                          nitro_relu_backward, nitro_scale, tdiv)
from golden.optim import sgd_update

from tests.support import slow_reference as ref


def test_tdiv_hand_cases():
    assert tdiv(-7, 2) == -3 and tdiv(7, 2) == 3 and tdiv(-8, 2) == -4 and tdiv(0, 5) == 0
    assert (-7) // 2 == -4          # what NumPy/Python would do instead
    a = np.array([-7, 7, -8, -1, 1, 0, -255, 255, -256])
    assert tdiv(a, 2).tolist() == [-3, 3, -4, 0, 0, 0, -127, 127, -128]
    assert tdiv(a, 256).tolist() == [0, 0, 0, 0, 0, 0, 0, 0, -1]
    assert tdiv(a, 1).tolist() == a.tolist()


def test_tdiv_random_against_python():
    rng = np.random.default_rng(1)
    a = rng.integers(-2**62, 2**62, size=5000)
    for d in (1, 2, 3, 7, 256, 327680, 2**31 - 1, 2**40 + 3):
        got = tdiv(a, d)
        assert got.dtype == np.int64
        assert got.tolist() == [ref.tdiv(int(v), d) for v in a]


def test_tdiv_array_divisor_and_composition():
    rng = np.random.default_rng(2)
    a = rng.integers(-10**9, 10**9, size=2000)
    d = rng.integers(1, 1000, size=2000)
    assert tdiv(a, d).tolist() == [ref.tdiv(int(x), int(y)) for x, y in zip(a, d)]
    for p, q in ((3, 5), (256, 100), (7, 7)):
        assert np.array_equal(tdiv(tdiv(a, p), q), tdiv(a, p * q))


@pytest.mark.parametrize("d", [0, -3])
def test_tdiv_rejects_non_positive_divisor(d):
    with pytest.raises(ZeroDivisionError):
        tdiv(np.array([1, 2]), d)
    with pytest.raises(ZeroDivisionError):
        tdiv(np.array([1, 2]), np.array([1, d]))


def test_tdiv_is_integer_only():
    with pytest.raises(TypeError):
        tdiv(np.array([1.5]), 2)


def test_scaling_hand_cases_and_saturation():
    fan_in = 4                       # SF = 1024
    z = np.array([0, 1023, 1024, -1023, -1024, -2047, 127 * 1024, 128 * 1024, -10**12, 10**12])
    assert nitro_scale(z, fan_in).tolist() == [0, 0, 1, 0, -1, -1, 127, 127, -127, 127]


def test_relu_every_slope_full_range():
    x = np.arange(-300, 301)
    for a, c in RELU_MEAN_CORRECTION.items():
        got = nitro_relu(x, a)
        assert got.dtype == np.int8
        assert got.tolist() == [ref.relu(int(v), a) for v in x]
    # hand case, a = 4: f(-7) = 0 + tdiv(-7, 4) - 36 = -1 - 36
    assert int(nitro_relu(np.array([-7]), 4)[0]) == -37
    with pytest.raises(ValueError):
        nitro_relu(x, 6)


def test_relu_backward_regions():
    x = np.array([-128, -127, -5, -1, 0, 1, 126, 127, 128])
    d = np.full(9, -9)
    assert nitro_relu_backward(d, x, 4).tolist() == [0, -2, -2, -2, -9, -9, -9, 0, 0]
    rng = np.random.default_rng(3)
    xs = rng.integers(-130, 131, size=3000)
    ds = rng.integers(-10**6, 10**6, size=3000)
    for a in RELU_MEAN_CORRECTION:
        got = nitro_relu_backward(ds, xs, a)
        assert got.tolist() == [ref.relu_back(int(dv), int(xv), a) for dv, xv in zip(ds, xs)]


def test_sgd_hand_case():
    w = np.array([[1000, -1000, 5, -5]])
    g = np.array([[327680 * 3 + 1, -327680 * 3 - 1, -327679, 0]])
    # lr_inv * amp = 327680; decay 100: tdiv(w, 100) = 10, -10, 0, 0
    assert sgd_update(w, g, 512, 640, 100).tolist() == [[1000 - 13, -1000 + 13, 5, -5]]
    assert sgd_update(w, g, 512, 640, 0).tolist() == [[997, -997, 5, -5]]
    with pytest.raises(ZeroDivisionError):
        sgd_update(w, g, 0, 640, 0)


def test_sgd_random_against_python():
    rng = np.random.default_rng(4)
    w = rng.integers(-2**20, 2**20, size=(7, 9))
    g = rng.integers(-2**40, 2**40, size=(7, 9))
    for lr, amp, dec in ((512, 640, 12000), (1536, 1, 3000), (1, 1, 0), (7, 3, 1)):
        assert sgd_update(w, g, lr, amp, dec).tolist() == ref.sgd(w.tolist(), g.tolist(), lr, amp, dec)


def _objmatmul(a, b):
    return a.astype(object) @ b.astype(object)


def test_exact_matmul_small_and_int8():
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, size=(33, 70)).astype(np.int8)
    b = rng.integers(-2**20, 2**20, size=(70, 11))
    assert np.array_equal(exact_matmul(a, b), _objmatmul(a, b).astype(np.int64))


def test_exact_matmul_adversarial_magnitudes_float_route():
    # every product at its largest, all of one sign: partial sums reach just under 2**53
    k = 64
    m = int((FLOAT64_EXACT_LIMIT // k) ** 0.5)
    while m * m * k >= FLOAT64_EXACT_LIMIT:
        m -= 1
    a = np.full((3, k), m, dtype=np.int64)
    a[1] = -m
    a[2, ::2] = -m
    b = np.full((k, 2), m, dtype=np.int64)
    b[:, 1] = -m + 1
    b[k - 1, 1] = m
    got = exact_matmul(a, b)
    assert got.tolist() == _objmatmul(a, b).tolist()
    # odd values whose products are not representable in float32
    a = np.array([[2**26 + 1] * 2], dtype=np.int64)
    b = np.array([[2**26 - 1], [2**26 - 3]], dtype=np.int64)
    assert exact_matmul(a, b).tolist() == _objmatmul(a, b).tolist()


def test_exact_matmul_int64_route_beyond_float():
    rng = np.random.default_rng(6)
    a = rng.integers(-2**40, 2**40, size=(5, 40))
    b = rng.integers(-2**15, 2**15, size=(40, 3))
    a[0, 0] = 2**40 - 1                          # bound above 2**53: must take int64
    b[0, 0] = 2**15 - 1
    got = exact_matmul(a, b)
    assert got.tolist() == _objmatmul(a, b).tolist()
    # float64 would have rounded this one
    x = np.array([[2**53 + 1, 1]], dtype=np.int64)
    y = np.array([[1], [1]], dtype=np.int64)
    assert exact_matmul(x, y).tolist() == [[2**53 + 2]]


def test_exact_matmul_refuses_int64_overflow():
    a = np.array([[2**40, 2**40]], dtype=np.int64)
    b = np.array([[2**30], [2**30]], dtype=np.int64)
    with pytest.raises(OverflowError):
        exact_matmul(a, b)
    with pytest.raises(TypeError):
        exact_matmul(a.astype(float), b)
