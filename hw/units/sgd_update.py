"""IntegerSGD weight update, one weight per cycle.

``W_new = W - (tdiv(G, lr_inv * amp) + tdiv(W, decay_inv))``, the decay term
absent when ``decay_inv == 0``.  Both divisions are
:class:`hw.units.divider.LongDivPipe` instances (restoring long division in LUTs and
carry chains, one quotient bit per pipeline stage, no DSP) running side by
side with shared stall; their divisors are run-time ports set by
:meth:`SgdUpdate.constants` ("decay off" is divisor 0, which masks the decay
quotient to 0).

Only ``weight_width + 1`` quotient bits of ``tdiv(G, D)`` are computed; larger
quotients saturate to ``2**(weight_width + 1) - 1``.  That is exact for the
result: ``W - tdiv(W, decay_inv)`` never leaves the weight range (it moves
``W`` toward zero), so with ``|tdiv(G, D)| >= 2**weight_width`` the update
overflows whatever the exact value, and the saturated quotient overflows it
the same way (same sign, magnitude ``>= 2**weight_width``); smaller quotients
are exact.  So ``G`` may be as wide as the accumulators at little cost: only the
first-stage negation and one compare see its full width.

If a result leaves the weight width the output saturates to the nearest
representable value and the sticky ``overflow`` flag rises; ``clear`` lowers it
(a set in the same cycle wins).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .divider import LongDivPipe, stream_pipeline_control
from hw.contract.widths import ACC_WIDTH, WEIGHT_WIDTH

__all__ = ["SgdUpdate"]


class SgdUpdate(wiring.Component):
    """Stream ``(w, g) -> w_new``.

    Parameters
    ----------
    weight_width : int
        Width of signed weights in and out (default ``WEIGHT_WIDTH``).
    grad_width : int
        Width of the signed summed gradient ``G`` (default ``ACC_WIDTH``).
    lr_div_max : int
        Largest ``lr_inv * amp`` (default ``2**40``: ``lr_inv`` grows by 3x at
        each plateau, so 512 * 640 = 327,680 can become ``327,680 * 3**k``;
        ``2**40`` allows k = 14).  Sets the width of ``d_g`` and of the
        remainder adders: ``lr_div_max.bit_length()``, but at most ``grad_width``
        (a divisor above ``2**(grad_width-1)`` gives quotient 0 for every
        gradient, and :meth:`constants` clamps it to ``2**(grad_width-1) + 1``).
    decay_max : int
        Largest ``decay_inv`` (default ``2**20``; the paper uses up to 30,000).

    Ports
    -----
    i : In(stream.Signature(StructLayout{w: signed(weight_width), g: signed(grad_width)}))
    o : Out(stream.Signature(signed(weight_width)))    updated weight (saturated)
    d_g, d_w : In(unsigned(...))  divisors ``lr_inv * amp`` and ``decay_inv`` (0: no
                         decay), from :meth:`constants`; keep them still while
                         weights are in flight
    overflow : Out(1)    sticky: some delivered result left the weight width
    clear : In(1)        clears ``overflow``

    Latency :attr:`latency` = ``weight_width + 6``, plus 1 when ``grad_width > 24``
    (25 by default): magnitudes (a wide gradient is negated in two halves),
    saturation check, ``weight_width + 1`` quotient-bit stages, signs,
    ``W - tdiv(W, decay_inv)``, the gradient step with saturation.  One weight
    per cycle.

    Sizes (``nitrod synth-unit sgd_update``): see the report of the timing work;
    on the iCE40UP5K use ``weight_width=16, grad_width=32, decay_max=2**15``
    (fewer and narrower stages: ``d_g`` is then 32 bits).
    """

    def __init__(self, weight_width: int = WEIGHT_WIDTH, grad_width: int = ACC_WIDTH, *,
                 lr_div_max: int = 2**40, decay_max: int = 2**20):
        self.weight_width, self.grad_width = int(weight_width), int(grad_width)
        self.lr_div_max, self.decay_max = int(lr_div_max), int(decay_max)
        ww = self.weight_width
        steps = ww + 1
        # Divisors travel down the pipelines beside the data (per_item_divisor): one
        # port fanning out to every stage costs >10 ns of routing on iCE40.
        # Divisors above 2**(grad_width-1) give quotient 0 for every gradient, as does
        # 2**(grad_width-1) + 1: constants() clamps to it, so d_g needs at most
        # grad_width bits whatever lr_div_max is.
        self.d_g_clamp = 2 ** (self.grad_width - 1) + 1
        self._div_g = LongDivPipe(self.grad_width,
                                  min(self.lr_div_max, self.d_g_clamp).bit_length(),
                                  q_bits=ww + 1, step_stages=steps, side_width=ww,
                                  per_item_divisor=True)
        # |W| <= 2**(ww-1): ww quotient bits, never saturating; padded to the same latency.
        self._div_w = LongDivPipe(ww, self.decay_max.bit_length(), q_bits=ww,
                                  step_stages=steps, split_negate=self._div_g.split_negate,
                                  per_item_divisor=True)
        assert self._div_w.latency == self._div_g.latency
        self.latency = self._div_g.latency + 2
        self.in_layout = data.StructLayout({"w": signed(ww), "g": signed(self.grad_width)})
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(signed(ww))),
            "overflow": Out(1),
            "clear": In(1),
            "d_g": In(unsigned(self._div_g.d_width)),
            "d_w": In(unsigned(self._div_w.d_width)),
        })

    def constants(self, lr_inv: int, amp: int, decay_inv: int) -> dict:
        """Port values for one layer's update."""
        if lr_inv <= 0 or amp <= 0:
            raise ZeroDivisionError("lr_inv and amp must be positive")
        if decay_inv < 0:
            raise ValueError("decay_inv must be >= 0 (0 disables decay)")
        if lr_inv * amp > self.lr_div_max:
            raise ValueError(f"lr_inv * amp = {lr_inv * amp} exceeds lr_div_max {self.lr_div_max}")
        if decay_inv >= 2 ** self._div_w.d_width:
            raise ValueError(f"decay_inv {decay_inv} exceeds 2**{self._div_w.d_width} - 1")
        return {"d_g": int(min(lr_inv * amp, self.d_g_clamp)), "d_w": int(decay_inv)}

    def elaborate(self, platform):
        m = Module()
        m.submodules.div_g = pg = self._div_g
        m.submodules.div_w = pw = self._div_w
        en = Signal()
        stream_pipeline_control(m, en=en, i_valid=self.i.valid, i_ready=self.i.ready,
                                o_valid=self.o.valid, o_ready=self.o.ready,
                                latency=self.latency)
        ww = self.weight_width
        decay_on = Signal()                         # quasi-static, registered
        m.d.sync += decay_on.eq(self.d_w != 0)
        m.d.comb += [
            pg.en.eq(en), pw.en.eq(en),
            pg.d.eq(self.d_g), pw.d.eq(self.d_w),
            pg.a.eq(self.i.payload.g),
            pg.side_i.eq(self.i.payload.w),
            pw.a.eq(self.i.payload.w),
        ]
        # Stage: t = W - tdiv(W, decay_inv) (stays in the weight range); q_g delayed.
        t = Signal(signed(ww + 1), reset_less=True)
        qg = Signal(signed(ww + 2), reset_less=True)
        with m.If(en):
            m.d.sync += [t.eq(pg.side_o.as_signed() - Mux(decay_on, pw.q, 0)),
                         qg.eq(pg.q)]
        # Stage: the gradient step, saturated to the weight width.
        new = Signal(signed(ww + 3))
        m.d.comb += new.eq(t - qg)
        fits = (new[ww - 1:] == 0) | (new[ww - 1:] == (1 << (len(new) - ww + 1)) - 1)
        lo, hi = -2 ** (ww - 1), 2 ** (ww - 1) - 1
        out = Signal(signed(ww))
        ovf = Signal()
        with m.If(en):
            with m.If(fits):
                m.d.sync += [out.eq(new), ovf.eq(0)]
            with m.Elif(new[-1]):
                m.d.sync += [out.eq(lo), ovf.eq(1)]
            with m.Else():
                m.d.sync += [out.eq(hi), ovf.eq(1)]
        with m.If(self.clear):
            m.d.sync += self.overflow.eq(0)
        with m.If(self.o.valid & ovf):
            m.d.sync += self.overflow.eq(1)
        m.d.comb += self.o.payload.eq(out)
        return m
