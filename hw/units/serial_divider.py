"""Unsigned restoring division, one quotient bit per clock cycle.

The small counterpart of :class:`hw.units.divider.LongDivPipe` for designs that post-process one
value at a time (the serial Trainer for the iCE40UP5K): one compare-and-subtract of a
``d_width + 1``-bit partial remainder against the divisor, reused for every quotient bit, so
the unit is three registers (dividend/quotient, remainder, divisor), a bit counter and one
short carry chain.

Recurrence, most significant dividend bit first::

    r <- 2 r + next dividend bit
    if r >= d:  r <- r - d,  quotient bit 1   (else quotient bit 0)

It keeps ``r < d``, so ``2 r + 1 < 2 d`` fits ``d_width + 1`` bits and the new ``r`` fits
``d_width`` bits; after the last bit ``q = floor(x / d)`` and ``r = x mod d``.  The dividend
and the quotient share one shift register: each step shifts the next dividend bit out of its
top and the new quotient bit into its bottom.

Handshake: ``start`` is taken only while ``ready`` (the unit is idle); the unit samples
``dividend``, ``divisor`` and ``n_bits`` in that cycle, so they need not be held.  ``done``
pulses for one cycle :meth:`cycles` (``n_bits + 1``) cycles after the start cycle (the start
cycle is cycle 0); ``quotient`` and ``remainder`` are valid from then until the next start.
``ready`` is 1 again in the ``done`` cycle, so a new division may start there.

Short dividends: ``n_bits`` (default, when left undriven: ``width``) is how many dividend bits
to process, most significant first.  A ``k``-bit dividend ``x`` placed at the top
(``dividend = x << (width - k)``, the low bits 0) divides in ``k + 1`` cycles instead of
``width + 1``, and ``quotient`` is then ``floor(x / d)`` as a whole: the unprocessed low
dividend bits (zeros) end up above the ``k`` quotient bits.  (In general the top ``width - k``
bits of ``quotient`` are the dividend's unprocessed bits.)  ``n_bits`` 0 is an error: the
unit would then stay idle and never pulse ``done``.

Divisor 0 is the caller's error: every trial subtraction then succeeds, so the quotient's
``n_bits`` low bits are all ones (``2**width - 1`` for a whole-width division) and the
remainder is the processed dividend bits modulo ``2**d_width``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SerialDivider"]


class SerialDivider(wiring.Component):
    """``quotient, remainder = divmod(dividend, divisor)``, unsigned, one bit per cycle.

    Parameters
    ----------
    width : int
        Width of the unsigned dividend and of the quotient.
    d_width : int
        Width of the unsigned divisor and of the remainder; the trial subtraction is
        ``d_width + 1`` bits wide (with its borrow).

    Ports
    -----
    start : In(1)                   begin a division (taken only while ``ready``)
    dividend : In(unsigned(width))  sampled with ``start``
    divisor : In(unsigned(d_width)) sampled with ``start``; 0 is an error (module doc)
    n_bits : In(range(1, width + 1), init=width)  dividend bits to process, sampled with
                                    ``start`` (module doc: short dividends)
    ready : Out(1)                  idle: a ``start`` would be taken
    done : Out(1)                   one-cycle pulse: ``quotient`` and ``remainder`` valid
    quotient : Out(unsigned(width)) valid from ``done`` until the next start
    remainder : Out(unsigned(d_width))  likewise

    Latency :attr:`latency` = ``width + 1`` cycles from the start cycle to ``done`` for a
    whole-width division; :meth:`cycles` gives it for a shorter ``n_bits``.
    """

    def __init__(self, width: int, d_width: int):
        self.width, self.d_width = int(width), int(d_width)
        if self.width < 1 or self.d_width < 1:
            raise ValueError(f"width and d_width must be >= 1, got {width}, {d_width}")
        self.latency = self.cycles(self.width)
        super().__init__({
            "start": In(1),
            "dividend": In(unsigned(self.width)),
            "divisor": In(unsigned(self.d_width)),
            "n_bits": In(range(1, self.width + 1), init=self.width),
            "ready": Out(1),
            "done": Out(1),
            "quotient": Out(unsigned(self.width)),
            "remainder": Out(unsigned(self.d_width)),
        })

    def cycles(self, n_bits: int) -> int:
        """Cycles from the start cycle to ``done`` for an ``n_bits``-bit division."""
        if not 1 <= n_bits <= self.width:
            raise ValueError(f"n_bits must be 1 .. {self.width}, got {n_bits}")
        return int(n_bits) + 1

    def elaborate(self, platform):
        m = Module()
        dw = self.d_width
        shift = Signal(unsigned(self.width))          # dividend bits out, quotient bits in
        rem = Signal(unsigned(dw))                    # partial remainder, always < divisor
        div = Signal(unsigned(dw))
        bits_left = Signal(range(self.width + 1))     # 0: idle
        done = Signal()

        # One step: trial = (2 rem + next bit) - divisor; its sign bit is the borrow.
        widened = Cat(shift[-1], rem)                 # 2 rem + next bit: dw + 1 bits
        trial = Signal(signed(dw + 2))
        m.d.comb += trial.eq(widened - div)
        fits = ~trial[-1]                             # widened >= divisor: quotient bit 1

        busy = bits_left != 0
        m.d.comb += [
            self.ready.eq(~busy),
            self.done.eq(done),
            self.quotient.eq(shift),
            self.remainder.eq(rem),
        ]
        m.d.sync += done.eq(0)
        with m.If(busy):
            m.d.sync += [
                shift.eq(Cat(fits, shift[:-1])),
                rem.eq(Mux(fits, trial[:dw], widened[:dw])),
                bits_left.eq(bits_left - 1),
            ]
            with m.If(bits_left == 1):
                m.d.sync += done.eq(1)
        with m.Elif(self.start):
            m.d.sync += [
                shift.eq(self.dividend),
                rem.eq(0),
                div.eq(self.divisor),
                bits_left.eq(self.n_bits),
            ]
        return m
