"""Exact truncating division by a (run-time or fixed) constant, pipelined.

``tdiv(a, d)`` rounds toward zero.  Amaranth's ``//`` and ``>>`` on signed values
round toward minus infinity and ``//`` builds a combinational divider, so this
unit never uses them on signed data: it takes the magnitude, multiplies it by
the reciprocal constant ``m`` from :mod:`hw.reciprocal`, shifts the unsigned
product right by ``s`` (a floor of a non-negative value) and restores the sign.
The proof that this is exact for every dividend of the declared width is in
``hw/reciprocal.py``.

Two ways to divide:

* **Reciprocal** (:class:`TruncDivPipe`): multiply the magnitude by the
  constant from :mod:`hw.reciprocal`, shift, restore the sign (below).  Uses
  DSP blocks; on the iCE40 Yosys packs the pipeline registers into SB_MAC16.
  On ECP5, Yosys does not pack registers into MULT18X18D, so every
  register -> DSP -> register path is ~7 ns (~4 ns inside the block): at most
  ~145 MHz on speed grade 6, whatever the pipelining around it.
* **Long division** (:class:`LongDivPipe`): restoring division, one (or a
  few) compare-and-subtract of a divisor-wide remainder per pipeline stage, in
  LUTs and carry chains.  Exact by construction, no DSP, and each stage is one
  short carry chain: this is what every unit uses by default, and it closes
  150 MHz on ECP5-6 (and 40 MHz on the iCE40UP5K).  Its latency grows with the
  number of quotient bits; units that only need a few quotient bits (the
  Scaler's 0..127, SgdUpdate's weight-range step) compute just those and
  saturate the rest.

Components:

* :class:`TruncDivPipe`: the bare reciprocal pipeline, for embedding in other units'
  pipelines.  It has an ``en`` input (all its registers advance only when
  ``en`` is 1) and a documented :attr:`~TruncDivPipe.latency`: ``q`` shows the
  quotient of the ``a`` presented ``latency`` enabled cycles earlier.  A
  side-band bus (``side_i`` -> ``side_o``) is delayed alongside so the embedding
  unit need not build its own delay line for the fields that travel with ``a``.
* :class:`LongDivPipe`: the bare long-division pipeline, same embedding API
  (``en``, ``latency``, side-band), divisor on a port ``d`` (or fixed).
* :class:`TruncDivider`: either pipeline (``method="long"``, the default, or
  ``"reciprocal"``) with ``lib.stream`` valid/ready interfaces, one result per
  cycle when the consumer is ready.

Reciprocal method: the divisor is given either at elaboration time (``divisor=d``: no constant
ports, the multiplier is by a constant) or at run time through the ports ``m``
(and ``s`` with ``runtime_shift=True``), which the host/sequencer loads with
:meth:`TruncDivPipe.constants` (a thin wrapper over ``hw.reciprocal``).  The
constants must stay still while data is in flight.

Fixed shift (default) versus run-time shift: with a fixed shift
``S = N + ceil(log2 d_max)`` the shift is wiring but ``m`` needs ``S + 1``
bits; with ``runtime_shift=True`` ``m`` needs only ``N + 1`` bits but a barrel
shifter follows the multiplier.  ``N = width - 1``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from . import reciprocal as rcp

__all__ = ["TruncDivPipe", "TruncDivider", "LongDivPipe", "stream_pipeline_control"]


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


class TruncDivPipe(wiring.Component):
    """Pipelined ``q = tdiv(a, d)`` with an enable, for embedding.

    Parameters
    ----------
    width : int
        Width of the signed dividend ``a`` and of the signed quotient ``q``.
        Every ``a`` in ``[-2**(width-1), 2**(width-1) - 1]`` is exact.
    d_max : int
        Largest divisor the run-time constants may encode (sets the port widths).
        Ignored when ``divisor`` is given.
    divisor : int or None
        Fixed divisor (elaboration time).  No ``m``/``s`` ports then.
    runtime_shift : bool
        Shift amount from the ``s`` port instead of the fixed ``N + ceil(log2 d_max)``.
    side_width : int
        Width of the side-band bus delayed alongside (0: no side-band ports).
    signed_input : bool
        True: a two's-complement input ``a``.  False: the caller supplies the
        magnitude ``mag`` (at most ``2**(width-1)``) and the sign ``neg``.

    Ports
    -----
    en : In(1)            registers advance when 1
    a : In(signed(width)) dividend (``signed_input``), or
    mag : In(unsigned(width)), neg : In(1)  its magnitude and sign
    q : Out(signed(width)) quotient of the ``a`` from ``latency`` enabled cycles ago
    m : In(unsigned(...)) reciprocal multiplier (run-time divisor only)
    s : In(unsigned(...)) shift (run-time divisor with ``runtime_shift`` only)
    side_i / side_o       side-band in / delayed out (``side_width > 0`` only)

    mul_limb : int or None
        Deeper pipeline for speed: both multiplier operands are cut into limbs
        of this many bits (18 for ECP5 MULT18X18D, 16 for iCE40 SB_MAC16), every
        limb product (one DSP block) is registered, the products are summed per
        multiplier limb in the next stage and the limb sums in the one after;
        the shift and the sign restoration get a stage each.  None: one
        multiply in one stage.

    Latency :attr:`latency`: 3 (magnitude, product, shift+sign), or 6 with
    ``mul_limb`` (magnitude, limb products, limb sums, product, shift, sign).
    """

    def __init__(self, width: int, *, d_max: int = 2**16, divisor: int | None = None,
                 runtime_shift: bool = False, side_width: int = 0,
                 signed_input: bool = True, mul_limb: int | None = None):
        if width < 2:
            raise ValueError("width must be >= 2")
        if mul_limb is not None and mul_limb < 1:
            raise ValueError("mul_limb must be >= 1")
        self.width = int(width)
        self.n_bits = self.width - 1                   # magnitudes <= 2**n_bits
        self.divisor = divisor
        self.runtime_shift = bool(runtime_shift) and divisor is None
        self.side_width = int(side_width)
        if divisor is not None:
            if divisor < 1:
                raise ZeroDivisionError(f"divisor must be positive, got {divisor}")
            self.d_max = int(divisor)
            self._m_const, self._s_const = rcp.reciprocal(divisor, self.n_bits)
        else:
            if d_max < 1:
                raise ValueError("d_max must be >= 1")
            self.d_max = int(d_max)
        self.signed_input = bool(signed_input)
        members = {"en": In(1)}
        if self.signed_input:
            members["a"] = In(signed(self.width))
        else:
            members["mag"] = In(unsigned(self.width))
            members["neg"] = In(1)
        members["q"] = Out(signed(self.width))
        if divisor is None:
            mult_w = (rcp.multiplier_width(self.n_bits) if self.runtime_shift
                      else rcp.multiplier_width(self.n_bits, self.d_max))
        else:
            mult_w = max(1, self._m_const.bit_length())
        self.mult_width = mult_w
        self.mul_limb = mul_limb
        self.latency = 3 if self.mul_limb is None else 6
        if divisor is None:
            if self.runtime_shift:
                members["m"] = In(unsigned(rcp.multiplier_width(self.n_bits)))
                members["s"] = In(unsigned(rcp.shift_width(self.n_bits, self.d_max)))
            else:
                members["m"] = In(unsigned(rcp.multiplier_width(self.n_bits, self.d_max)))
        if self.side_width:
            members["side_i"] = In(self.side_width)
            members["side_o"] = Out(self.side_width)
        super().__init__(members)

    def constants(self, d: int) -> dict:
        """Port values (``{"m": ..., "s": ...}``) that make this pipeline divide by ``d``."""
        if self.divisor is not None:
            raise ValueError("this divider has a fixed divisor")
        if self.runtime_shift:
            m, s = rcp.reciprocal(d, self.n_bits)
            return {"m": m, "s": s}
        m, _ = rcp.reciprocal(d, self.n_bits, d_max=self.d_max)
        return {"m": m}

    def elaborate(self, platform):
        m = Module()
        w = self.width
        if self.divisor is not None:
            mult, shift = self._m_const, self._s_const
        else:
            mult = self.m
            shift = self.s if self.runtime_shift else rcp.fixed_shift(self.n_bits, self.d_max)
        mult_w = self.mult_width
        stages = []          # (list of sync statements) per pipeline stage, in order

        # Stage: sign and magnitude (|a| <= 2**(w-1) needs w unsigned bits).
        mag1 = Signal(unsigned(w))
        neg1 = Signal()
        if self.signed_input:
            a = self.a
            stages.append([mag1.eq(Mux(a[-1], -a, a)),    # -a is one bit wider: exact
                           neg1.eq(a[-1])])
        else:
            stages.append([mag1.eq(self.mag), neg1.eq(self.neg)])

        # Stage(s): unsigned product |a| * m.
        prod = Signal(unsigned(w + mult_w))
        if self.mul_limb is None:
            stages.append([prod.eq(mag1 * mult)])
        else:
            # Both operands cut into limbs: every limb product fits one DSP block and
            # is registered; then the products are summed per multiplier limb
            # (a shallow adder tree), then the limb sums are added up.
            limb = self.mul_limb

            def cut(value, width):
                starts = list(range(0, width, limb))
                if isinstance(value, int):
                    return [((value >> lo) & ((1 << limb) - 1), lo) for lo in starts]
                return [(value[lo:lo + limb], lo) for lo in starts]

            a_parts = cut(mag1, w)
            m_parts = cut(mult, mult_w)
            pps = {}
            for i, (ap, alo) in enumerate(a_parts):
                for j, (mp, mlo) in enumerate(m_parts):
                    pps[i, j] = Signal(unsigned(2 * limb), name=f"pp{i}_{j}")
            stages.append([pps[i, j].eq(ap * mp)
                           for i, (ap, _) in enumerate(a_parts)
                           for j, (mp, _) in enumerate(m_parts)])
            cols = [Signal(unsigned(w + limb), name=f"col{j}") for j in range(len(m_parts))]
            stages.append([cols[j].eq(sum(pps[i, j] << alo for i, (_, alo) in enumerate(a_parts)))
                           for j in range(len(m_parts))])
            stages.append([prod.eq(sum(col << mlo for col, (_, mlo) in zip(cols, m_parts)))])

        # Stage(s): the shift (an unsigned floor), then the sign.
        q = Signal(signed(w))
        qmag = Signal(unsigned(w))
        if self.mul_limb is None:
            m.d.comb += qmag.eq(prod >> shift)
        else:
            stages.append([qmag.eq(prod >> shift)])
        stages.append([])                                      # the sign stage, below
        assert len(stages) == self.latency

        # The sign travels with the data: negk holds the sign in stage k.
        negs = [neg1] + [Signal(name=f"neg{k + 2}") for k in range(self.latency - 2)]
        for k in range(1, self.latency - 1):
            stages[k].append(negs[k].eq(negs[k - 1]))
        stages[-1].append(q.eq(Mux(negs[-1], -qmag, qmag)))
        with m.If(self.en):
            for stmts in stages:
                m.d.sync += stmts
        m.d.comb += self.q.eq(q)

        if self.side_width:
            side = [Signal(self.side_width, name=f"side{k + 1}") for k in range(self.latency)]
            with m.If(self.en):
                m.d.sync += side[0].eq(self.side_i)
                for k in range(1, self.latency):
                    m.d.sync += side[k].eq(side[k - 1])
            m.d.comb += self.side_o.eq(side[-1])
        return m


class TruncDivider(wiring.Component):
    """Stream ``o = tdiv(i, d)``: one result per cycle, fixed latency.

    Parameters
    ----------
    width : int
        Width of the signed dividend and quotient.
    d_max : int
        Largest run-time divisor.
    divisor : int or None
        Fixed divisor (no constant ports).
    method : ``"long"`` (default) or ``"reciprocal"``
        ``"long"``: :class:`LongDivPipe` (restoring division in LUTs and carry
        chains, one quotient bit per stage, no DSP; closes 150 MHz on ECP5);
        the run-time divisor is the port ``d`` itself.  ``"reciprocal"``:
        :class:`TruncDivPipe` (multiply by the reciprocal from
        :mod:`hw.reciprocal`, DSP blocks); ports ``m`` (and ``s``).
    runtime_shift, mul_limb :
        Options of the reciprocal method (see :class:`TruncDivPipe`).

    Ports
    -----
    i : In(stream.Signature(signed(width)))   dividends
    o : Out(stream.Signature(signed(width)))  quotients, in order
    d (long) or m, s (reciprocal) : constants from :meth:`constants` (run-time divisor)

    Latency: :attr:`latency` cycles from an accepted input to its valid output
    (long: ``width + 3``, + 1 above 24 bits; reciprocal: 3, or 6 with ``mul_limb``); throughput
    one per cycle while ``o.ready`` is 1.  Back-pressure stalls the whole
    pipeline (``i.ready`` follows ``o.ready`` when full).
    """

    def __init__(self, width: int, *, d_max: int = 2**16, divisor: int | None = None,
                 method: str = "long", runtime_shift: bool = False,
                 mul_limb: int | None = None):
        if method not in ("long", "reciprocal"):
            raise ValueError(f"method must be 'long' or 'reciprocal', got {method!r}")
        self.method = method
        self.width = int(width)
        if method == "long":
            if runtime_shift or mul_limb is not None:
                raise ValueError("runtime_shift and mul_limb belong to method='reciprocal'")
            d_max = int(divisor if divisor is not None else d_max)
            # Quotient magnitudes up to 2**(width-1): width bits, never saturating.
            # The divisor travels beside the data: a port fanning out to every stage
            # costs 2+ ns of routing on ECP5 at 48 bits.
            self._pipe = LongDivPipe(self.width, d_max.bit_length(), divisor=divisor,
                                     per_item_divisor=True)
        else:
            self._pipe = TruncDivPipe(width, d_max=d_max, divisor=divisor,
                                      runtime_shift=runtime_shift, mul_limb=mul_limb)
        self.latency = self._pipe.latency
        members = {
            "i": In(stream.Signature(signed(self.width))),
            "o": Out(stream.Signature(signed(self.width))),
        }
        for name in ("m", "s", "d"):
            if name in self._pipe.signature.members:
                members[name] = In(self._pipe.signature.members[name].shape)
        super().__init__(members)

    def constants(self, d: int) -> dict:
        """Port values that make this unit divide by ``d``."""
        if self.method == "long":
            if self._pipe.divisor is not None:
                raise ValueError("this divider has a fixed divisor")
            if not 1 <= d < 2 ** self._pipe.d_width:
                raise ValueError(f"divisor {d} outside 1 .. 2**{self._pipe.d_width} - 1")
            return {"d": int(d)}
        return self._pipe.constants(d)

    def elaborate(self, platform):
        m = Module()
        m.submodules.pipe = pipe = self._pipe
        for name in ("m", "s", "d"):
            if name in self._pipe.signature.members:
                m.d.comb += getattr(pipe, name).eq(getattr(self, name))
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
