"""The simulated serial line (sim/link_client.py's SimUartTransport with sim/link_server.py)
on a small design: a transmitter that sends a counting byte every ``PERIOD`` cycles.

The host lets time pass in every phase relative to the transmitter's bytes (IDLE of 1 to
2 x ``PERIOD`` cycles, then a read of one byte).  Every byte must be decoded, in order and
without line errors, whichever wait of the server's (a played window, a timer, a falling
edge of ``tx``) a start bit falls at the end of.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.link.uart import UartTx
from sim.link_client import SimUartTransport

CLOCKS_PER_BIT = 4
PERIOD = 64             # cycles between the starts of two bytes (a byte takes 40)
WINDOW = 16             # cycles per server wakeup: waits longer than this use a timer


class CountingTx(wiring.Component):
    """Sends 0, 1, 2, ... one byte every ``PERIOD`` cycles on ``tx`` (``rx`` unused)."""

    def __init__(self):
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart = uart = UartTx(CLOCKS_PER_BIT)
        timer = Signal(range(PERIOD))
        count = Signal(8)
        m.d.sync += timer.eq(timer + 1)
        m.d.comb += [uart.i.payload.eq(count), uart.i.valid.eq(timer == PERIOD - 1),
                     self.tx.eq(uart.tx)]
        with m.If((timer == PERIOD - 1) & uart.i.ready):
            m.d.sync += count.eq(count + 1)
        return m


def test_every_byte_is_decoded_whatever_the_phase_of_the_hosts_waits():
    transport = SimUartTransport.start(CountingTx, "counting_tx", clocks_per_bit=CLOCKS_PER_BIT,
                                       link_timeout=PERIOD, read_timeout=4 * PERIOD,
                                       window=WINDOW)
    try:
        got = bytearray()
        for wait in range(1, 2 * PERIOD + 1):
            transport.idle(wait)
            got += transport.read(1)
        stats = transport.stats()
    finally:
        transport.close()
    assert stats["line_errors"] == 0
    assert len(got) == 2 * PERIOD
    missing = sorted(set(range(len(got))) - set(got))
    assert list(got) == [k % 256 for k in range(len(got))], f"lost or misread: {missing}"
