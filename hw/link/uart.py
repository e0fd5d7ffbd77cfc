"""8N1 UART receiver and transmitter with stream interfaces (the board's USB serial port).

Line format: idle high; a start bit (0), eight data bits least significant
first, one stop bit (1); no parity.  Both units take ``divisor`` = clock
frequency / baud rate, rounded to the nearest integer (:func:`uart_timing` chooses it and
checks it): every bit lasts ``divisor`` clock cycles.

**Sampling and its margin** (:func:`uart_timing`).  The receiver sees the line through a
two-flip-flop synchroniser, so it notices a start edge 2 to 3 cycles after it happened, and
samples bit ``i`` (0 the start bit, 9 the stop bit) ``h + 1 + i * divisor`` cycles after
noticing it, ``h = (divisor - 1) // 2``: counted from the edge on the pin, at a time in
``(h + 1 + i*divisor, h + 2 + i*divisor]``.  A sender whose bit lasts ``T`` cycles is
read right while every sample lies inside its bit; the stop bit binds:
``(h + 2 + 9*divisor) / 10 < T < (h + 1 + 9*divisor) / 9``.  At 30 MHz and 3 Mbaud
(divisor 10) that is 9.6 < T < 10.56: a host may be 4.0 % fast or 5.6 % slow.  The
transmitter's bits last ``divisor`` cycles exactly, so the host's receiver sees the
divisor's rounding error (e.g. -1.0 % at 100 MHz and 3 Mbaud, divisor 33).  A board build
refuses a baud rate whose rounding error exceeds :data:`MAX_BAUD_ERROR` or whose receiver
margin, either way, is below :data:`MIN_RX_MARGIN` (both 2 %).

* :class:`UartRx`: the synchroniser, a start bit detected on the falling edge and confirmed
  at its middle (a glitch shorter than half a bit is ignored), data bits sampled as above,
  and the stop bit checked: a byte whose stop bit reads 0 is dropped and ``framing_error``
  pulses; the receiver then waits for the line to go high again (a break does not produce a
  stream of bytes).  Bytes leave on the ``o`` stream, through a FIFO of ``fifo_depth``
  bytes (flip-flops, shifted towards its head: no block RAM, no read multiplexer) or, with
  ``fifo_depth=0``, from a single output register; a byte that completes while there is no
  room is dropped and ``overrun`` pulses.  The FIFO holds what arrives while the host link
  commits a WRITE and sends its ACK, so a host can send WRITE frames back to back
  (:func:`rx_fifo_depth`).
* :class:`UartTx`: takes a byte from the ``i`` stream into a holding register
  whenever that is empty (``ready`` is a flip-flop), and shifts it out from there;
  back-to-back bytes leave with no gap (a byte every ``10 * divisor`` cycles).  ``tx``
  is registered and high at reset.  The holding register keeps the sender's logic
  (the host link's response multiplexer) off the shifter's enables: on a board the
  transmitter sits by its pin, the link wherever the placer puts it.

The receiver resynchronises on every start bit, so it accepts a sender that is
slightly faster or slower; it looks for the next falling edge from the middle of
the stop bit on.
"""

from __future__ import annotations

import dataclasses

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UartRx", "UartTx", "baud_divisor", "uart_timing", "UartTiming", "rx_fifo_depth",
           "MIN_DIVISOR", "MAX_BAUD_ERROR", "MIN_RX_MARGIN"]

#: Smallest divisor: the receiver needs a middle of the bit that differs from its edges.
MIN_DIVISOR = 4
#: The largest rounding error of the divisor a build accepts: the transmitter's bits are off
#: by as much, and the host's receiver must take them.
MAX_BAUD_ERROR = 0.02
#: The smallest receiver margin a build accepts: how far, either way, the host's bit time may
#: be from the nominal ``clock / baud`` (its own rounding, its clock, the line's jitter).
MIN_RX_MARGIN = 0.02


@dataclasses.dataclass(frozen=True)
class UartTiming:
    """A baud rate at a clock: the divisor and its margins (:func:`uart_timing`)."""
    clk_hz: float
    baud: float
    divisor: int
    #: the board's bit time against the nominal ``clk_hz / baud``: ``divisor / nominal - 1``
    error: float
    #: the shortest and longest bit time of the host (cycles) the receiver reads right
    #: (exclusive bounds)
    fastest_bit: float
    slowest_bit: float

    @property
    def nominal_bit(self) -> float:
        """The host's bit time at ``baud`` (cycles)."""
        return self.clk_hz / self.baud

    @property
    def margin_fast(self) -> float:
        """How much faster than ``baud`` the host may send (a fraction)."""
        return 1 - self.fastest_bit / self.nominal_bit

    @property
    def margin_slow(self) -> float:
        """How much slower than ``baud`` the host may send (a fraction)."""
        return self.slowest_bit / self.nominal_bit - 1

    @property
    def problems(self) -> list[str]:
        """What makes this baud rate unsafe (empty if it is safe)."""
        out = []
        where = f"{self.baud:g} baud at {self.clk_hz / 1e6:g} MHz (divisor {self.divisor})"
        if self.divisor < MIN_DIVISOR:
            return [f"{where}: the divisor is below {MIN_DIVISOR}"]
        if abs(self.error) > MAX_BAUD_ERROR:
            out.append(f"{where}: the board's bit time is {self.error:+.2%} off the host's "
                       f"(more than {MAX_BAUD_ERROR:.0%})")
        if min(self.margin_fast, self.margin_slow) < MIN_RX_MARGIN:
            out.append(f"{where}: the receiver reads a host bit of {self.fastest_bit:.3f} to "
                       f"{self.slowest_bit:.3f} cycles, {self.nominal_bit:.3f} nominal: a "
                       f"margin of {self.margin_fast:.2%} fast / {self.margin_slow:.2%} slow, "
                       f"less than {MIN_RX_MARGIN:.0%}")
        return out

    def check(self) -> "UartTiming":
        """Raise ValueError naming the numbers if the rate is unsafe; else return self."""
        if self.problems:
            raise ValueError("unsafe UART baud rate: " + "; ".join(self.problems))
        return self

    def as_dict(self) -> dict:
        return {"baud": self.baud, "divisor": self.divisor,
                "baud_error_pct": round(100 * self.error, 3),
                "rx_margin_fast_pct": round(100 * self.margin_fast, 2),
                "rx_margin_slow_pct": round(100 * self.margin_slow, 2)}


def uart_timing(clk_hz: float, baud: float, divisor: int | None = None) -> UartTiming:
    """The divisor for ``baud`` at ``clk_hz`` (rounded to nearest, or ``divisor``) and its
    margins, by the receiver's sampling points (module docstring)."""
    nominal = clk_hz / baud
    d = int(divisor) if divisor is not None else max(1, round(nominal))
    h = (d - 1) // 2
    return UartTiming(clk_hz=float(clk_hz), baud=float(baud), divisor=d,
                      error=d / nominal - 1,
                      fastest_bit=(h + 2 + 9 * d) / 10, slowest_bit=(h + 1 + 9 * d) / 9)


def baud_divisor(clk_hz: float, baud: float) -> int:
    """Clock cycles per bit, rounded to nearest; raises ValueError (with the numbers) if the
    rate is unsafe (:meth:`UartTiming.check`)."""
    return uart_timing(clk_hz, baud).check().divisor


def rx_fifo_depth(divisor: int, max_burst: int) -> int:
    """The receiver FIFO that lets a host send WRITE frames of up to ``max_burst`` words back
    to back at ``divisor`` cycles a bit: the bytes that arrive while the host link is not
    taking any -- its checks (2 cycles), the commit (2 cycles a word) and the ACK (7 bytes,
    of which the transmitter takes the first two at once and one a byte time after) -- plus
    the byte being received and one spare."""
    byte = 10 * divisor
    blocked = 2 + 2 * max_burst + 5 * byte + 4
    return -(-blocked // byte) + 2


def _check_divisor(divisor: int) -> int:
    divisor = int(divisor)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be >= {MIN_DIVISOR}, got {divisor}")
    return divisor


class UartRx(wiring.Component):
    """8N1 receiver.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4).
    fifo_depth : int
        Bytes held for the consumer (0: one output register, as a FIFO of 1).

    Ports
    -----
    rx : In(1, init=1)                 the serial line (asynchronous; idle high)
    o : Out(stream.Signature(8))       received bytes; ``valid`` holds until ``ready``
    framing_error : Out(1)             one-cycle pulse: a byte's stop bit was 0 (byte dropped)
    overrun : Out(1)                   one-cycle pulse: a byte arrived with no room (dropped)

    Latency: a byte is valid on ``o`` about 2 cycles (the synchroniser) plus half
    a bit after the start of its stop bit (one cycle more through an empty FIFO).
    """

    def __init__(self, divisor: int, fifo_depth: int = 0):
        self.divisor = _check_divisor(divisor)
        if fifo_depth < 0:
            raise ValueError(f"fifo_depth must be >= 0, got {fifo_depth}")
        self.fifo_depth = int(fifo_depth)
        super().__init__({
            "rx": In(1, init=1),
            "o": Out(stream.Signature(8)),
            "framing_error": Out(1),
            "overrun": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        div = self.divisor
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)

        timer = Signal(range(div))          # cycles left until the next sample point
        bit = Signal(range(8))
        shift = Signal(8)

        m.d.sync += [self.framing_error.eq(0), self.overrun.eq(0)]
        got = Signal()                      # a byte with a good stop bit is in ``shift``
        room = self._output(m, shift, got)

        with m.FSM(name="rx"):
            with m.State("IDLE"):
                with m.If(~line):
                    # The falling edge was seen now; the middle of the start bit
                    # is (div - 1) // 2 cycles on.
                    m.d.sync += timer.eq((div - 1) // 2)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):
                    m.next = "IDLE"                          # a glitch, not a start bit
                with m.Else():
                    m.d.sync += [timer.eq(div - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shift.eq(Cat(shift[1:], line)), timer.eq(div - 1),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):
                    m.d.comb += got.eq(1)
                    with m.If(~room):
                        m.d.sync += self.overrun.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += self.framing_error.eq(1)
                    m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m

    def _output(self, m, data, got):
        """The ``o`` stream: takes ``data`` when ``got`` is high and there is room (the
        returned signal); a single register (``fifo_depth`` 0) or a FIFO of flip-flops whose
        head is ``o.payload``: a pop shifts every entry one place towards the head, so the
        head needs no read multiplexer and each entry loads from its neighbour or ``data``."""
        o = self.o
        room = Signal()
        if self.fifo_depth == 0:
            m.d.comb += room.eq(~o.valid | o.ready)
            with m.If(o.ready):
                m.d.sync += o.valid.eq(0)
            with m.If(got & room):
                m.d.sync += [o.payload.eq(data), o.valid.eq(1)]
            return room
        depth = self.fifo_depth
        entries = [Signal(8, name=f"fifo_{i}", reset_less=True) for i in range(depth)]
        count = Signal(range(depth + 1))
        full = Signal()                     # registered ``count == depth``
        pop = Signal()
        push = Signal()
        m.d.comb += [o.payload.eq(entries[0]), pop.eq(o.valid & o.ready),
                     room.eq(~full | pop), push.eq(got & room)]
        # where the new byte goes: after the last entry, one place nearer the head if popping
        slot = Signal(range(depth + 1))
        m.d.comb += slot.eq(count - pop)
        for i, entry in enumerate(entries):
            nxt = entries[i + 1] if i + 1 < depth else entry
            with m.If(push & (slot == i)):
                m.d.sync += entry.eq(data)
            with m.Elif(pop):
                m.d.sync += entry.eq(nxt)
        new_count = count + push - pop
        m.d.sync += [count.eq(new_count), o.valid.eq(new_count != 0),
                     full.eq(new_count == depth)]
        return room


class UartTx(wiring.Component):
    """8N1 transmitter.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4).

    Ports
    -----
    i : In(stream.Signature(8))    bytes to send; ``ready`` (a flip-flop) is high while
                                   the holding register is empty
    tx : Out(1, init=1)            the serial line (registered, idle high)
    busy : Out(1)                  a byte is being shifted out
    """

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(divisor)
        super().__init__({
            "i": In(stream.Signature(8)),
            "tx": Out(1, init=1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        div = self.divisor
        timer = Signal(range(div))          # cycles left in the current bit
        at_end = Signal()                   # registered ``timer == 0``: the bit's last cycle
        frame = Signal(9)                   # the bits still to send after the current one
        left = Signal(range(10))            # bits still to send after the current one
        in_stop = Signal()                  # registered ``left == 0``: the current bit is the stop bit

        # The zero tests are registered one cycle ahead (``at_end`` is set when the
        # counter steps from 1 to 0, ``in_stop`` when ``left`` steps from 1 to 0), so
        # ``ready`` and the next-state choice depend on flip-flops only, not on the
        # timer's compare and decrement: the bit timing is unchanged (``divisor``
        # cycles per bit, a new byte in the last cycle of a stop bit).
        # The holding register: a byte taken from the stream waits there until it starts.
        held = Signal()
        hold = Signal(8, reset_less=True)
        start = Signal()
        m.d.comb += self.i.ready.eq(~held)
        with m.If(self.i.valid & ~held):
            m.d.sync += [hold.eq(self.i.payload), held.eq(1)]
        with m.If(start):
            m.d.sync += held.eq(0)
        # Idle, or in the last cycle of a stop bit: the held byte can start.
        m.d.comb += start.eq(held & (~self.busy | (at_end & in_stop)))
        with m.If(start):
            m.d.sync += [self.tx.eq(0),                               # start bit
                         frame.eq(Cat(hold, 1)),                      # data, then stop
                         left.eq(9), in_stop.eq(0),
                         timer.eq(div - 1), at_end.eq(0), self.busy.eq(1)]
        with m.Elif(~self.busy):
            pass
        with m.Elif(~at_end):
            m.d.sync += [timer.eq(timer - 1), at_end.eq(timer == 1)]
        with m.Elif(~in_stop):
            m.d.sync += [self.tx.eq(frame[0]), frame.eq(frame >> 1),
                         left.eq(left - 1), in_stop.eq(left == 1),
                         timer.eq(div - 1), at_end.eq(0)]
        with m.Else():
            m.d.sync += [self.tx.eq(1), self.busy.eq(0)]
        return m
