"""8N1 UART receiver and transmitter with stream interfaces (the board's USB serial port).

Line format: idle high; a start bit (0), eight data bits least significant
first, one stop bit (1); no parity.  Both units take ``divisor`` = clock
frequency / baud rate (rounded to the nearest integer by the caller, see
:func:`baud_divisor`): every bit lasts ``divisor`` clock cycles.  At 12 MHz
(iCEBreaker) and 115200 baud the divisor is 104 (0.16 % fast), well inside
the receiver's tolerance: mid-bit sampling of ten bits allows a total mismatch
of about +-4.5 % minus the one-cycle uncertainty of the start edge (the tests
check +-4 % at divisor 16 and +-2 % at divisor 4).

* :class:`UartRx`: a two-flip-flop synchroniser on the line, a start bit
  detected on the falling edge and confirmed at its middle (a glitch shorter
  than half a bit is ignored), data bits sampled in their middles, and the stop
  bit checked: a byte whose stop bit reads 0 is dropped and ``framing_error``
  pulses; the receiver then waits for the line to go high again (a break does
  not produce a stream of bytes).  Bytes leave on the ``o`` stream; if the
  previous byte has not been taken when a new one completes, the new one is
  dropped and ``overrun`` pulses (there is no FIFO: the host link is half
  duplex).
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

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UartRx", "UartTx", "baud_divisor", "MIN_DIVISOR"]

#: Smallest divisor: the receiver needs a middle of the bit that differs from its edges.
MIN_DIVISOR = 4


def baud_divisor(clk_hz: float, baud: float) -> int:
    """Clock cycles per bit, rounded to nearest; raises if the error exceeds 2 %."""
    divisor = round(clk_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"{clk_hz} Hz is too slow for {baud} baud (divisor {divisor} < {MIN_DIVISOR})")
    error = abs(clk_hz / divisor - baud) / baud
    if error > 0.02:
        raise ValueError(f"baud rate error {error:.1%} for divisor {divisor}")
    return divisor


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

    Ports
    -----
    rx : In(1, init=1)                 the serial line (asynchronous; idle high)
    o : Out(stream.Signature(8))       received bytes; ``valid`` holds until ``ready``
    framing_error : Out(1)             one-cycle pulse: a byte's stop bit was 0 (byte dropped)
    overrun : Out(1)                   one-cycle pulse: a byte arrived while ``o`` was full (dropped)

    Latency: a byte is valid on ``o`` about 2 cycles (the synchroniser) plus half
    a bit after the start of its stop bit.
    """

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(divisor)
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
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

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
                    with m.If(self.o.valid & ~self.o.ready):
                        m.d.sync += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += self.framing_error.eq(1)
                    m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


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
