"""NITRO Scaling: ``y = clip(tdiv(z, SF), -127, 127)`` with ``SF = 2**8 * fan_in``.

How it stays exact and small:

* ``tdiv(z, 2**8 * f) == sign(z) * floor(floor(|z| / 2**8) / f)`` (nested
  truncations compose), and ``floor(|z| / 2**8)`` is just dropping 8 bits.
* Only the quotients ``0 .. 127`` matter, so the division is a restoring long
  division (:class:`hw.units.divider.LongDivPipe`) that computes just the 7 low
  quotient bits: with ``x = |z| >> 8``, ``floor(x / f) < 2**7`` exactly when
  ``x >> 7 < f``; otherwise the quotient saturates to 127, which is the clip.
  The starting remainder is ``x >> 7`` (``< f``) and each of the 7 quotient
  bits is one ``F + 1``-bit compare-and-subtract (``F = fan_in_width``) in a
  pipeline stage of its own.  No multiplier: on ECP5 an inferred DSP multiply
  cannot reach 150 MHz (see :class:`hw.units.divider.LongDivPipe`).
* The sign is restored last; a clip to ``[-out_max, out_max]`` follows (a
  no-op for ``out_max = 2**k - 1`` such as 127, kept for other bounds).

``fan_in`` is loaded at run time through the port ``divisor``
(:meth:`Scaler.constants`), or fixed at elaboration time (``fan_in=...``).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.contract.values import ACT_MAX, SCALE_SHIFT
from hw.contract.widths import ACC_WIDTH, ACTIVATION_WIDTH

from .divider import LongDivPipe, stream_pipeline_control

__all__ = ["Scaler"]


class Scaler(wiring.Component):
    """Stream ``o = clip(tdiv(i, 2**pre_shift * fan_in), -out_max, out_max)``.

    Parameters
    ----------
    acc_width : int
        Width of the signed accumulator input ``z`` (default ``ACC_WIDTH``).
    fan_in_width : int
        Run-time ``fan_in`` may be ``1 .. 2**fan_in_width - 1``.
    fan_in : int or None
        Fixed fan-in (elaboration time); no ``divisor`` port then.
    pre_shift : int
        Power-of-two part of SF (``SCALE_SHIFT``: NITRO-D's ``SF = 2**8 * fan_in``).
    out_max : int
        Saturation bound (``ACT_MAX``); the output is ``signed(out_width)``.
    out_width : int
        Output width (default ``ACTIVATION_WIDTH`` = 8).

    Ports
    -----
    i : In(stream.Signature(signed(acc_width)))     accumulator values ``z``
    o : Out(stream.Signature(signed(out_width)))    scaled activations ``y``
    divisor : In(unsigned(fan_in_width))            ``fan_in`` (run-time fan-in; from
                                                    :meth:`constants`; keep it still
                                                    while items are in flight)

    Latency :attr:`latency` = ``ceil(log2(out_max + 1)) + 4`` plus 1 when
    ``acc_width > 24`` (12 by default): magnitude (a 48-bit negation takes two
    stages, one per half), saturation check, one stage per quotient bit, sign,
    clip.  One result per cycle.
    """

    def __init__(self, acc_width: int = ACC_WIDTH, *, fan_in_width: int = 14,
                 fan_in: int | None = None, pre_shift: int = SCALE_SHIFT,
                 out_max: int = ACT_MAX,
                 out_width: int = ACTIVATION_WIDTH):
        self.acc_width = int(acc_width)
        self.fan_in_width = int(fan_in_width)
        self.pre_shift = int(pre_shift)
        self.out_max = int(out_max)
        self.out_width = int(out_width)
        if not -(2 ** (self.out_width - 1)) <= -self.out_max:
            raise ValueError("out_max does not fit out_width")
        if fan_in is not None and not 1 <= fan_in < 2 ** self.fan_in_width:
            raise ValueError(f"fan_in {fan_in} outside 1 .. 2**{self.fan_in_width} - 1")
        self.fan_in = fan_in
        self.q_bits = max(1, self.out_max.bit_length())
        # The divisor travels down the pipeline beside the data (per_item_divisor):
        # one port fanning out to every stage costs ~10 ns of routing on iCE40.
        self._pipe = LongDivPipe(self.acc_width, self.fan_in_width, q_bits=self.q_bits,
                                 drop_bits=self.pre_shift, divisor=fan_in,
                                 per_item_divisor=True)
        self.latency = self._pipe.latency + 1
        members = {
            "i": In(stream.Signature(signed(self.acc_width))),
            "o": Out(stream.Signature(signed(self.out_width))),
        }
        if fan_in is None:
            members["divisor"] = In(unsigned(self.fan_in_width))
        super().__init__(members)

    def constants(self, fan_in: int) -> dict:
        """Port values for ``SF = 2**pre_shift * fan_in``."""
        if not 1 <= fan_in < 2 ** self.fan_in_width:
            raise ValueError(f"fan_in {fan_in} outside 1 .. 2**{self.fan_in_width} - 1")
        if self.fan_in is not None:
            raise ValueError("this scaler has a fixed fan-in")
        return {"divisor": int(fan_in)}

    def elaborate(self, platform):
        m = Module()
        m.submodules.div = pipe = self._pipe
        if self.fan_in is None:
            m.d.comb += pipe.d.eq(self.divisor)
        stream_pipeline_control(m, en=pipe.en, i_valid=self.i.valid,
                                i_ready=self.i.ready, o_valid=self.o.valid,
                                o_ready=self.o.ready, latency=self.latency)
        m.d.comb += pipe.a.eq(self.i.payload)
        q = pipe.q
        y = Signal(signed(self.out_width))
        with m.If(pipe.en):
            with m.If(q > self.out_max):
                m.d.sync += y.eq(self.out_max)
            with m.Elif(q < -self.out_max):
                m.d.sync += y.eq(-self.out_max)
            with m.Else():
                m.d.sync += y.eq(q)
        m.d.comb += self.o.payload.eq(y)
        return m
