"""One value's post-processing for one instruction op, with one shared serial divider.

The serial Trainer for the iCE40UP5K computes one accumulator value at a time; this unit turns
it into what the instruction's ``op`` (``hw.contract.Op``) writes, bit-exactly as
``nitrod.isa_model.IsaMachine.execute`` (golden's arithmetic), with a single
:class:`hw.units.serial_divider.SerialDivider` (one quotient bit per cycle) doing every division in
turn instead of the pipelined dividers of hw/array/post_lanes.py:

============  =============================================  ==================================
op            divisions, in order                            ``value``
============  =============================================  ==================================
``FORWARD``   ``|acc| >> 8`` by ``divisor``, then ``|y-|``   ``h = nitro_relu(y, a)``,
              by ``a``                                       ``y = nitro_scale(acc, divisor)``
``LOSS``      ``|acc| >> 8`` by ``divisor``                  ``e = y - 32 * target``
``BACKWARD``  ``|sat(acc)|`` by ``a`` (code DIV) or 1        ``d`` (ZERO: 0, DIV:
                                                             ``tdiv(sat, a)``, PASS: ``sat``)
``SGD``       ``|acc|`` by ``d_g``, then ``|w_old|`` by      ``w' = sgd_update(w_old, acc,
              ``d_w`` (only if ``d_w > 0``)                  d_g, 1, d_w)``, saturated
============  =============================================  ==================================

with ``a`` the inverse slope, ``y-`` = ``min(y, 0)`` and ``sat(acc)`` the accumulator
saturated to signed ``err_width``.

Exactness:

* Truncation toward zero: every division is of magnitudes (a floor) and the sign is restored
  on the quotient, so ``tdiv(z, d) = sign(z) * floor(|z| / d)``.
* NITRO Scaling: ``tdiv(z, 256 f) == sign(z) * floor(floor(|z| / 256) / f)`` and
  ``floor(|z| / 256)`` is ``|z| >> 8`` (dropping the low bits of a magnitude is a floor).
  The quotient is computed in full and clipped to 127 (any bit above the 7th set), whatever
  its width.  The ReLU then divides ``|y-| <= 127`` by ``a``:
  ``h = max(y, 0) - floor(|y-| / a) - c(a)`` (``y`` is already in ``[-127, 127]``) and the
  code is ``relu_codes(y)``: PASS for ``0 <= y < 127``, DIV for ``-127 <= y < 0``, ZERO for
  ``y = 127`` (the clip).
* BACKWARD: ``acc`` outside signed ``err_width`` is saturated to its bound and ``backerr``
  rises (also for code ZERO, as the model's flag does); PASS divides by 1, so one path serves
  PASS and DIV; ZERO gives 0.
* SGD: ``w' = t - sign(g) * floor(|g| / d_g)`` with ``t = w - tdiv(w, d_w)``, which moves
  ``w`` toward zero and so stays in the weight range.  The gradient's quotient is clipped to
  ``2**(wgt_width + 1) - 1``: a quotient of magnitude ``>= 2**wgt_width`` overflows ``w'``
  whatever its exact value, and the clipped one overflows it in the same direction, so the
  saturated ``w'`` and ``sgd_overflow`` are exact.  The sum is kept exact until the end
  (``|w - q_g|`` stays below ``2**(wgt_width + 2)``) and saturated once, so the order of the
  two divisions does not matter.

Datapath, no multiplier: a conditional negation (one carry chain) into the register ``mag``
(``|acc|``, later ``|w_old|``), the divider's operand multiplexers, and one adder: the
result accumulates in the register behind ``value``, which starts at ``-c(a)`` (FORWARD),
``-32 * target`` (LOSS), 0 (BACKWARD) or ``w_old`` (SGD) and adds each signed quotient the
cycle after its division finishes (the quotient's clip and sign go to a register first).
Short dividends go to the divider left-aligned with its ``n_bits`` (hw/units/serial_divider.py), so
a division takes as many cycles as its dividend has bits, plus one.  The long paths (the
magnitude's 36-bit carry chain, the divider's step) each end in a register: the unit alone
runs at about 40 MHz on the iCE40UP5K, like the divider alone.

Handshake: ``start`` is taken while ``ready``.  The caller holds every input (``op``,
``acc``, the constants, ``code``, ``w_old``, ``target``, ``zero``) stable from the start
cycle until ``done``: the unit reads them throughout.  ``done`` pulses for one cycle
:meth:`SerialPost.cycles` cycles after the start cycle (cycle 0); ``value``, ``code_out``,
``backerr`` and ``sgd_overflow`` are registers, valid from ``done`` until the next start
(the inputs may change after ``done``).  ``ready`` is 1 again in the ``done`` cycle, so the
next value may start there.

``zero`` masks the value (padding rows and columns, LOSS's ``PAD_LABEL`` rows): ``value`` 0,
``code_out`` ZERO, both flags 0, for every op, in the op's usual number of cycles.
An unsupported ``inv_slope`` acts as 4 (like the ECP5 Trainer's hw/units/nitro_relu.py; the ISA
model rejects it).  An ``op`` other than FORWARD, LOSS, BACKWARD and SGD runs as a masked SGD
without decay: 0, ZERO, no flags, in ``cycles(Op.SGD)``.  A ``divisor`` or ``d_g`` of 0 is
the caller's error (the divider then returns all ones: the result saturates).
"""

from __future__ import annotations

from amaranth.hdl import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.contract import Op
from hw.contract.values import (ACT_MAX, DEFAULT_SLOPE, ONE_HOT_VALUE, RELU_MEAN_CORRECTION,
                                SCALE_SHIFT, SLOPE_WIDTH, SLOPES, ReluCode)

from .serial_divider import SerialDivider

__all__ = ["SerialPost"]

#: Bits of a NITRO Scaling magnitude (``|y| <= 127``), and so of the ReLU's divided part.
SCALED_BITS = ACT_MAX.bit_length()


class SerialPost(wiring.Component):
    """One accumulator value through one op's post-processing (module doc).

    Parameters
    ----------
    acc_width : int      signed accumulator (for SGD: the summed gradient ``g``)
    act_width : int      ACT lane width (only widens ``value``)
    wgt_width : int      signed weights ``w_old`` and ``w'``
    err_width : int      ERR lane width: BACKWARD saturates ``acc`` to it
    fan_in_width, d_g_width, d_w_width : int  widths of ``divisor``, ``d_g``, ``d_w``

    ``acc_width`` must exceed ``err_width``, ``wgt_width + 1`` and 15.

    Ports
    -----
    start : In(1)              take the inputs (while ``ready``)
    ready : Out(1)             idle
    done : Out(1)              one-cycle pulse: the outputs are valid until the next start
    op : In(3)                 ``hw.contract.Op``: FORWARD, LOSS, BACKWARD or SGD
    acc : In(signed(acc_width))  the accumulator; for SGD the gradient ``g``
    divisor : In(fan_in_width)   Scaler fan-in ``f`` (FORWARD, LOSS): ``SF = 256 f``
    inv_slope : In(5)          NITRO-ReLU's ``a`` (FORWARD, BACKWARD); unsupported: 4
    code : In(2)               BACKWARD: the stored :class:`hw.contract.ReluCode`
    w_old : In(signed(wgt_width))  SGD: the weight
    d_g : In(d_g_width)        SGD: ``lr_inv * amp`` (>= 1)
    d_w : In(d_w_width)        SGD: ``decay_inv`` (0: no decay)
    target : In(1)             LOSS: this column is the sample's label (subtract 32)
    zero : In(1)               masked value: 0 and code ZERO, whatever the op
    value : Out(signed(max(act_width, err_width, wgt_width)))  ``h``, ``e``, ``d`` or ``w'``
    code_out : Out(2)          FORWARD: ``relu_codes(y)``; ZERO for other ops and ``zero``
    backerr : Out(1)           BACKWARD: ``acc`` did not fit signed ``err_width`` (saturated)
    sgd_overflow : Out(1)      SGD: ``w'`` left signed ``wgt_width`` (saturated)

    Cycles from the start cycle to ``done`` (:meth:`cycles`, exact; :attr:`max_cycles` the
    bound): each division its dividend bits + 1, plus 3 (the magnitude's register, the last
    sum, ``done``), plus 1 for FORWARD (``y`` is registered before the ReLU's division) and
    for SGD (the saturation): FORWARD ``acc_width + 5`` (41 by default), LOSS
    ``acc_width - 4`` (32), BACKWARD ``err_width + 4`` (28), SGD ``acc_width + 5`` (41), plus
    ``wgt_width + 1`` (17) when ``d_w > 0`` (58).  Every value of an op takes the same number.
    """

    def __init__(self, *, acc_width: int = 36, act_width: int = 9, wgt_width: int = 16,
                 err_width: int = 24, fan_in_width: int = 14, d_g_width: int = 36,
                 d_w_width: int = 21):
        self.acc_width, self.act_width = int(acc_width), int(act_width)
        self.wgt_width, self.err_width = int(wgt_width), int(err_width)
        self.fan_in_width = int(fan_in_width)
        self.d_g_width, self.d_w_width = int(d_g_width), int(d_w_width)
        if min(self.wgt_width, self.fan_in_width, self.d_g_width, self.d_w_width) < 1:
            raise ValueError("every width must be >= 1")
        if self.acc_width <= max(self.err_width, self.wgt_width + 1, SCALE_SHIFT + SCALED_BITS):
            raise ValueError(f"acc_width ({acc_width}) must exceed err_width, wgt_width + 1 "
                             f"and {SCALE_SHIFT + SCALED_BITS}")
        self.value_width = max(self.act_width, self.err_width, self.wgt_width)
        if self.value_width < SCALED_BITS + 2:
            raise ValueError("value must hold LOSS's errors [-159, 127]: 9 bits")
        # The running result: SGD's w - q_g before saturation needs wgt_width + 3 bits.
        self._res_width = max(self.value_width, self.wgt_width + 3)
        # Quotient magnitudes added to it: BACKWARD's up to 2**(err_width-1), SGD's clipped
        # to 2**(wgt_width+1) - 1, the scale's to 127.
        self._addend_width = max(self.err_width, self.wgt_width + 1, SCALED_BITS)
        d_width = max(self.fan_in_width, SLOPE_WIDTH, self.d_g_width, self.d_w_width)
        self._divider = SerialDivider(self.acc_width, d_width)
        self.max_cycles = max(self.cycles(op, True) for op in
                              (Op.FORWARD, Op.LOSS, Op.BACKWARD, Op.SGD))
        super().__init__({
            "start": In(1),
            "ready": Out(1),
            "done": Out(1),
            "op": In(3),
            "acc": In(signed(self.acc_width)),
            "divisor": In(unsigned(self.fan_in_width)),
            "inv_slope": In(unsigned(5)),
            "code": In(2),
            "w_old": In(signed(self.wgt_width)),
            "d_g": In(unsigned(self.d_g_width)),
            "d_w": In(unsigned(self.d_w_width)),
            "target": In(1),
            "zero": In(1),
            "value": Out(signed(self.value_width)),
            "code_out": Out(2),
            "backerr": Out(1),
            "sgd_overflow": Out(1),
        })

    def _division_bits(self, op: Op, d_w_nonzero: bool) -> list[int]:
        scale = self.acc_width - SCALE_SHIFT
        return {Op.FORWARD: [scale, SCALED_BITS], Op.LOSS: [scale],
                Op.BACKWARD: [self.err_width],
                Op.SGD: [self.acc_width] + [self.wgt_width] * bool(d_w_nonzero)}[Op(op)]

    def cycles(self, op, d_w_nonzero: bool = False) -> int:
        """Cycles from the start cycle to ``done`` for ``op`` (SGD: with ``d_w > 0`` or not);
        the same for every value, masked (``zero``) or not."""
        bits = self._division_bits(op, d_w_nonzero)
        # + the magnitude's cycle, the last sum's, done's; FORWARD: + the cycle that registers
        # y; SGD: + the saturation's
        return sum(self._divider.cycles(n) for n in bits) + 3 + (Op(op) in (Op.FORWARD, Op.SGD))

    def elaborate(self, platform):
        # One function on purpose: one value's sequence of divisions shares its twenty-odd
        # registers (res, addend, mag, the op flags) from the first step to the last; split
        # into stages they would all be passed around.
        m = Module()
        m.submodules.divider = div = self._divider
        aw, ww, ew = self.acc_width, self.wgt_width, self.err_width
        rw, yw = self._res_width, self._addend_width

        # The op's decode, registered in the start cycle for the rest of the op.
        op_fwd = self.op == Op.FORWARD
        op_loss = self.op == Op.LOSS
        op_bwd = self.op == Op.BACKWARD
        op_sgd = self.op == Op.SGD
        masked_now = (self.zero | (op_bwd & (self.code == ReluCode.ZERO))
                      | ~(op_fwd | op_loss | op_bwd | op_sgd))
        is_fwd, is_loss, is_bwd, is_sgd = (Signal(name=f"is_{n}")
                                           for n in ("fwd", "loss", "bwd", "sgd"))
        decay = Signal()            # SGD with d_w > 0: a second division
        masked = Signal()           # the result is 0 (zero, BACKWARD's code ZERO, unknown op)

        running = Signal()          # from the start cycle to done
        loading = Signal()          # the cycle after start: the first division starts
        second = Signal()           # the division in flight is the op's second
        add_pending = Signal()      # a finished division's signed quotient is in addend
        add_last = Signal()         # ... and it is the op's last
        saturate = Signal()         # SGD: res holds the exact w', to be saturated
        mag = Signal(unsigned(aw))  # |acc|, then |w_old| left-aligned
        mag_of_w = Signal()         # mag takes |w_old| (from the cycle after loading)
        y_mag = Signal(unsigned(SCALED_BITS))   # FORWARD: |y| = min(q, 127)
        addend = Signal(unsigned(rw))
        carry = Signal()
        res = Signal(signed(rw))
        code_out = Signal(2, init=ReluCode.ZERO.value)
        backerr = Signal()
        sgd_overflow = Signal()
        done = Signal()
        m.d.comb += [
            self.ready.eq(~running),
            self.done.eq(done),
            self.value.eq(res),
            self.code_out.eq(code_out),
            self.backerr.eq(backerr),
            self.sgd_overflow.eq(sgd_overflow),
        ]

        # NITRO-ReLU's slope a and -c(a); unsupported slopes act as the default (4).
        slope = Signal(unsigned(SLOPE_WIDTH))
        minus_c = Signal(signed(7))
        with m.Switch(self.inv_slope):
            for a in SLOPES:
                if a != DEFAULT_SLOPE:
                    with m.Case(a):
                        m.d.comb += [slope.eq(a), minus_c.eq(-RELU_MEAN_CORRECTION[a])]
            with m.Default():
                m.d.comb += [slope.eq(DEFAULT_SLOPE),
                             minus_c.eq(-RELU_MEAN_CORRECTION[DEFAULT_SLOPE])]

        # The dividends' magnitudes, registered (the negation is a long carry chain): |acc| from
        # the start cycle, |w_old| left-aligned once the first division has taken |acc| (for
        # SGD's decay, which divides after the gradient).  |-2**(aw-1)| = 2**(aw-1) fits aw
        # unsigned bits.
        acc_neg, w_neg = self.acc[-1], self.w_old[-1]
        source = Signal(unsigned(aw))
        m.d.comb += source.eq(Mux(mag_of_w, Cat(C(0, aw - ww), self.w_old),
                                  self.acc.as_unsigned()))
        source_neg = source[-1]
        m.d.sync += mag.eq((source ^ source_neg.replicate(aw)) + source_neg)

        # BACKWARD: the accumulator saturated to signed err_width, as a magnitude.
        high = self.acc[ew - 1:]
        acc_fits_err = (high == 0) | (high == (1 << len(high)) - 1)
        sat_mag = Signal(unsigned(ew))
        m.d.comb += sat_mag.eq(Mux(acc_fits_err, mag[:ew],
                                   Mux(acc_neg, 1 << (ew - 1), (1 << (ew - 1)) - 1)))

        # What the last division gave: |y| = min(q, 127) for the scale (registered for the
        # ReLU's division and the code); the scale's quotient is q's low aw - 8 bits.
        q = div.quotient
        scaled = Signal(unsigned(SCALED_BITS))
        m.d.comb += scaled.eq(Mux(q[SCALED_BITS:aw - SCALE_SHIFT].any(), ACT_MAX,
                                  q[:SCALED_BITS]))

        # The divider's operands for the division starting now.
        with m.If(~loading):                         # the op's second division
            with m.If(is_fwd):                       # the ReLU's negative part |min(y, 0)|
                m.d.comb += [div.dividend.eq(Cat(C(0, aw - SCALED_BITS),
                                                 Mux(acc_neg, y_mag, 0))),
                             div.n_bits.eq(SCALED_BITS), div.divisor.eq(slope)]
            with m.Else():                           # SGD: |w_old| / d_w
                m.d.comb += [div.dividend.eq(mag), div.n_bits.eq(ww),
                             div.divisor.eq(self.d_w)]
        with m.Elif(is_fwd | is_loss):               # NITRO Scaling: (|acc| >> 8) / f
            # (the divider's top aw - 8 bits of |acc|: its 8 low bits end up above q)
            m.d.comb += [div.dividend.eq(mag), div.n_bits.eq(aw - SCALE_SHIFT),
                         div.divisor.eq(self.divisor)]
        with m.Elif(is_bwd):                         # |sat| / a, or / 1 (PASS)
            m.d.comb += [div.dividend.eq(Cat(C(0, aw - ew), sat_mag)), div.n_bits.eq(ew),
                         div.divisor.eq(Mux(self.code == ReluCode.DIV, slope, 1))]
        with m.Else():                               # SGD: |g| / d_g
            m.d.comb += [div.dividend.eq(mag), div.n_bits.eq(aw), div.divisor.eq(self.d_g)]

        # The division that just finished and the signed quotient it adds to res.
        scale_done = (is_fwd | is_loss) & ~second
        grad_done = is_sgd & ~second
        last = ~(is_fwd | (is_sgd & decay)) | second
        magnitude = Signal(unsigned(yw))
        negate = Signal()
        with m.If(scale_done):                       # FORWARD: + max(y, 0); LOSS: + y
            m.d.comb += [magnitude.eq(Mux(is_fwd & acc_neg, 0, scaled)), negate.eq(acc_neg)]
        with m.Elif(is_fwd):                         # - floor(|y-| / a)
            m.d.comb += [magnitude.eq(q), negate.eq(1)]
        with m.Elif(grad_done):                      # - tdiv(g, d_g), clipped (module doc)
            m.d.comb += [magnitude.eq(Mux(q[ww + 1:].any(), 2 ** (ww + 1) - 1, q)),
                         negate.eq(~acc_neg)]
        with m.Elif(is_sgd):                         # - tdiv(w, d_w)
            m.d.comb += [magnitude.eq(q), negate.eq(~w_neg)]
        with m.Else():                               # BACKWARD: sign(acc) * floor(|sat| / a)
            m.d.comb += [magnitude.eq(q), negate.eq(acc_neg)]

        # The next cycle adds it: res + (negate ? -magnitude : magnitude) with one adder,
        # (2 res + 1) + (2 (magnitude ^ n) + n) carrying n into bit 1.
        total = Signal(unsigned(rw + 1))
        m.d.comb += total.eq(Cat(C(1, 1), res) + Cat(carry, addend))
        # SGD's w' saturated to signed wgt_width, in a cycle of its own after the last sum
        # (the other ops' results fit; an SGD intermediate is exact, module doc).
        res_high = res[ww - 1:]
        w_fits = (res_high == 0) | (res_high == (1 << len(res_high)) - 1)
        w_bound = Mux(res[-1], -2 ** (ww - 1), 2 ** (ww - 1) - 1)

        m.d.sync += [done.eq(0), loading.eq(0), add_pending.eq(0), saturate.eq(0)]
        with m.If(~running):
            with m.If(self.start):
                m.d.sync += [
                    running.eq(1),
                    loading.eq(1),
                    second.eq(0),
                    # an unknown op runs as a masked SGD without decay
                    is_fwd.eq(op_fwd), is_loss.eq(op_loss), is_bwd.eq(op_bwd),
                    is_sgd.eq(~(op_fwd | op_loss | op_bwd)), decay.eq(op_sgd & (self.d_w != 0)),
                    masked.eq(masked_now),
                    code_out.eq(ReluCode.ZERO),
                    backerr.eq(op_bwd & ~self.zero & ~acc_fits_err),
                    sgd_overflow.eq(0),
                ]
                with m.If(masked_now):
                    m.d.sync += res.eq(0)
                with m.Elif(op_fwd):
                    m.d.sync += res.eq(minus_c)
                with m.Elif(op_loss):
                    m.d.sync += res.eq(Mux(self.target, -ONE_HOT_VALUE, 0))
                with m.Elif(op_sgd):
                    m.d.sync += res.eq(self.w_old)
                with m.Else():
                    m.d.sync += res.eq(0)
        with m.Else():
            with m.If(loading):
                m.d.comb += div.start.eq(1)
                m.d.sync += mag_of_w.eq(1)
            with m.If(div.done):
                m.d.sync += [addend.eq(magnitude ^ negate.replicate(rw)), carry.eq(negate),
                             add_pending.eq(1), add_last.eq(last), y_mag.eq(scaled)]
                with m.If(~last & is_sgd):          # the decay's division, from mag = |w|
                    m.d.comb += div.start.eq(1)
                    m.d.sync += second.eq(1)
            with m.If(add_pending & ~add_last & is_fwd):
                m.d.comb += div.start.eq(1)         # the ReLU's division, from y_mag
                m.d.sync += second.eq(1)
                with m.If(~masked):                 # relu_codes(y)
                    with m.If(~acc_neg & (y_mag == ACT_MAX)):
                        m.d.sync += code_out.eq(ReluCode.ZERO)
                    with m.Elif(acc_neg & (y_mag != 0)):
                        m.d.sync += code_out.eq(ReluCode.DIV)
                    with m.Else():
                        m.d.sync += code_out.eq(ReluCode.PASS)
            with m.If(add_pending):
                with m.If(~masked):
                    m.d.sync += res.eq(total[1:])
                with m.If(add_last & is_sgd):
                    m.d.sync += saturate.eq(1)
                with m.Elif(add_last):
                    m.d.sync += [running.eq(0), mag_of_w.eq(0), done.eq(1)]
            with m.If(saturate):
                with m.If(~w_fits):
                    m.d.sync += [res.eq(w_bound), sgd_overflow.eq(1)]
                m.d.sync += [running.eq(0), mag_of_w.eq(0), done.eq(1)]
        return m
