"""A core behind the board link, without a board: serial line in, serial line out.

::

    rx --> UartRx (+ FIFO) --> HostLink --> bus (BusSignature) --> core (a trainer core)
    tx <-- UartTx <-----------/        status bit 0 <-- core.busy

:class:`LinkedCore` is platform independent (no pins, no PLL, the default ``sync`` domain
and its reset): the board top (boards/top.py) wraps it with clocking and pins, and the
simulator runs it as it is (``sim/link_client.py``: the whole link, UART bits included, in
Verilator), so the chain the simulated-UART backend exercises is the board's.  The frames are
the contract's (hw/contract/link.py); the host side is nitrod/link.py.
"""

from __future__ import annotations

from amaranth.hdl import C, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.link.host_link import HostLink
from hw.link.uart import UartRx, UartTx, rx_fifo_depth

__all__ = ["LinkedCore"]


class LinkedCore(wiring.Component):
    """UART -> HostLink -> ``core``.

    Parameters
    ----------
    core : a component with ``bus: In(BusSignature(n, read_latency))`` (a trainer core, or a
        board's stand-in) and optionally ``busy: Out(1)``; the HostLink gets the core's
        address width and read latency
    clocks_per_bit : int -- UART divisor, clock cycles per bit (>= 4)
    timeout : int -- HostLink inter-byte timeout in cycles
    max_burst : int -- HostLink's largest READ/WRITE burst (1..255)
    fifo_depth : int -- the receiver's FIFO in bytes; default :func:`hw.link.uart.rx_fifo_depth`
        (what a host sending WRITE frames back to back needs at this divisor and burst)

    Ports
    -----
    rx : In(1, init=1) -- serial line from the host (8N1, idle high)
    tx : Out(1, init=1) -- serial line to the host
    busy : Out(1) -- the core's ``busy`` (0 if it has none); PING's status word is this bit
    link_active : Out(1) -- the link is inside a frame (not looking for a sync byte)
    """

    def __init__(self, core, *, clocks_per_bit: int, timeout: int, max_burst: int = 64,
                 fifo_depth: int | None = None):
        self.core = core
        self.clocks_per_bit = int(clocks_per_bit)
        self.timeout = int(timeout)
        self.max_burst = int(max_burst)
        self.fifo_depth = (rx_fifo_depth(self.clocks_per_bit, self.max_burst)
                           if fifo_depth is None else int(fifo_depth))
        bus_signature = core.signature.members["bus"].signature
        self.addr_width = bus_signature.addr_width
        self.read_latency = bus_signature.read_latency
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1),
                          "link_active": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = urx = UartRx(self.clocks_per_bit, fifo_depth=self.fifo_depth)
        m.submodules.uart_tx = utx = UartTx(self.clocks_per_bit)
        m.submodules.link = link = HostLink(addr_width=self.addr_width, max_burst=self.max_burst,
                                            timeout=self.timeout, read_latency=self.read_latency)
        m.submodules.core = core = self.core
        wiring.connect(m, urx.o, link.rx)
        wiring.connect(m, link.tx, utx.i)
        wiring.connect(m, link.bus, core.bus)
        busy = core.busy if "busy" in core.signature.members else C(0, 1)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx), self.busy.eq(busy),
                     link.status.eq(busy), self.link_active.eq(~link.idle)]
        return m
