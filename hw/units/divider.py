"""Exact truncating division, pipelined: restoring long division in LUTs and carry chains.

``tdiv(a, d)`` rounds toward zero.  Amaranth's ``//`` and ``>>`` on signed values round
toward minus infinity and ``//`` builds a combinational divider, so these units never use them
on signed data: they divide the magnitude and restore the sign.  Long division does one (or a
few) compare-and-subtract of a divisor-wide remainder per pipeline stage: exact by
construction, no DSP, each stage one short carry chain (150 MHz on ECP5-6, 40 MHz on the
iCE40UP5K).  Its latency grows with the quotient bits, so units that need only a few (the
Scaler's 0..127, SgdUpdate's weight-range step) compute just those and saturate the rest.

* :class:`LongDivPipe`: the bare pipeline, for embedding in other units' pipelines: an ``en``
  input (its registers advance only when ``en`` is 1), a documented
  :attr:`~LongDivPipe.latency` and a side-band bus delayed alongside.
* :class:`TruncDivider`: the pipeline with ``lib.stream`` valid/ready interfaces, one result
  per cycle when the consumer is ready.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["TruncDivider", "LongDivPipe", "stream_pipeline_control"]


def stream_pipeline_control(m: Module, *, en, i_valid, i_ready, o_valid, o_ready,
                            latency: int, name: str = "pipe"):
    """Valid/ready control for a stall-as-a-whole pipeline of ``latency`` stages.

    Drives ``en`` (the pipeline advances), ``i_ready`` and ``o_valid``.  The
    pipeline advances when the output stage is empty or being consumed, so with
    the consumer always ready it accepts and delivers one item per cycle and
    the first result appears ``latency`` cycles after the first input.
    """
    valid = [Signal(name=f"{name}_v{k}") for k in range(latency)]
    m.d.comb += [
        en.eq(o_ready | ~valid[-1]),
        i_ready.eq(en),
        o_valid.eq(valid[-1]),
    ]
    with m.If(en):
        m.d.sync += valid[0].eq(i_valid)
        for k in range(1, latency):
            m.d.sync += valid[k].eq(valid[k - 1])
    return valid


class TruncDivider(wiring.Component):
    """Stream ``o = tdiv(i, d)``: one result per cycle, fixed latency.

    Parameters
    ----------
    width : int
        Width of the signed dividend and quotient.
    d_max : int
        Largest run-time divisor (the port ``d``).
    divisor : int or None
        Fixed divisor (no ``d`` port).

    Ports
    -----
    i : In(stream.Signature(signed(width)))   dividends
    o : Out(stream.Signature(signed(width)))  quotients, in order
    d : In(unsigned(...))                     the run-time divisor (:meth:`constants`)

    Latency: :attr:`latency` cycles from an accepted input to its valid output (``width + 3``,
    + 1 above 24 bits); throughput one per cycle while ``o.ready`` is 1.  Back-pressure stalls
    the whole pipeline (``i.ready`` follows ``o.ready`` when full).
    """

    def __init__(self, width: int, *, d_max: int = 2**16, divisor: int | None = None):
        self.width = int(width)
        d_max = int(divisor if divisor is not None else d_max)
        # Quotient magnitudes up to 2**(width-1): width bits, never saturating.  The divisor
        # travels beside the data: a port fanning out to every stage is a long net.
        self._pipe = LongDivPipe(self.width, d_max.bit_length(), divisor=divisor,
                                 per_item_divisor=True)
        self.latency = self._pipe.latency
        members = {
            "i": In(stream.Signature(signed(self.width))),
            "o": Out(stream.Signature(signed(self.width))),
        }
        if "d" in self._pipe.signature.members:
            members["d"] = In(self._pipe.signature.members["d"].shape)
        super().__init__(members)

    def constants(self, d: int) -> dict:
        """Port values that make this unit divide by ``d``."""
        if self._pipe.divisor is not None:
            raise ValueError("this divider has a fixed divisor")
        if not 1 <= d < 2 ** self._pipe.d_width:
            raise ValueError(f"divisor {d} outside 1 .. 2**{self._pipe.d_width} - 1")
        return {"d": int(d)}

    def elaborate(self, platform):
        m = Module()
        m.submodules.pipe = pipe = self._pipe
        if "d" in self._pipe.signature.members:
            m.d.comb += pipe.d.eq(self.d)
        stream_pipeline_control(m, en=pipe.en, i_valid=self.i.valid, i_ready=self.i.ready,
                                o_valid=self.o.valid, o_ready=self.o.ready,
                                latency=pipe.latency)
        m.d.comb += [
            pipe.a.eq(self.i.payload),
            self.o.payload.eq(pipe.q),
        ]
        return m


class LongDivPipe(wiring.Component):
    """Pipelined ``q = tdiv(a, d)`` by restoring long division, with an enable.

    No multiplier: every quotient bit is one compare-and-subtract of a
    ``d_width + 1``-bit partial remainder against the divisor, so the unit is
    LUTs and carry chains only and each pipeline stage is one (or
    ``bits_per_stage``) short carry chain(s).  This is what closes timing on
    ECP5, where a multiplier inferred into MULT18X18D cannot use the block's
    internal registers (Yosys does not pack them) and a register -> DSP ->
    register path alone is ~7 ns (at most ~145 MHz on speed grade 6).

    Exactness: on the magnitude ``x = |a| >> drop_bits`` (a floor, so the
    whole is ``tdiv(a, d * 2**drop_bits)``) the classic restoring recurrence
    ``r <- 2 r + next bit; if r >= d: r -= d, quotient bit 1`` keeps
    ``r < d`` and yields ``floor(x / d)`` bit by bit.  Only the ``q_bits``
    low quotient bits are computed: the upper bits of ``x`` (``x >> q_bits``)
    are the starting remainder, which is valid when ``x >> q_bits < d``, i.e.
    ``floor(x / d) < 2**q_bits``.  Otherwise the quotient *saturates* to
    ``2**q_bits - 1`` (checked in the first stage) -- with ``saturate=False``
    the caller guarantees it never happens (``q_bits`` covering every
    quotient).  The sign is restored at the end (truncation toward zero).

    Parameters
    ----------
    width : int        width of the signed dividend ``a`` (or of ``mag``)
    d_width : int      width of the unsigned divisor ``d`` (``1 .. 2**d_width - 1``)
    q_bits : int       quotient magnitude bits computed (default: all of them)
    drop_bits : int    power-of-two pre-division (floor on the magnitude)
    bits_per_stage : int  quotient bits per pipeline stage
    step_stages : int or None  pad the division to this many stages (to match
                       another pipe's latency)
    signed_input : bool  ``a`` (two's complement) or ``mag``/``neg``
    per_item_divisor : bool  ``d`` travels with each item: it is sampled one
                       enabled cycle *after* the item's ``a`` (when the item
                       leaves the magnitude stage), so an embedding unit may
                       derive it from registered per-item fields or from a
                       setting registered in the cycle the item arrives.
                       Otherwise ``d`` must stay still while items are in
                       flight, like constants (it is first used one cycle after
                       the item arrives).
    divisor : int or None  fixed divisor (no ``d`` port)
    side_width : int   side-band bus delayed alongside

    Ports: ``en``, ``a`` or ``mag``/``neg``, ``d`` (unless fixed), ``q``
    (``signed(q_bits + 1)``), ``sat`` (the item's quotient saturated),
    ``side_i``/``side_o``.

    split_negate : bool or None  compute ``|a|`` in two registered halves
                       (one more cycle); default: when ``width > 24``

    Latency :attr:`latency` = 3 + ceil(q_bits / bits_per_stage) (or
    ``3 + step_stages``), plus 1 with ``split_negate``: magnitude, saturation
    check, the division steps, sign.
    """

    def __init__(self, width: int, d_width: int, *, q_bits: int | None = None,
                 drop_bits: int = 0, bits_per_stage: int = 1, step_stages: int | None = None,
                 signed_input: bool = True, per_item_divisor: bool = False,
                 divisor: int | None = None, side_width: int = 0,
                 split_negate: bool | None = None):
        self.width = int(width)
        self.signed_input = bool(signed_input)
        # A wide two's-complement negation is one long carry chain (48 bits: ~26 ns
        # on iCE40): split it into two registered halves.
        if split_negate is None:
            split_negate = self.width > 24
        self.split_negate = bool(split_negate) and self.signed_input
        self.mag_width = self.width          # |a| <= 2**(w-1) fits w unsigned bits
        self.drop_bits = int(drop_bits)
        self.x_width = max(1, self.mag_width - self.drop_bits)
        self.q_bits = self.x_width if q_bits is None else int(q_bits)
        if self.q_bits < 1:
            raise ValueError("q_bits must be >= 1")
        self.d_width = int(d_width)
        self.divisor = divisor
        if divisor is not None and not 1 <= divisor < 2 ** self.d_width:
            raise ValueError(f"divisor {divisor} does not fit d_width {self.d_width}")
        self.per_item_divisor = bool(per_item_divisor) and divisor is None
        self.bits_per_stage = max(1, int(bits_per_stage))
        need = -(-self.q_bits // self.bits_per_stage)
        self.step_stages = need if step_stages is None else int(step_stages)
        if self.step_stages < need:
            raise ValueError(f"{self.q_bits} quotient bits need {need} stages")
        self.saturating = self.x_width > self.q_bits
        self.side_width = int(side_width)
        self.latency = 3 + self.step_stages + int(self.split_negate)
        members = {"en": In(1)}
        if self.signed_input:
            members["a"] = In(signed(self.width))
        else:
            members["mag"] = In(unsigned(self.width))
            members["neg"] = In(1)
        if divisor is None:
            members["d"] = In(unsigned(self.d_width))
        members["q"] = Out(signed(self.q_bits + 1))
        members["sat"] = Out(1)
        if self.side_width:
            members["side_i"] = In(self.side_width)
            members["side_o"] = Out(self.side_width)
        super().__init__(members)

    def elaborate(self, platform):
        # One function on purpose: the stages are one pipeline whose registers (remainder,
        # quotient, sign, saturation, divisor, side band) travel together stage by stage.
        m = Module()
        en = self.en
        dw, qb = self.d_width, self.q_bits
        n_steps = self.step_stages

        def reg(shape, name):
            return Signal(shape, name=name, reset_less=True)

        # Stage 1: sign and magnitude, divisor capture.
        mag = reg(unsigned(self.mag_width), "ld_mag")
        neg = [reg(1, "ld_neg1")]
        d_in = self.d if self.divisor is None else self.divisor
        d_stage = [] if self.per_item_divisor else None
        if self.split_negate:
            # |a| = (a ^ sign) + sign: the low half's sum and carry in one stage, the
            # high half in the next.
            a, w = self.a, self.width
            h = w // 2
            ones = a.as_unsigned() ^ a[-1].replicate(w)
            lo = reg(unsigned(h + 1), "ld_mag_lo")
            hi = reg(unsigned(w - h), "ld_mag_hi")
            neg0 = reg(1, "ld_neg0")
            side0 = reg(self.side_width, "ld_side0") if self.side_width else None
            with m.If(en):
                m.d.sync += [lo.eq(ones[:h] + a[-1]), hi.eq(ones[h:]), neg0.eq(a[-1])]
                m.d.sync += [mag.eq(Cat(lo[:h], hi + lo[h])), neg[0].eq(neg0)]
                if side0 is not None:
                    m.d.sync += side0.eq(self.side_i)
        with m.If(en):
            if self.split_negate:
                pass
            elif self.signed_input:
                a = self.a
                m.d.sync += [mag.eq(Mux(a[-1], -a, a)), neg[0].eq(a[-1])]
            else:
                m.d.sync += [mag.eq(self.mag), neg[0].eq(self.neg)]

        def d_at(k):                   # divisor used by step stage k (-1: saturation check)
            return d_stage[k] if d_stage is not None and k >= 0 else d_in

        # Stage 2: starting remainder x >> q_bits and the saturation check.
        x = mag[self.drop_bits:] if self.drop_bits < self.mag_width else Signal(1)
        top = x[qb:] if len(x) > qb else None
        r = reg(unsigned(dw), "ld_r0")
        xq = reg(unsigned(qb), "ld_xq0")
        sat = [reg(1, "ld_sat0")]
        neg.append(reg(1, "ld_neg2"))
        with m.If(en):
            m.d.sync += [xq.eq(x[:qb]), neg[1].eq(neg[0])]
            if top is not None:
                if len(top) > dw:        # split: a short compare and an OR of the rest
                    sat_now = top[dw:].any() | (top[:dw] >= d_at(-1))
                else:
                    sat_now = top >= d_at(-1)
                m.d.sync += [r.eq(top[:dw]), sat[0].eq(sat_now)]
            else:
                m.d.sync += [r.eq(0), sat[0].eq(0)]
            if d_stage is not None:
                d_stage.append(reg(unsigned(dw), "ld_d0"))
                m.d.sync += d_stage[0].eq(d_in)

        # Division stages: bits_per_stage restoring steps each.
        done = 0
        for s in range(n_steps):
            d_here = d_at(s)
            cur_r, cur_xq = r, xq
            steps = min(self.bits_per_stage, qb - done)
            for t in range(steps):
                r2 = Cat(cur_xq[-1], cur_r)                       # 2 r + next bit (dw+1 bits)
                diff = Signal(signed(dw + 2), name=f"ld_diff{s}_{t}")
                m.d.comb += diff.eq(r2 - d_here)
                ge = ~diff[-1]
                nr = Signal(unsigned(dw), name=f"ld_nr{s}_{t}")
                m.d.comb += nr.eq(Mux(ge, diff[:dw], r2[:dw]))
                nxq = Signal(unsigned(qb), name=f"ld_nxq{s}_{t}")
                m.d.comb += nxq.eq(Cat(ge, cur_xq[:-1]) if qb > 1 else ge)
                cur_r, cur_xq = nr, nxq
            done += steps
            r = reg(unsigned(dw), f"ld_r{s + 1}")
            xq = reg(unsigned(qb), f"ld_xq{s + 1}")
            sat.append(reg(1, f"ld_sat{s + 1}"))
            neg.append(reg(1, f"ld_neg{s + 3}"))
            with m.If(en):
                m.d.sync += [r.eq(cur_r), xq.eq(cur_xq), sat[-1].eq(sat[-2]),
                             neg[-1].eq(neg[-2])]
                if d_stage is not None and s + 1 < n_steps:
                    d_stage.append(reg(unsigned(dw), f"ld_d{s + 1}"))
                    m.d.sync += d_stage[-1].eq(d_stage[-2])
        assert done == qb

        # Last stage: saturation and sign.
        q = reg(signed(qb + 1), "ld_q")
        sat_o = reg(1, "ld_sat_o")
        qm = Mux(sat[-1], 2 ** qb - 1, xq) if self.saturating else xq
        with m.If(en):
            m.d.sync += [q.eq(Mux(neg[-1], -qm, qm)), sat_o.eq(sat[-1])]
        m.d.comb += [self.q.eq(q), self.sat.eq(sat_o)]

        if self.side_width:
            n_side = self.latency - int(self.split_negate)
            side = [reg(self.side_width, f"ld_side{k + 1}") for k in range(n_side)]
            with m.If(en):
                m.d.sync += side[0].eq(side0 if self.split_negate else self.side_i)
                for k in range(1, n_side):
                    m.d.sync += side[k].eq(side[k - 1])
            m.d.comb += self.side_o.eq(side[-1])
        return m
