"""Bus server: a cocotb test module that lets a host process drive a design's host bus.

Since the native server (sim/native.py, sim/native/bus_server.cpp: the same protocol in C++,
compiled with the Verilated model) became SimBus's default, this one serves
``SimBus.start(..., server="cocotb")`` (``$NITROD_SIM_SERVER=cocotb``): the reference the
native server is checked against reply by reply (tests/test_native_server.py), and the
fallback.  A change to the protocol or its timing below must be made in both.

Started by :class:`sim.bus_client.SimBus` (through :func:`sim.harness.run_cocotb`) against
a design with a host bus port (``hw.link.host_link.BusSignature``: ports ``bus__addr``,
``bus__w_data``, ``bus__w_en``, ``bus__r_en``, ``bus__r_data``, plus ``clk`` and ``rst``).
It starts the clock, resets the design, connects to the Unix-domain socket named by
``$NITROD_BUS_SOCKET`` and serves requests until QUIT or until the host closes the
socket.  The simulation does not advance while the server waits for a request: simulated
time only passes inside a request, so a host that thinks between requests costs no cycles.

Timing
------
Every request starts and ends right after a falling edge of ``clk`` (inputs are driven
there and sampled at the next rising edge, as in the other benches).  ``L`` below is the
bus's read latency (``hw.link.host_link.BusSignature.read_latency``), the ``read_latency``
entry of the harness params (:func:`sim.tb.params`; ``SimBus.start(..., read_latency=L)``),
1 if absent.

* WRITE of N words: ``w_en`` high for N consecutive cycles, ``addr`` = ADDR, ADDR+1, ...
  (N cycles; one clock edge awaited per word).
* READ of N words: ``r_en`` high for N consecutive cycles, ``addr`` = ADDR, ADDR+1, ...,
  then low; the word of each read is sampled on ``r_data`` at the falling edge L cycles
  after the cycle of its ``r_en`` (pipelined; L = 1: the falling edge of the next cycle).
  The request ends at the falling edge where the last word is sampled, where the next
  request starts driving: the cycle counter advances by N + L - 1 (N for L = 1).
* WAIT_REG: one read (L cycles), then, while ``(word & MASK) != VALUE`` and fewer than
  MAX_CYCLES cycles have passed, POLL idle cycles and another read.  The idle stretch is
  one simulator ``Timer`` (no Python per cycle).  The answer gives the cycles from the
  start of the request to the cycle the matching word was sampled.
* CYCLE: the number of clock cycles since the end of reset (the falling edge after
  ``rst`` fell is cycle 0).

Framing (all integers little-endian)
------------------------------------
Request::

    OP u8 | 3 bytes zero | LEN u32 | LEN bytes of payload

====  ========  ===========================================================  =============
OP    name      request payload                                              reply payload
====  ========  ===========================================================  =============
0x01  WRITE     ADDR u32, then N words u32 (N = (LEN - 4) / 4, N >= 0)       empty
0x02  READ      ADDR u32, COUNT u32                                          COUNT words u32
0x03  WAIT_REG  ADDR u32, MASK u32, VALUE u32, POLL u32, MAX_CYCLES u64      CYCLES u64,
                                                                             WORD u32,
                                                                             MATCHED u32
0x04  CYCLE     empty                                                        CYCLE u64
0x05  QUIT      empty                                                        empty
====  ========  ===========================================================  =============

Reply::

    STATUS u8 | 3 bytes zero | LEN u32 | LEN bytes of payload

STATUS 0 is OK; STATUS 1 is an error, its payload a UTF-8 message (a malformed request:
unknown OP, wrong length, address beyond the bus).  The server goes on serving after an
error reply.  Every request gets exactly one reply; after QUIT's reply the server closes
the socket and the cocotb test ends (passing).  End of file on the socket ends it too.

Waveforms: start the simulation with ``waves=True`` (the whole session is recorded);
switching the dump on and off at run time is not supported.
"""

from __future__ import annotations

import os
import socket
import struct

import cocotb
import cocotb.handle
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, Timer

from sim import tb

# The wire format's constants live in the cocotb-free host module.
from sim.bus_client import (
    HEADER, OP_CYCLE, OP_QUIT, OP_READ, OP_WAIT_REG, OP_WRITE, SOCKET_ENV, STATUS_ERROR,
    STATUS_OK, WAIT_REP, WAIT_REQ, WORD_MASK,
)

_DEPOSIT = 0    # cocotb.handle._GPISetAction.DEPOSIT, for the raw GPI setters


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """``n`` bytes, or None at end of file."""
    if n == 0:
        return b""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            return None
        got += k
    return bytes(buf)


class _Bus:
    """The DUT's bus ports and the clock bookkeeping (always just after a falling edge)."""

    def __init__(self, dut, read_latency: int = 1):
        if isinstance(read_latency, bool) or int(read_latency) != read_latency or read_latency < 1:
            raise ValueError(f"read_latency must be an integer >= 1, not {read_latency!r}")
        self.read_latency = int(read_latency)
        self.dut = dut
        self.clk = dut.clk
        self.addr = dut.bus__addr
        self.w_data = dut.bus__w_data
        self.w_en = dut.bus__w_en
        self.r_en = dut.bus__r_en
        self.r_data = dut.bus__r_data
        self.addr_width = len(self.addr)
        self.fe = FallingEdge(dut.clk)
        self.t0 = 0
        self.period = 0
        # Fast read of r_data: the raw GPI value (the public .value builds a LogicArray
        # from a bit string, several times slower).  Falls back to the public API.
        raw = getattr(self.r_data, "_handle", None)
        getter = getattr(raw, "get_signal_val_long", None)
        self._read_raw = getter if callable(getter) else None
        # Fast writes of addr/w_data in bursts: with COCOTB_TRUST_INERTIAL_WRITES (set by
        # SimBus) .value = x is a deposit straight into the simulator after some checks;
        # the raw GPI setter skips the checks (the server range-checks addresses itself).
        self._write_raw = None
        if getattr(cocotb.handle, "_trust_inertial", False):
            setters = [getattr(getattr(h, "_handle", None), "set_signal_val_int", None)
                       for h in (self.addr, self.w_data)]
            if all(callable(f) for f in setters):
                self._write_raw = setters

    def r_word(self) -> int:
        if self._read_raw is not None:
            return self._read_raw() & WORD_MASK
        return self.r_data.value.to_unsigned()

    async def start(self):
        await tb.start_clock_and_reset(self.dut)
        self.addr.value = 0
        self.w_data.value = 0
        self.w_en.value = 0
        self.r_en.value = 0
        t1 = get_sim_time("step")
        await self.fe
        t2 = get_sim_time("step")
        self.period = int(t2 - t1)
        self.t0 = t2
        # check the fast read against the public one
        if self._read_raw is not None and self.r_word() != self.r_data.value.to_unsigned():
            self._read_raw = None

    def cycle(self) -> int:
        return int(get_sim_time("step") - self.t0) // self.period

    def check_range(self, addr: int, count: int) -> None:
        if addr < 0 or addr + count > (1 << self.addr_width):
            raise ValueError(f"addresses 0x{addr:x}..0x{addr + count - 1:x} outside the "
                             f"{self.addr_width}-bit bus")

    async def idle(self, cycles: int) -> None:
        """Let ``cycles`` clock cycles pass without driving anything (few Python wakeups)."""
        if cycles <= 0:
            return
        if cycles == 1 or self.period < 4:
            for _ in range(cycles):
                await self.fe
            return
        # From this falling edge, land in the low phase of the last cycle, then on its
        # falling edge: two wakeups whatever the length.
        await Timer((cycles - 1) * self.period + self.period // 4, unit="step")
        await self.fe

    async def write(self, addr: int, words) -> None:
        if not words:
            return
        self.check_range(addr, len(words))
        fe = self.fe
        self.w_en.value = 1
        if self._write_raw is not None:
            set_addr, set_data = self._write_raw
            for word in words:
                set_addr(_DEPOSIT, addr)
                set_data(_DEPOSIT, word)
                addr += 1
                await fe
        else:
            addr_h, data_h = self.addr, self.w_data
            for word in words:
                addr_h.value = addr
                data_h.value = word
                addr += 1
                await fe
        self.w_en.value = 0

    async def read(self, addr: int, count: int) -> list[int]:
        if count == 0:
            return []
        self.check_range(addr, count)
        fe, r_word, latency = self.fe, self.r_word, self.read_latency
        out = []
        append = out.append
        self.r_en.value = 1
        self.addr.value = addr
        if self._write_raw is not None:
            set_addr = self._write_raw[0]
        else:
            def set_addr(_, a, handle=self.addr):
                handle.value = a
        # At the falling edge t cycles into the request the read issued in cycle t - L
        # shows its word: sample it, then drive the next cycle's read (or end r_en).
        for t in range(1, count + latency):
            await fe
            if t >= latency:
                append(r_word())
            if t < count:
                set_addr(_DEPOSIT, addr + t)
            elif t == count:
                self.r_en.value = 0
        return out


def connect_host(starter: str) -> socket.socket:
    """The connection to the host waiting on ``$NITROD_BUS_SOCKET`` (blocking on purpose:
    the simulator must not run while the host is thinking)."""
    path = os.environ.get(SOCKET_ENV)
    if not path:
        raise RuntimeError(f"${SOCKET_ENV} is not set: start the server with {starter}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.setblocking(True)
    return sock


async def serve_requests(sock: socket.socket, handle, log, on_quit=None) -> None:
    """The request loop shared by the servers: ``await handle(op, payload)`` returns the reply
    payload (a ValueError or struct.error becomes an error reply); QUIT ends the loop after
    ``on_quit()``; a closed connection ends it too."""
    while True:
        head = _recv_exact(sock, HEADER.size)
        if head is None:
            log.info("host closed the connection")
            return
        op, length = HEADER.unpack(head)
        payload = _recv_exact(sock, length)
        if payload is None:
            log.warning("host closed the connection inside a request")
            return
        if op == OP_QUIT:
            sock.sendall(HEADER.pack(STATUS_OK, 0))
            if on_quit is not None:
                on_quit()
            return
        try:
            reply = await handle(op, payload)
        except (ValueError, struct.error) as error:
            message = str(error).encode()
            sock.sendall(HEADER.pack(STATUS_ERROR, len(message)) + message)
            continue
        sock.sendall(HEADER.pack(STATUS_OK, len(reply)) + reply)


async def _handle(bus: _Bus, op: int, payload: bytes) -> bytes:
    length = len(payload)
    if op == OP_WRITE:
        if length < 4 or length % 4:
            raise ValueError(f"WRITE payload of {length} bytes")
        addr = struct.unpack_from("<I", payload)[0]
        n = (length - 4) // 4
        await bus.write(addr, struct.unpack_from(f"<{n}I", payload, 4))
        return b""
    if op == OP_READ:
        if length != 8:
            raise ValueError(f"READ payload of {length} bytes")
        addr, count = struct.unpack("<II", payload)
        words = await bus.read(addr, count)
        return struct.pack(f"<{len(words)}I", *words)
    if op == OP_WAIT_REG:
        if length != WAIT_REQ.size:
            raise ValueError(f"WAIT_REG payload of {length} bytes")
        addr, mask, value, poll, max_cycles = WAIT_REQ.unpack(payload)
        bus.check_range(addr, 1)
        start = bus.cycle()
        poll = max(poll, 1)
        while True:
            word = (await bus.read(addr, 1))[0]
            waited = bus.cycle() - start
            matched = (word & mask) == (value & mask)
            if matched or waited >= max_cycles:
                break
            await bus.idle(min(poll, max_cycles - waited))
        return WAIT_REP.pack(waited, word, int(matched))
    if op == OP_CYCLE:
        return struct.pack("<Q", bus.cycle())
    raise ValueError(f"unknown request op 0x{op:02x}")


@cocotb.test()
async def serve_bus(dut):
    bus = _Bus(dut, tb.params().get("read_latency", 1))
    await bus.start()
    sock = connect_host("sim.bus_client.SimBus")
    try:
        await serve_requests(sock, lambda op, payload: _handle(bus, op, payload), dut._log,
                             on_quit=lambda: dut._log.info("QUIT at cycle %d", bus.cycle()))
    finally:
        sock.close()
