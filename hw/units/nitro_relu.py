"""NITRO-ReLU, forward and backward.

Forward, with inverse negative slope ``a`` and mean correction ``c(a)``::

    h = min(max(x, 0), 127) + tdiv(min(max(x, -127), 0), a) - c(a)

Backward, with ``x`` the forward input::

    d_in = d           where 0 <= x < 127          (code PASS)
    d_in = tdiv(d, a)  where -127 <= x < 0         (code DIV)
    d_in = 0           where x >= 127 or x < -127  (code ZERO)

so the forward unit emits a 2-bit :class:`hw.contract.ReluCode` per activation and the
backward pass stores 2 bits instead of the 8-bit input.

The slope is fixed at elaboration (``slope=a``) or chosen at run time through
the ``inv_slope`` port, which carries ``a`` itself (one of :data:`SLOPES`; any
other value behaves as ``a = 4``); the unit registers the constants it looks up
for it, so a new slope applies from the cycle after it is set.  The divisions are long divisions
(:class:`hw.units.divider.LongDivPipe`).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.contract.values import (ACT_MAX, DEFAULT_SLOPE, RELU_MEAN_CORRECTION, SLOPE_WIDTH,
                                SLOPES, ReluCode)
from hw.contract.widths import ACTIVATION_WIDTH, BACKERR_WIDTH

from .divider import LongDivPipe, stream_pipeline_control

__all__ = ["check_slope", "NitroRelu", "NitroReluBackward"]


def check_slope(slope):
    if slope is not None and slope not in RELU_MEAN_CORRECTION:
        raise ValueError(f"inverse slope must be one of {SLOPES}, got {slope}")


def _signature(i_shape, o_shape, slope) -> dict:
    """A unit's ports: the input and output streams, and the slope's port unless fixed."""
    members = {"i": In(stream.Signature(i_shape)), "o": Out(stream.Signature(o_shape))}
    if slope is None:
        members["inv_slope"] = In(unsigned(SLOPE_WIDTH))
    return members


def _pipeline(m: Module, unit):
    """``unit``'s divider (``unit._pipe``) as a submodule, advancing as its streams allow."""
    m.submodules.div = pipe = unit._pipe
    stream_pipeline_control(m, en=pipe.en, i_valid=unit.i.valid, i_ready=unit.i.ready,
                            o_valid=unit.o.valid, o_ready=unit.o.ready, latency=unit.latency)
    return pipe


def _slope_table(m: Module, sel, extra=None):
    """The registered run-time slope ``a`` (and ``c(a)`` into ``extra``) from ``sel``.

    The slope is a quasi-static setting: registering it keeps the decode out of
    the datapath; a new slope takes effect one cycle after it is set, before any
    item presented with it reaches the divider.  Unsupported values act as 4.
    """
    a_reg = Signal(unsigned(SLOPE_WIDTH), init=DEFAULT_SLOPE)
    c_reg = None
    if extra is not None:
        c_reg = Signal(extra.shape(), init=RELU_MEAN_CORRECTION[DEFAULT_SLOPE])
        m.d.comb += extra.eq(c_reg)
    with m.Switch(sel):
        for a in SLOPES:
            if a == DEFAULT_SLOPE:
                continue
            with m.Case(a):
                m.d.sync += a_reg.eq(a)
                if c_reg is not None:
                    m.d.sync += c_reg.eq(RELU_MEAN_CORRECTION[a])
        with m.Default():
            m.d.sync += a_reg.eq(DEFAULT_SLOPE)
            if c_reg is not None:
                m.d.sync += c_reg.eq(RELU_MEAN_CORRECTION[DEFAULT_SLOPE])
    return a_reg


class NitroRelu(wiring.Component):
    """Stream NITRO-ReLU forward: ``x -> (h, code)``.

    Parameters
    ----------
    in_width : int
        Width of the signed input ``x`` (default 8; the scaler's outputs).
    out_width : int
        Width of the signed output ``h`` (default 8).
    slope : int or None
        Fixed inverse slope; ``None`` adds the run-time ``inv_slope`` port.

    Ports
    -----
    i : In(stream.Signature(signed(in_width)))             ``x``
    o : Out(stream.Signature(StructLayout{h, code}))       ``h`` (signed(out_width)) and
                                                            ``code`` (:class:`ReluCode`)
    inv_slope : In(unsigned(5))                            ``a`` (run-time slope only)

    bits_per_stage : int
        Quotient bits of the 8-bit division per pipeline stage (default 1: two
        chained steps are ~7.2 ns on ECP5-6, one is ~6 ns).

    Latency :attr:`latency` = ``4 + ceil(8 / bits_per_stage)`` (12 by default),
    one result per cycle.
    """

    def __init__(self, in_width: int = ACTIVATION_WIDTH, out_width: int = ACTIVATION_WIDTH, *,
                 slope: int | None = None, bits_per_stage: int = 1):
        check_slope(slope)
        if in_width < 2:
            raise ValueError("in_width must be >= 2")
        self.in_width, self.out_width, self.slope = int(in_width), int(out_width), slope
        # Divider on the clamped negative part: magnitudes <= 127, 8-bit dividend.
        self._pipe = LongDivPipe(8, SLOPE_WIDTH, divisor=slope, signed_input=False,
                                 per_item_divisor=True,
                                 bits_per_stage=bits_per_stage, side_width=7 + 2)
        self.latency = self._pipe.latency + 1
        self.out_layout = data.StructLayout({"h": signed(self.out_width), "code": ReluCode})
        super().__init__(_signature(signed(self.in_width), self.out_layout, slope))

    def elaborate(self, platform):
        m = Module()
        pipe = _pipeline(m, self)
        c = Signal(unsigned(6))
        if self.slope is None:
            m.d.comb += pipe.d.eq(_slope_table(m, self.inv_slope, c))
        else:
            m.d.comb += c.eq(RELU_MEAN_CORRECTION[self.slope])

        x = self.i.payload
        neg = x < 0
        pos = Signal(unsigned(7))           # min(max(x, 0), 127)
        nmag = Signal(unsigned(8))          # |min(max(x, -127), 0)|
        code = Signal(ReluCode)
        m.d.comb += [
            pos.eq(Mux(neg, 0, Mux(x >= ACT_MAX, ACT_MAX, x))),
            nmag.eq(Mux(neg, Mux(x < -ACT_MAX, ACT_MAX, -x), 0)),
        ]
        with m.If((x >= ACT_MAX) | (x < -ACT_MAX)):
            m.d.comb += code.eq(ReluCode.ZERO)
        with m.Elif(neg):
            m.d.comb += code.eq(ReluCode.DIV)
        with m.Else():
            m.d.comb += code.eq(ReluCode.PASS)
        m.d.comb += [
            pipe.mag.eq(nmag),
            pipe.neg.eq(1),                 # the divided part is <= 0
            pipe.side_i.eq(pos | (code << 7)),
        ]

        out = Signal(self.out_layout)
        with m.If(pipe.en):
            m.d.sync += [
                out.h.eq(pipe.side_o[:7] + pipe.q - c),
                out.code.eq(pipe.side_o[7:9]),
            ]
        m.d.comb += self.o.payload.eq(out)
        return m


class NitroReluBackward(wiring.Component):
    """Stream NITRO-ReLU backward: ``(d, code) -> d_in``.

    Parameters
    ----------
    err_width : int
        Width of the signed back-propagated error ``d`` and of ``d_in``
        (default ``BACKERR_WIDTH``).
    slope : int or None
        Fixed inverse slope; ``None`` adds the run-time ``inv_slope`` port.
    bits_per_stage : int
        Quotient bits per pipeline stage of the long division (default 1: two
        chained 6-bit steps miss 150 MHz on ECP5-6).

    Ports
    -----
    i : In(stream.Signature(StructLayout{d: signed(err_width), code: ReluCode}))
    o : Out(stream.Signature(signed(err_width)))            ``d_in``
    inv_slope : In(unsigned(5))                             ``a`` (run-time slope only)

    How: one long division serves all three codes.  DIV divides ``|d|`` by
    ``a``, PASS divides it by 1 (giving ``d`` back exactly) and ZERO divides 0;
    the divisor travels with each item.  So ``d`` needs no delay line beside the
    divider and there is no output multiplexer.

    Latency :attr:`latency` = ``3 + ceil(err_width / bits_per_stage)`` (27 by
    default), one result per cycle.
    """

    def __init__(self, err_width: int = BACKERR_WIDTH, *, slope: int | None = None,
                 bits_per_stage: int = 1):
        check_slope(slope)
        self.err_width, self.slope = int(err_width), slope
        # |d| <= 2**(err_width-1): err_width quotient bits, never saturating.
        self._pipe = LongDivPipe(self.err_width, SLOPE_WIDTH, per_item_divisor=True,
                                 bits_per_stage=bits_per_stage)
        self.latency = self._pipe.latency
        self.in_layout = data.StructLayout({"d": signed(self.err_width), "code": ReluCode})
        super().__init__(_signature(self.in_layout, signed(self.err_width), slope))

    def elaborate(self, platform):
        m = Module()
        pipe = _pipeline(m, self)
        slope = self.slope if self.slope is not None else _slope_table(m, self.inv_slope)
        code = self.i.payload.code
        # The pipe samples the per-item divisor one cycle after the item: register
        # whether it divides by a, alongside the pipe's magnitude stage.
        is_div = Signal()
        with m.If(pipe.en):
            m.d.sync += is_div.eq(code == ReluCode.DIV)
        m.d.comb += [
            pipe.a.eq(Mux(code == ReluCode.ZERO, 0, self.i.payload.d)),
            pipe.d.eq(Mux(is_div, slope, 1)),
            self.o.payload.eq(pipe.q[:self.err_width]),
        ]
        return m
