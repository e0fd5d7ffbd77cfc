"""Host-side constants for exact truncating division by a multiply and a shift.

This module is the one place in the project that computes the reciprocal
constants the RTL dividers use (``hw/divider.py`` and every unit built on it).
It runs on the host (or at elaboration time for divisors fixed in hardware);
nothing here is hardware.

The method: for a divisor ``d >= 1`` and a dividend magnitude ``x`` with
``0 <= x <= 2**N``, pick a shift ``s`` and the multiplier ``m = ceil(2**s / d)``.
Then ``floor(x / d) == (x * m) >> s`` provided ``2**s >= 2**N * d``, which
holds for the classic choice ``s = N + ceil(log2 d)``.  A signed dividend is
handled on its magnitude: ``tdiv(a, d) == sign(a) * ((|a| * m) >> s)``, which
rounds toward zero (the shift of a non-negative product is a floor, and the
floor of a magnitude is the truncation).

Proof of the bound (no correction step is needed with this ``m``).
Write ``d * m = 2**s + e``; because ``m`` is the ceiling of ``2**s / d``,
``0 <= e < d``.  Then

    x * m / 2**s = x / d + x * e / (d * 2**s).

The second term is ``>= 0``, so ``(x * m) >> s >= floor(x / d)``.  For the upper
side, write ``x = q * d + r`` with ``0 <= r <= d - 1``:

    x * m / 2**s = q + r / d + x * e / (d * 2**s)
                <= q + (d - 1) / d + x * e / (d * 2**s).

With ``r <= d - 1`` this is ``< q + 1`` as soon as ``x * e < 2**s``.  Since ``e <= d - 1`` and ``x <= 2**N``,
``x * e <= 2**N * (d - 1) < 2**N * d <= 2**s``: the floor is exactly ``q``.
``s = N + ceil(log2 d)`` gives ``2**s = 2**N * 2**ceil(log2 d) >= 2**N * d``.
Note the bound covers ``x = 2**N`` itself, so ``N = W - 1`` is enough for a
``W``-bit two's-complement dividend, including ``-2**(W-1)``.

Two ways to use it in hardware:

* **run-time shift** (``reciprocal(d, N)``): ``s = N + ceil(log2 d)`` depends on
  ``d``, so the hardware needs a variable shifter, but ``m`` is small:
  ``2**(k-1) < d <= 2**k`` (``k = ceil(log2 d)``) gives
  ``2**s / d = 2**(N+k) / d < 2**(N+1)``, so ``m <= 2**(N+1)``; and equality
  would need ``2**s / d > 2**(N+1) - 1``; but ``d >= 2**(k-1) + 1`` gives
  ``2**s / d <= 2**(N+1) - 2**(N+1) / (2**(k-1) + 1) <= 2**(N+1) - 1`` whenever
  ``2**(k-1) + 1 <= 2**(N+1)``, true for ``d <= 2**N``.  When
  ``d`` is a power of two ``m = 2**N``.  So ``m`` fits in ``N + 1`` bits.
  (Divisors above ``2**N`` give quotient 0 for every allowed dividend; for them
  we return ``m = 0, s = 0``, which is exact too.)
* **fixed shift** (``reciprocal(d, N, d_max=D)``): one shift
  ``S = N + ceil(log2 D)`` serves every ``1 <= d <= D``, because
  ``2**S >= 2**N * D >= 2**N * d`` is all the proof needs.  The shift is then
  wiring; ``m = ceil(2**S / d) <= 2**S`` needs ``S + 1`` bits (``d = 1``).
"""

from __future__ import annotations

__all__ = ["clog2", "reciprocal", "fixed_shift", "multiplier_width",
           "shift_width", "apply"]


def clog2(d: int) -> int:
    """``ceil(log2 d)`` for an integer ``d >= 1`` (0 for ``d == 1``)."""
    if d < 1:
        raise ValueError(f"clog2 needs d >= 1, got {d}")
    return (int(d) - 1).bit_length()


def fixed_shift(n_bits: int, d_max: int) -> int:
    """The single shift ``S = N + ceil(log2 d_max)`` valid for every ``1 <= d <= d_max``."""
    if n_bits < 0:
        raise ValueError(f"n_bits must be >= 0, got {n_bits}")
    return int(n_bits) + clog2(d_max)


def multiplier_width(n_bits: int, d_max: int | None = None) -> int:
    """Bits needed by ``m`` (unsigned) for magnitudes ``<= 2**n_bits``.

    Fixed shift (``d_max`` given): ``S + 1``.  Run-time shift: ``N + 1``.
    """
    if d_max is None:
        return int(n_bits) + 1
    return fixed_shift(n_bits, d_max) + 1


def shift_width(n_bits: int, d_max: int) -> int:
    """Bits needed by a run-time shift amount ``s <= N + ceil(log2 d_max)``."""
    return max(1, fixed_shift(n_bits, d_max).bit_length())


def reciprocal(d: int, n_bits: int, d_max: int | None = None) -> tuple[int, int]:
    """Return ``(m, s)`` with ``floor(x / d) == (x * m) >> s`` for all ``0 <= x <= 2**n_bits``.

    With ``d_max`` the shift is the fixed ``N + ceil(log2 d_max)`` (and ``d``
    must not exceed ``d_max``); without it the shift is ``N + ceil(log2 d)``.
    See the module docstring for the proof.
    """
    d, n_bits = int(d), int(n_bits)
    if d < 1:
        raise ZeroDivisionError(f"divisor must be positive, got {d}")
    if n_bits < 0:
        raise ValueError(f"n_bits must be >= 0, got {n_bits}")
    if d_max is not None:
        if d > d_max:
            raise ValueError(f"divisor {d} exceeds the largest allowed divisor {d_max}")
        s = fixed_shift(n_bits, d_max)
    else:
        if d > (1 << n_bits):
            return 0, 0          # every allowed quotient is 0 (x <= 2**N < d)
        s = n_bits + clog2(d)
    m = -((-(1 << s)) // d)      # ceil(2**s / d) on Python ints
    assert m.bit_length() <= multiplier_width(n_bits, d_max)
    return m, s


def apply(a: int, m: int, s: int) -> int:
    """What the hardware computes: ``sign(a) * ((|a| * m) >> s)`` (for tests and checks)."""
    q = (abs(int(a)) * m) >> s
    return -q if a < 0 else q
