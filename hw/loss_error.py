"""Loss error ``e = yhat - y`` for one-hot targets (``y`` = 32 on the true class).

``yhat`` is a NITRO Scaling output in ``[-127, 127]``, so ``e`` lies in
``[-159, 127]`` and needs 9 signed bits; the unit computes it exactly.  The
authors' implementation stores it in int8, which wraps when ``yhat < -96``; the
``wrap_int8=True`` option reproduces that for cross-checking.

The predictions of one sample arrive as a stream in class order
``0 .. n_classes - 1``; an internal counter tracks the class index and restarts
after ``n_classes`` elements.  ``label`` (the true class) and ``n_classes``
must stay still while a sample streams through.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.arith import ONE_HOT_VALUE

from .divider import stream_pipeline_control
from .widths import ACT_WIDTH, ERR_WIDTH

__all__ = ["LossError"]


class LossError(wiring.Component):
    """Stream ``yhat -> (e, last)``.

    Parameters
    ----------
    yhat_width : int
        Width of the signed predictions (default ``ACT_WIDTH`` = 8).
    err_width : int
        Width of the signed error (default ``ERR_WIDTH`` = 9).
    class_width : int
        Width of ``label`` and ``n_classes`` (up to ``2**class_width - 1`` classes).
    one_hot : int
        Target value on the true class (32).
    wrap_int8 : bool
        Wrap ``e`` to int8 like the authors' code (then sign-extended to ``err_width``).

    Ports
    -----
    i : In(stream.Signature(signed(yhat_width)))              predictions, class order
    o : Out(stream.Signature(StructLayout{e, last}))          ``e`` signed(err_width);
                                                               ``last`` marks the sample's last class
    label : In(unsigned(class_width))                         true class
    n_classes : In(unsigned(class_width))                     classes per sample (>= 1)

    Latency :attr:`latency` = 1, one result per cycle.
    """

    latency = 1

    def __init__(self, yhat_width: int = ACT_WIDTH, err_width: int = ERR_WIDTH, *,
                 class_width: int = 8, one_hot: int = ONE_HOT_VALUE, wrap_int8: bool = False):
        self.yhat_width, self.err_width = int(yhat_width), int(err_width)
        self.class_width, self.one_hot, self.wrap_int8 = int(class_width), int(one_hot), wrap_int8
        self.out_layout = data.StructLayout({"e": signed(self.err_width), "last": 1})
        super().__init__({
            "i": In(stream.Signature(signed(self.yhat_width))),
            "o": Out(stream.Signature(self.out_layout)),
            "label": In(unsigned(self.class_width)),
            "n_classes": In(unsigned(self.class_width)),
        })

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        stream_pipeline_control(m, en=en, i_valid=self.i.valid, i_ready=self.i.ready,
                                o_valid=self.o.valid, o_ready=self.o.ready,
                                latency=self.latency)
        idx = Signal(unsigned(self.class_width))
        last = Signal()
        m.d.comb += last.eq(idx + 1 >= self.n_classes)
        diff = Signal(signed(max(self.yhat_width, self.one_hot.bit_length() + 1) + 1))
        with m.If(idx == self.label):
            m.d.comb += diff.eq(self.i.payload - self.one_hot)
        with m.Else():
            m.d.comb += diff.eq(self.i.payload)
        out = Signal(self.out_layout)
        with m.If(en):
            if self.wrap_int8:
                m.d.sync += out.e.eq(diff[:8].as_signed())
            else:
                m.d.sync += out.e.eq(diff)
            m.d.sync += out.last.eq(last)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += idx.eq(Mux(last, 0, idx + 1))
        m.d.comb += self.o.payload.eq(out)
        return m
