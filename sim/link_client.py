"""The board link's byte protocol against a Verilator-simulated design, UART bits included.

:class:`SimUartTransport` is a byte transport (``write(bytes)``, ``read(n) -> bytes``; a short
read is a timeout) for :class:`nitrod.link.LinkClient`, so the host side the boards use runs
unchanged against the simulator::

    from hw.link.linked import LinkedCore
    from hw.trainers.trainer import Trainer
    from nitrod.backends import AcceleratorBackend, LinkBus
    from nitrod.link import LinkClient
    from sim.link_client import SimUartTransport

    design = lambda: LinkedCore(Trainer(geometry), clocks_per_bit=4, timeout=400, max_burst=64)
    with SimUartTransport.start(design, "linked_trainer", clocks_per_bit=4,
                                link_timeout=400) as transport:
        backend = AcceleratorBackend(LinkBus(LinkClient(transport)), spec, batch=8)
        backend.train_step(x, target, lr_inv)

The design is any component with a serial line pair ``rx: In(1)`` (idle high) and
``tx: Out(1)``, e.g. :class:`hw.link.linked.LinkedCore`.  :meth:`SimUartTransport.start`
wraps it in :func:`line_harness`, a simulation-only top with a *waveform player* on ``rx`` and
a *waveform recorder* on ``tx``: W-bit shift registers (``window`` bits) that play W cycles of
line levels computed in Python and record the last W cycles of the ``tx`` line.  The server
(:mod:`sim.link_server`, a cocotb module run in the simulator as a child process, over a Unix
socket like :mod:`sim.bus_client`) therefore wakes once per W cycles whatever the baud rate,
while every bit on both lines is still produced and decoded in Python, cycle exact: the
``rx`` line carries 8N1 frames of ``clocks_per_bit`` cycles per bit, and ``tx`` is decoded by
sampling each bit in its middle (start and stop bits checked; a bad one is counted in
:meth:`SimUartTransport.stats` as ``line_errors``).

Simulated time advances only inside requests: while bytes are sent, while :meth:`read`
waits for bytes (at most ``read_timeout`` cycles without a new byte, then the read is short),
and in :meth:`idle` (``nitrod.backends.LinkBus.wait_reg`` calls it between polls instead of
sleeping).  While the line is quiet the server runs the clock freely until ``tx`` falls.

This module does not import cocotb; Amaranth and the harness are imported in :meth:`start`.
"""

from __future__ import annotations

import struct
from typing import Iterable, Mapping

from sim.bus_client import SimBus

__all__ = ["SimUartTransport", "line_harness", "OP_SEND", "OP_RECV", "OP_IDLE", "OP_STATS",
           "SEND_REQ", "RECV_REQ", "STATS_REP"]

# Wire format: sim/bus_client.py's framing (HEADER, STATUS_*, OP_QUIT = 0x05 and SimBus.close),
# with these requests (all integers little-endian):
#
#   OP_SEND   bytes to play on rx, back to back               -> empty (when the last stop bit ended)
#   OP_RECV   WANT u32, IDLE_LIMIT u64                         -> every byte decoded so far
#             (runs until WANT bytes are buffered or IDLE_LIMIT cycles pass without a new byte)
#   OP_IDLE   CYCLES u64 (rx idle, tx still decoded)           -> empty
#   OP_STATS  empty                                            -> STATS_REP
OP_SEND = 0x11
OP_RECV = 0x12
OP_IDLE = 0x13
OP_STATS = 0x14
SEND_REQ = struct.Struct("<I")
RECV_REQ = struct.Struct("<IQ")
IDLE_REQ = struct.Struct("<Q")
STATS_REP = struct.Struct("<QQQIQ")   # cycle, bytes sent, bytes received, line errors, wakeups


def line_harness(design, window: int):
    """A simulation top around ``design`` (ports ``rx``, ``tx``): waveform player and recorder.

    Ports: ``line_play: In(window)`` and ``line_seq: In(1)`` -- when ``line_seq`` toggles, the
    player loads ``line_play`` and puts bit 0 on ``rx`` for the next cycle, bit 1 the cycle
    after and so on, then 1 (idle) once the pattern has played; ``line_rec: Out(window)`` --
    the ``tx`` level at the last ``window`` rising edges of the clock (bit ``window-1`` the
    newest); ``tx`` and ``rx`` mirror the lines; ``busy`` mirrors the design's if it has one.
    """
    from amaranth.hdl import C, Cat, Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class LineHarness(wiring.Component):
        def __init__(self):
            self.design = design() if callable(design) and not isinstance(design, wiring.Component) \
                else design
            super().__init__({"line_play": In(window), "line_seq": In(1),
                              "line_rec": Out(window), "rx": Out(1), "tx": Out(1), "busy": Out(1)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.dut = dut = self.design
            player = Signal(window, init=(1 << window) - 1)
            seq = Signal()
            m.d.sync += seq.eq(self.line_seq)
            with m.If(seq != self.line_seq):
                m.d.sync += player.eq(self.line_play)
            with m.Else():
                m.d.sync += player.eq(Cat(player[1:], C(1, 1)))
            m.d.sync += self.line_rec.eq(Cat(self.line_rec[1:], dut.tx))
            busy = dut.busy if "busy" in dut.signature.members else C(0, 1)
            m.d.comb += [dut.rx.eq(player[0]), self.rx.eq(player[0]), self.tx.eq(dut.tx),
                         self.busy.eq(busy)]
            return m

    return LineHarness()


class SimUartTransport:
    """Byte transport over the simulated serial lines (create it with :meth:`start`).

    ``read_timeout``: cycles without a new byte after which :meth:`read` returns short;
    choose it above the design's inter-byte timeout plus a response's first byte time, so a
    truncated frame's ERR_TIMEOUT answer is still read.  Not thread-safe.
    """

    def __init__(self, channel: SimBus, *, clocks_per_bit: int, read_timeout: int):
        self._chan = channel
        self.clocks_per_bit = clocks_per_bit
        self.read_timeout = int(read_timeout)
        self._buf = bytearray()
        #: The harness's :class:`sim.harness.CocotbRun`, once closed.
        self.run = None

    @classmethod
    def start(cls, design, toplevel: str, *, clocks_per_bit: int, link_timeout: int,
              read_timeout: int | None = None, window: int = 1024,
              build_args: Iterable[str] = (), waves: bool = False,
              extra_env: Mapping[str, str] | None = None, start_timeout: float = 600.0,
              io_timeout: float | None = None, seed: int | None = None) -> "SimUartTransport":
        """Build (cached) and start ``design`` inside :func:`line_harness` under the link server.

        ``design``: a component or a zero-argument callable returning one, with ``rx``/``tx``
        serial ports of ``clocks_per_bit`` cycles per bit.  ``link_timeout``: the design's
        inter-byte timeout (cycles), used for the default ``read_timeout``.  ``window``: bits
        of the player and the recorder (cycles per server wakeup).  The rest as
        :meth:`sim.bus_client.SimBus.start`.
        """
        if clocks_per_bit < 4:
            raise ValueError("clocks_per_bit must be >= 4")
        byte_cycles = 10 * clocks_per_bit
        if read_timeout is None:
            read_timeout = 2 * link_timeout + 64 * byte_cycles
        # The simulator's start, the request/reply channel, QUIT and the failure reports are
        # SimBus's; only the server differs.
        channel = SimBus.start(line_harness(design, window), toplevel, build_args=build_args,
                               waves=waves, extra_env=extra_env, start_timeout=start_timeout,
                               io_timeout=io_timeout, seed=seed, server_module="sim.link_server",
                               testcase="serve_link",
                               params={"clocks_per_bit": clocks_per_bit, "window": window})
        return cls(channel, clocks_per_bit=clocks_per_bit, read_timeout=read_timeout)

    # ------------------------------------------------------------------ Transport

    def write(self, data: bytes) -> int:
        """Send ``data`` on the ``rx`` line, back to back; returns when the last bit is out."""
        data = bytes(data)
        if data:
            self._chan._request(OP_SEND, data)
        return len(data)

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes from the ``tx`` line; fewer after ``read_timeout`` quiet cycles."""
        if n <= 0:
            return b""
        if len(self._buf) < n:
            reply = self._chan._request(OP_RECV, RECV_REQ.pack(n - len(self._buf),
                                                               self.read_timeout))
            self._buf.extend(reply)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def flush(self) -> None:
        pass

    def reset_input_buffer(self) -> None:
        """Drop the bytes received but not read (pyserial's name)."""
        self._buf.clear()

    # ------------------------------------------------------------------ simulation

    def idle(self, cycles: int) -> None:
        """Let ``cycles`` clock cycles pass with the ``rx`` line idle (bytes on ``tx`` are kept)."""
        if cycles > 0:
            self._chan._request(OP_IDLE, IDLE_REQ.pack(int(cycles)))

    def stats(self) -> dict:
        """``cycle`` (since reset), ``bytes_sent``, ``bytes_received``, ``line_errors`` (bad
        start or stop bits on ``tx``), ``wakeups`` (server wakeups in the simulator)."""
        cycle, sent, received, errors, wakeups = STATS_REP.unpack(self._chan._request(OP_STATS, b""))
        return {"cycle": cycle, "bytes_sent": sent, "bytes_received": received,
                "line_errors": errors, "wakeups": wakeups}

    def cycle(self) -> int:
        return self.stats()["cycle"]

    def close(self, timeout: float = 60.0) -> None:
        """QUIT, wait for the simulator; raise :class:`sim.bus_client.SimBusError` if it failed."""
        try:
            self._chan.close(timeout)
        finally:
            self.run = self._chan.run

    def __enter__(self) -> "SimUartTransport":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            try:
                self.close()
            except Exception:
                pass
