"""Link server: a cocotb module that puts a host's bytes on a simulated serial line and back.

Started by :class:`sim.link_client.SimUartTransport` against
:func:`sim.link_client.line_harness` (ports ``line_play``, ``line_seq``, ``line_rec``, ``tx``,
``clk``, ``rst``).  It starts the clock, resets the design, connects to the Unix socket named
by ``$NITROD_BUS_SOCKET`` and serves requests (wire format: :mod:`sim.link_client`, framing
and QUIT as :mod:`sim.bus_server`) until QUIT or end of file.  Simulated time only passes
inside a request.

The line
--------
Bytes to send become line levels here, one character per clock cycle: 8N1 frames (start
bit 0, eight data bits least significant first, stop bit 1), each bit ``clocks_per_bit``
cycles, back to back.  The server loads ``window`` cycles of levels into the harness's
player at a time and sleeps for as long as they play (one ``Timer``); when it wakes it
reads the recorder (the ``tx`` level at each of the last ``window`` clock edges) and decodes
it like a receiver: a falling edge starts a byte, each bit is sampled in its middle, the
start bit must still read 0 there and the stop bit 1 (else ``line_errors`` counts it).  When
there is nothing to send and no byte is half received, the clock runs freely until ``tx``
falls or the wait ends: a quiet line costs two wakeups whatever its length.
"""

from __future__ import annotations

import cocotb
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, First, Timer

from sim import tb
from sim.bus_server import connect_host, serve_requests
from sim.link_client import (IDLE_REQ, OP_IDLE, OP_RECV, OP_SEND, OP_STATS,
                             RECV_REQ, STATS_REP)

_DEPOSIT = 0    # cocotb.handle._GPISetAction.DEPOSIT, for the raw GPI setters


class _Line:
    """The player, the recorder and the receiver's state (always just after a falling edge)."""

    def __init__(self, dut, clocks_per_bit: int, window: int):
        self.dut = dut
        self.div = div = int(clocks_per_bit)
        self.window = int(window)
        if len(dut.line_play) != self.window:
            raise ValueError(f"line_play is {len(dut.line_play)} bits, window {self.window}")
        self.fe = FallingEdge(dut.clk)
        self.tx_fall = FallingEdge(dut.tx)
        # line levels of each byte value, first cycle first
        self.wave = [("0" + "".join("1" if b >> k & 1 else "0" for k in range(8)) + "1")
                     .replace("0", "0" * div).replace("1", "1" * div) for b in range(256)]
        self.pending = ""            # levels still to play on rx
        self.seq = 0
        self.samples = ""            # tx levels not decoded yet (a byte in progress)
        self.in_break = False        # a stop bit read 0: wait for the line to go high
        self.received = bytearray()  # decoded, not yet sent to the host
        self.last_byte_cycle = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.line_errors = 0
        self.wakeups = 0
        self.t0 = 0
        self.period = 1
        self._play = getattr(getattr(dut.line_play, "_handle", None), "set_signal_val_binstr", None)
        self._seq = getattr(getattr(dut.line_seq, "_handle", None), "set_signal_val_int", None)
        self._rec = getattr(getattr(dut.line_rec, "_handle", None), "get_signal_val_binstr", None)

    async def start(self):
        self.dut.line_seq.value = 0
        self.dut.line_play.value = (1 << self.window) - 1
        await tb.start_clock_and_reset(self.dut)
        t1 = get_sim_time("step")
        await self.fe
        t2 = get_sim_time("step")
        self.period = int(t2 - t1)
        self.t0 = t2
        if self._rec is not None and self._rec() != str(self.dut.line_rec.value):
            self._rec = None

    def cycle(self) -> int:
        return int(get_sim_time("step") - self.t0) // self.period

    # -- low level ----------------------------------------------------------------------
    def _load(self, levels: str) -> None:
        """Play ``levels`` (first character first) from the next clock edge on."""
        pattern = (levels + "1" * (self.window - len(levels)))[::-1]
        self.seq ^= 1
        if self._play is not None and self._seq is not None:
            self._play(_DEPOSIT, pattern)
            self._seq(_DEPOSIT, self.seq)
        else:
            self.dut.line_play.value = int(pattern, 2)
            self.dut.line_seq.value = self.seq

    def _recorded(self, cycles: int) -> str:
        """The ``tx`` levels of the last ``cycles`` cycles (<= window), oldest first."""
        rec = self._rec() if self._rec is not None else str(self.dut.line_rec.value)
        return rec[:cycles][::-1]

    async def _cycles(self, n: int) -> None:
        if n <= 1 or self.period < 4:
            for _ in range(n):
                await self.fe
                self.wakeups += 1
            return
        await Timer((n - 1) * self.period + self.period // 4, unit="step")
        await self.fe
        self.wakeups += 2

    def _decode(self, new: str) -> None:
        buf = self.samples + new
        if self.in_break:
            j = buf.find("1")
            if j < 0:
                self.samples = ""
                return
            self.in_break = False
            buf = buf[j:]
        div = self.div
        mid = (div - 1) // 2
        span = mid + 9 * div              # start edge -> middle of the stop bit
        pos = 0
        while True:
            i = buf.find("0", pos)
            if i < 0:
                self.samples = ""
                return
            if i + span >= len(buf):
                self.samples = buf[i:]
                return
            if buf[i + mid] != "0":           # shorter than half a bit: not a start bit
                self.line_errors += 1
                pos = i + 1
                continue
            value = 0
            for k in range(8):
                if buf[i + mid + (k + 1) * div] == "1":
                    value |= 1 << k
            stop = i + span
            if buf[stop] != "1":
                self.line_errors += 1
                j = buf.find("1", stop)
                if j < 0:
                    self.in_break = True
                    self.samples = ""
                    return
                pos = j
                continue
            self.received.append(value)
            self.bytes_received += 1
            self.last_byte_cycle = self.cycle()
            pos = stop

    # -- what the requests use ----------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Something to play, or a byte half received."""
        return bool(self.pending) or bool(self.samples) or self.in_break

    async def step(self, cycles: int) -> None:
        """Play the next window of ``pending`` (if any) and run ``cycles`` cycles (at least as
        many as played, at most a window), decoding ``tx``."""
        cycles = min(cycles, self.window)
        if self.pending:
            chunk, self.pending = self.pending[:self.window], self.pending[self.window:]
            self._load(chunk)
            cycles = max(cycles, len(chunk))
        cycles = max(cycles, 1)
        await self._cycles(cycles)
        self._decode(self._recorded(cycles))

    async def quiet(self, cycles: int) -> None:
        """Nothing to play, no byte in progress: run up to ``cycles`` cycles, stopping early
        (at the next falling clock edge) if ``tx`` falls."""
        # ``tx`` low already: it fell at the last rising edge, after the recorder's sample
        # of that edge, so no edge is left to wait for: the next window records the start bit.
        if cycles <= self.window or not self.dut.tx.value:
            await self.step(cycles)
            return
        start = self.cycle()
        timer = Timer((cycles - 1) * self.period + self.period // 4, unit="step")
        fired = await First(timer, self.tx_fall)
        await self.fe
        self.wakeups += 2
        if isinstance(fired, Timer):
            return                          # the line stayed high: nothing to decode
        # tx fell in the cycle that just ended: the recorder holds its first low level
        # from the next edge on, so decode a byte time more before looking again.
        self._decode(self._recorded(min(self.cycle() - start, self.window)))
        await self.step(10 * self.div)

    async def run(self, cycles: int) -> None:
        end = self.cycle() + cycles
        while (left := end - self.cycle()) > 0:
            if self.busy:
                await self.step(left)
            else:
                await self.quiet(left)

    async def send(self, data: bytes) -> None:
        self.pending += "".join(self.wave[b] for b in data)
        self.bytes_sent += len(data)
        while self.pending:
            await self.step(self.window)

    async def recv(self, want: int, idle_limit: int) -> bytes:
        start = self.cycle()
        byte_cycles = 10 * self.div
        while len(self.received) < want:
            quiet = self.cycle() - max(start, self.last_byte_cycle)
            left = idle_limit - quiet
            if left <= 0:
                break
            if self.busy:
                need = (want - len(self.received)) * byte_cycles
                await self.step(min(left, max(need, 16)))
            else:
                await self.quiet(left)
        out = bytes(self.received)
        self.received.clear()
        return out


async def _handle(line: _Line, op: int, payload: bytes) -> bytes:
    if op == OP_SEND:
        await line.send(payload)
        return b""
    if op == OP_RECV:
        want, idle_limit = RECV_REQ.unpack(payload)
        return await line.recv(want, idle_limit)
    if op == OP_IDLE:
        (cycles,) = IDLE_REQ.unpack(payload)
        await line.run(cycles)
        return b""
    if op == OP_STATS:
        return STATS_REP.pack(line.cycle(), line.bytes_sent, line.bytes_received,
                              line.line_errors, line.wakeups)
    raise ValueError(f"unknown request op 0x{op:02x}")


@cocotb.test()
async def serve_link(dut):
    params = tb.params()
    line = _Line(dut, params["clocks_per_bit"], params["window"])
    await line.start()
    sock = connect_host("sim.link_client.SimUartTransport")

    def on_quit():
        dut._log.info("QUIT at cycle %d: %d bytes sent, %d received, %d line errors, "
                      "%d wakeups", line.cycle(), line.bytes_sent, line.bytes_received,
                      line.line_errors, line.wakeups)

    try:
        await serve_requests(sock, lambda op, payload: _handle(line, op, payload), dut._log,
                             on_quit=on_quit)
    finally:
        sock.close()
