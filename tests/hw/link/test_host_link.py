"""HostLink and UartRx/UartTx (hw/link/host_link.py, hw/link/uart.py) on Verilator.

Two benches, both with the same bus target (:class:`DemoTarget`: 256 words of
memory, a CTRL register, an ID register; read latency 1, or 2 with its read data
registered):

* :class:`ByteBench` -- the frame-level fuzz at one byte per cycle.  The
  stimulus (bytes and idle gaps) is loaded into a memory in the bench 16
  entries per cycle, a feeder pushes it into ``HostLink.rx`` and a recorder
  stores every ``HostLink.tx`` byte; cocotb only loads and unloads, so the
  design runs free.  Optional pseudo-random throttling of both streams.
* :class:`UartBench` -- the whole link with UART bits: the cocotb test
  drives the serial line bit by bit and decodes the TX line.

The cocotb tests compare every response byte with the reference model
(tests/support/benches/tb_host_link_model.py) and, at the end, the target's memory
(read back through the link) with the model of the valid WRITEs only.
"""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest
from amaranth.hdl import C, Const, Module, Mux, Signal, UnusedElaboratable
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.contract.link import CMD_READ, ERR_TIMEOUT, RSP_ERROR, SYNC
from hw.host_bus import BusSignature
from hw.link.host_link import HostLink
from hw.link.uart import UartRx, UartTx, rx_fifo_depth, uart_timing
from sim.harness import run_cocotb
from tests.support import BENCHES
from tests.support.benches import tb_host_link_model as model

TB_DIR = BENCHES
TB_BYTES = TB_DIR / "tb_host_link_bytes.py"
TB_UART = TB_DIR / "tb_host_link_uart.py"

MAX_BURST = 64
BYTE_TIMEOUT = 48           # inter-byte timeout of the byte bench (cycles)
UART_DIVISOR = 4            # clock cycles per bit in the UART bench
UART_TIMEOUT = 160          # 4 byte times

STIM_LINE_ENTRIES = 16      # 16-bit stimulus entries per memory line
STIM_LINES = 1024
RESP_LINE_BYTES = 32
RESP_LINES = 1024


class DemoTarget(wiring.Component):
    """Bus target for the benches: memory at 0x000-0x0FF, CTRL at 0x100, ID at 0x101, WCOUNT
    at 0x102 (counts the writes to it: a WRITE committed twice shows).

    Reads of anything else return 0, writes to it are ignored; ``status`` = CTRL.
    ``read_latency`` 1: ``r_data`` is valid the cycle after ``r_en`` (the memory's
    synchronous read port) and held until the next read.  ``read_latency`` 2: that word
    goes through one more register and ``r_data`` shows it only in the cycle two after
    ``r_en``; in every other cycle it shows :data:`JUNK`, so a master sampling in the
    wrong cycle reads garbage.
    """

    JUNK = 0xBAD0_C0DE

    def __init__(self, addr_width: int = model.ADDR_WIDTH, read_latency: int = 1):
        if read_latency not in (1, 2):
            raise ValueError("DemoTarget has read latency 1 or 2")
        self.read_latency = read_latency
        super().__init__({"bus": In(BusSignature(addr_width, read_latency)), "status": Out(32)})

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        r_data = Signal(32)      # the word of last cycle's read (latency 1)
        m.submodules.mem = mem = Memory(shape=32, depth=model.MEM_WORDS, init=[])
        wr = mem.write_port()
        rd = mem.read_port()
        ctrl = Signal(32)
        in_mem = bus.addr < model.MEM_WORDS
        m.d.comb += [
            wr.addr.eq(bus.addr), wr.data.eq(bus.w_data), wr.en.eq(bus.w_en & in_mem),
            rd.addr.eq(bus.addr), rd.en.eq(bus.r_en),
            self.status.eq(ctrl),
        ]
        wcount = Signal(32)
        with m.If(bus.w_en & (bus.addr == model.REG_CTRL)):
            m.d.sync += ctrl.eq(bus.w_data)
        with m.If(bus.w_en & (bus.addr == model.REG_WCOUNT)):
            m.d.sync += wcount.eq(wcount + 1)
        # 0: zero, 1: memory, 2: CTRL, 3: ID, 4: WCOUNT -- for the read of last cycle
        sel = Signal(3)
        with m.If(bus.r_en):
            m.d.sync += sel.eq(Mux(in_mem, 1, Mux(bus.addr == model.REG_CTRL, 2,
                                                   Mux(bus.addr == model.REG_ID, 3,
                                                       Mux(bus.addr == model.REG_WCOUNT, 4, 0)))))
        with m.Switch(sel):
            with m.Case(1):
                m.d.comb += r_data.eq(rd.data)
            with m.Case(2):
                m.d.comb += r_data.eq(ctrl)
            with m.Case(3):
                m.d.comb += r_data.eq(model.ID_VALUE)
            with m.Case(4):
                m.d.comb += r_data.eq(wcount)
        if self.read_latency == 1:
            m.d.comb += bus.r_data.eq(r_data)
        else:
            r_data_q = Signal(32)
            read_1 = Signal()    # r_en was high 1 cycle ago
            read_2 = Signal()    # 2 cycles ago: r_data_q holds that read's word
            m.d.sync += [r_data_q.eq(r_data), read_1.eq(bus.r_en), read_2.eq(read_1)]
            m.d.comb += bus.r_data.eq(Mux(read_2, r_data_q, Const(self.JUNK, 32)))
        return m


def _lfsr16(m: Module, name: str) -> Signal:
    reg = Signal(16, init=0xACE1, name=name)
    m.d.sync += reg.eq((reg << 1) | (reg[15] ^ reg[13] ^ reg[12] ^ reg[10]))
    return reg


class ByteBench(wiring.Component):
    """HostLink + DemoTarget with a stimulus memory in front and a response memory behind.

    Stimulus entries (16 bits): bit 15 clear -> a byte (bits 0-7) for ``link.rx``;
    bit 15 set -> stay idle for bits 0-14 cycles.  Loaded through ``stim_w_*``,
    a line of 16 entries per cycle (entry 0 in the low bits).  ``go`` (a pulse)
    starts the feeder on ``stim_len`` entries and clears the response memory's
    byte count; ``done`` rises when every entry was used and the link is idle
    again, ``resp_len`` bytes were recorded, readable 32 per line through the
    combinational ``resp_r_*`` port.  ``in_throttle`` / ``out_throttle`` drop
    ``rx.valid`` / ``tx.ready`` on about a quarter of the cycles.

    ``read_latency`` is the target's; ``link_read_latency`` (default: the same) the
    link's -- a mismatch (``wiring.connect`` does not compare the signatures) is for
    checking that the bench notices one.
    """

    def __init__(self, read_latency: int = 1, link_read_latency: int | None = None):
        self.read_latency = read_latency
        self.link_read_latency = read_latency if link_read_latency is None else link_read_latency
        lines = (STIM_LINES - 1).bit_length()
        super().__init__({
            "stim_w_en": In(1), "stim_w_addr": In(lines), "stim_w_data": In(16 * STIM_LINE_ENTRIES),
            "stim_len": In(16), "go": In(1), "in_throttle": In(1), "out_throttle": In(1),
            "done": Out(1), "resp_len": Out(16),
            "resp_r_addr": In((RESP_LINES - 1).bit_length()), "resp_r_data": Out(8 * RESP_LINE_BYTES),
            "error_count": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = HostLink(addr_width=model.ADDR_WIDTH, max_burst=MAX_BURST,
                                            timeout=BYTE_TIMEOUT,
                                            read_latency=self.link_read_latency)
        m.submodules.target = target = DemoTarget(read_latency=self.read_latency)
        wiring.connect(m, link.bus, target.bus)
        m.d.comb += [link.status.eq(target.status), self.error_count.eq(link.error_count)]

        m.submodules.stim = stim = Memory(shape=16 * STIM_LINE_ENTRIES, depth=STIM_LINES, init=[])
        sw = stim.write_port()
        sr = stim.read_port(domain="comb")
        m.d.comb += [sw.addr.eq(self.stim_w_addr), sw.data.eq(self.stim_w_data), sw.en.eq(self.stim_w_en)]

        m.submodules.resp = resp = Memory(shape=8 * RESP_LINE_BYTES, depth=RESP_LINES, init=[])
        rw = resp.write_port(granularity=8)
        rr = resp.read_port(domain="comb")
        m.d.comb += [rr.addr.eq(self.resp_r_addr), self.resp_r_data.eq(rr.data)]

        lfsr = _lfsr16(m, "throttle_lfsr")
        in_ok = ~self.in_throttle | lfsr[0] | lfsr[3]
        out_ok = ~self.out_throttle | lfsr[5] | lfsr[9]

        ptr = Signal(16)
        wait = Signal(15)
        m.d.comb += sr.addr.eq(ptr[4:])
        entry = sr.data.word_select(ptr[:4], 16)

        # Recorder.
        m.d.comb += [
            link.tx.ready.eq(out_ok),
            rw.addr.eq(self.resp_len[5:]),
            rw.data.eq(link.tx.payload.replicate(RESP_LINE_BYTES)),
            rw.en.eq(Mux(link.tx.valid & link.tx.ready, C(1, RESP_LINE_BYTES) << self.resp_len[:5], 0)),
        ]
        with m.If(link.tx.valid & link.tx.ready):
            m.d.sync += self.resp_len.eq(self.resp_len + 1)

        with m.FSM(name="feeder"):
            with m.State("IDLE"):
                with m.If(self.go):
                    m.d.sync += [ptr.eq(0), self.resp_len.eq(0), self.done.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(ptr == self.stim_len):
                    m.next = "FLUSH"
                with m.Elif(entry[15]):
                    m.d.sync += [wait.eq(entry[:15]), ptr.eq(ptr + 1)]
                    m.next = "WAIT"
                with m.Else():
                    m.d.comb += [link.rx.valid.eq(in_ok), link.rx.payload.eq(entry[:8])]
                    with m.If(link.rx.valid & link.rx.ready):
                        m.d.sync += ptr.eq(ptr + 1)
            with m.State("WAIT"):
                with m.If(wait == 0):
                    m.next = "RUN"
                with m.Else():
                    m.d.sync += wait.eq(wait - 1)
            with m.State("FLUSH"):
                with m.If(link.idle):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
        return m


class UartBench(wiring.Component):
    """UartRx (with the FIFO LinkedCore gives it) -> HostLink -> UartTx with DemoTarget: the
    board's link, serial line to bus."""

    def __init__(self, divisor: int = UART_DIVISOR, timeout: int = UART_TIMEOUT):
        self.divisor = divisor
        self.timeout = timeout
        self.fifo_depth = rx_fifo_depth(divisor, MAX_BURST)
        super().__init__({
            "rx": In(1, init=1), "tx": Out(1, init=1),
            "framing_error": Out(1), "overrun": Out(1), "error_count": Out(16), "ctrl": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = urx = UartRx(self.divisor, fifo_depth=self.fifo_depth)
        m.submodules.uart_tx = utx = UartTx(self.divisor)
        m.submodules.link = link = HostLink(addr_width=model.ADDR_WIDTH, max_burst=MAX_BURST,
                                            timeout=self.timeout)
        m.submodules.target = target = DemoTarget()
        wiring.connect(m, urx.o, link.rx)
        wiring.connect(m, link.tx, utx.i)
        wiring.connect(m, link.bus, target.bus)
        m.d.comb += [
            urx.rx.eq(self.rx), self.tx.eq(utx.tx),
            link.status.eq(target.status), self.ctrl.eq(target.status),
            self.framing_error.eq(urx.framing_error), self.overrun.eq(urx.overrun),
            self.error_count.eq(link.error_count),
        ]
        return m


# --------------------------------------------------------------------------- tests

def test_link_crc_processor_matches_the_contract():
    """The link's CRC (amaranth.lib.crc, one byte a cycle) in the Amaranth simulator equals
    the contract's CRC-16/CCITT-FALSE after every byte, and a frame with its CRC matches."""
    from amaranth.sim import Simulator

    from hw.contract.link import crc16
    from hw.link.host_link import LINK_CRC

    rng = np.random.default_rng(7)
    data = bytes(rng.integers(0, 256, 200, dtype=np.uint8).tolist())
    c = crc16(data)
    framed = data + bytes([c >> 8, c & 0xFF])
    dut = LINK_CRC.create()
    got = []

    async def bench(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for i, b in enumerate(framed):
            ctx.set(dut.valid, 1)
            ctx.set(dut.data, b)
            await ctx.tick()
            got.append((i, ctx.get(dut.crc), ctx.get(dut.match_detected)))
        ctx.set(dut.valid, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for i, value, match in got:
        assert value == crc16(framed[:i + 1])
        assert match == (i == len(framed) - 1 or value == 0)
    assert got[-1][2] == 1


def test_uart_loopback_glitch_and_overrun():
    """UartTx -> UartRx in the Amaranth simulator (odd divisor): bytes arrive intact, a
    glitch shorter than half a bit is no start bit, a byte not taken in time is an overrun."""
    from amaranth.sim import Simulator

    divisor = 5
    m = Module()
    m.submodules.tx = tx = UartTx(divisor)
    m.submodules.rx = rx = UartRx(divisor)
    glitch = Signal()
    m.d.comb += rx.rx.eq(tx.tx & ~glitch)
    data = [0x00, 0xFF, 0x55, 0xAA, 0xA5, 0x01, 0x80, 0x3C]
    got, events = [], []

    async def bench(ctx):
        for b in data:                                  # back to back, consumer always ready
            ctx.set(tx.i.valid, 1)
            ctx.set(tx.i.payload, b)
            ctx.set(rx.o.ready, 1)
            await ctx.tick().until(tx.i.ready)
        ctx.set(tx.i.valid, 0)
        for _ in range(12 * divisor):
            await ctx.tick()
        ctx.set(glitch, 1)                              # 2-cycle low pulse on an idle line
        await ctx.tick().repeat(2)
        ctx.set(glitch, 0)
        await ctx.tick().repeat(12 * divisor)
        ctx.set(rx.o.ready, 0)                          # two bytes, the first never taken
        for b in (0x11, 0x22):
            ctx.set(tx.i.valid, 1)
            ctx.set(tx.i.payload, b)
            await ctx.tick().until(tx.i.ready)
        ctx.set(tx.i.valid, 0)
        # (the transmitter holds the second byte while it sends the first)
        await ctx.tick().until(tx.i.ready & ~tx.busy)
        await ctx.tick().repeat(2 * divisor)
        events.append(("held", ctx.get(rx.o.valid), ctx.get(rx.o.payload)))

    async def monitor(ctx):
        async for clk_edge, rst, valid, ready, payload, overrun, ferr in ctx.tick().sample(
                rx.o.valid, rx.o.ready, rx.o.payload, rx.overrun, rx.framing_error):
            if valid and ready:
                got.append(payload)
            if overrun:
                events.append(("overrun",))
            if ferr:
                events.append(("framing",))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.add_process(monitor)
    sim.run_until(2e-3)
    assert got == data
    assert events == [("overrun",), ("held", 1, 0x11)]


def test_uart_rx_fifo_keeps_order_and_counts_overruns():
    """UartRx with a FIFO, fed back to back by a UartTx, read by a consumer that is ready on
    random cycles (and not at all for a while): the bytes come out in order, those that found
    the FIFO full are dropped with one ``overrun`` pulse each, nothing else is lost."""
    from amaranth.sim import Simulator

    divisor, depth = 4, 5
    m = Module()
    m.submodules.tx = tx = UartTx(divisor)
    m.submodules.rx = rx = UartRx(divisor, fifo_depth=depth)
    m.d.comb += rx.rx.eq(tx.tx)
    rng = np.random.default_rng(21)
    data = rng.integers(0, 256, 120).tolist()
    ready = (rng.random(20000) < 0.05).tolist()          # a consumer about as fast ...
    ready[1500:3000] = [False] * 1500                    # ... that stops for 37 byte times
    got, dropped = [], []

    async def bench(ctx):
        for b in data:
            ctx.set(tx.i.valid, 1)
            ctx.set(tx.i.payload, b)
            await ctx.tick().until(tx.i.ready)
        ctx.set(tx.i.valid, 0)

    async def consumer(ctx):
        for r in ready:
            ctx.set(rx.o.ready, r)
            await ctx.tick()
        ctx.set(rx.o.ready, 1)

    async def monitor(ctx):
        async for _, _, valid, rdy, payload, overrun in ctx.tick().sample(
                rx.o.valid, rx.o.ready, rx.o.payload, rx.overrun):
            if valid and rdy:
                got.append(payload)
            if overrun:
                dropped.append(1)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.add_testbench(consumer)
    sim.add_process(monitor)
    sim.run_until(30e-3)
    assert len(got) + len(dropped) == len(data) and 10 < len(dropped) < 80
    it = iter(data)                                      # a subsequence, in order
    assert all(any(g == d for d in it) for g in got)


def _uart_rx_at_rate(divisor, factor, data, phase=None):
    """Bytes (and framing errors) UartRx(divisor) gets from a sender whose bit time is
    ``factor * divisor`` cycles, bytes back to back (Amaranth simulator).  With ``phase``
    (0..1) the sender's edges fall at ``phase + k * bit`` and the line changes at the first
    clock edge after each (as a synchroniser sees an asynchronous line); else at rounded
    times."""
    import math

    from amaranth.sim import Simulator

    dut = UartRx(divisor)
    got = []

    async def sender(ctx):
        ctx.set(dut.o.ready, 1)
        await ctx.tick().repeat(3)
        t, now = (0.0 if phase is None else phase), 0
        for byte in data:
            for bit in [0] + [(byte >> k) & 1 for k in range(8)] + [1]:
                if phase is None:
                    ctx.set(dut.rx, bit)
                    t += factor * divisor
                    await ctx.tick().repeat(round(t) - now)
                    now = round(t)
                else:
                    edge = math.ceil(t)
                    await ctx.tick().repeat(edge - now)
                    now = edge
                    ctx.set(dut.rx, bit)
                    t += factor * divisor
        await ctx.tick().repeat(3 * divisor)

    async def monitor(ctx):
        async for _, _, valid, payload, ferr in ctx.tick().sample(dut.o.valid, dut.o.payload,
                                                                  dut.framing_error):
            if valid:
                got.append(payload)
            if ferr:
                got.append("framing error")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(sender)
    sim.add_process(monitor)
    sim.run()
    return got


def test_uart_rx_baud_tolerance():
    """Mid-bit sampling: +-4 % baud mismatch at divisor 16 is received intact; 10 % is not."""
    rng = np.random.default_rng(11)
    data = [0x00, 0xFF, 0x55, 0xAA] + rng.integers(0, 256, 12).tolist()
    for factor in (0.96, 1.0, 1.04):
        assert _uart_rx_at_rate(16, factor, data) == data, factor
    for factor in (0.90, 1.10):
        assert _uart_rx_at_rate(16, factor, data) != data, factor


def test_baud_divisor():
    from hw.link.uart import baud_divisor

    assert baud_divisor(12e6, 115200) == 104
    assert baud_divisor(12e6, 3_000_000) == 4
    assert baud_divisor(30e6, 3_000_000) == 10
    assert baud_divisor(100e6, 3_000_000) == 33
    with pytest.raises(ValueError, match="divisor 3"):
        baud_divisor(12e6, 4_000_000)            # divisor 3: too small
    with pytest.raises(ValueError, match=r"-2\.00% off"):
        baud_divisor(10e6, 1_400_000)            # divisor 7 for 7.14: 2.0 % (2.04 %) short


def test_uart_timing_margins_and_refusals():
    """The divisor's error and the receiver's margin, by its sampling points: the boards'
    rates pass; a rate whose rounding is too coarse or whose margin is too thin is refused
    with the numbers."""
    ice = uart_timing(30e6, 3_000_000)
    assert (ice.divisor, ice.error) == (10, 0.0) and not ice.problems
    assert (ice.fastest_bit, round(ice.slowest_bit, 3)) == (9.6, 10.556)
    assert round(ice.margin_fast, 4) == 0.04 and round(ice.margin_slow, 4) == 0.0556
    ulx = uart_timing(100e6, 3_000_000)
    assert ulx.divisor == 33 and round(ulx.error, 4) == -0.01 and not ulx.problems
    assert not uart_timing(100e6, 1_000_000).problems
    # 30 MHz at 4 Mbaud: divisor 8 (7.5 rounded), the board's bits 6.7 % long
    with pytest.raises(ValueError, match=r"divisor 8\).*\+6\.67%"):
        uart_timing(30e6, 4_000_000).check()
    # 30 MHz at 6.5 Mbaud: divisor 5 (4.6 rounded): the board's bits 8.3 % long, and the
    # host's nominal bit (4.615 cycles) outside the receiver's window (4.9 to 5.33)
    bad = uart_timing(30e6, 6_500_000)
    assert len(bad.problems) == 2 and "a margin of -6.17% fast" in bad.problems[1]
    with pytest.raises(ValueError, match="unsafe UART baud rate"):
        bad.check()
    # 12 MHz at 3.04 Mbaud: divisor 4 is only 1.3 % off, but the receiver's window starts at
    # 3.9 cycles and the host's bit is 3.947: 1.2 % of margin
    thin = uart_timing(12e6, 3_040_000)
    assert thin.divisor == 4 and len(thin.problems) == 1
    with pytest.raises(ValueError, match=r"3\.900 to 4\.222 cycles, 3\.947 nominal"):
        thin.check()


@pytest.mark.parametrize("divisor", [4, 10, 33])
def test_the_receiver_reads_exactly_the_bit_times_its_model_allows(divisor):
    """UartRx in the Amaranth simulator against senders whose bit time is just inside and just
    outside uart_timing's window (edges at several phases of the clock): inside every byte
    arrives, 0.15 cycle outside some do not."""
    timing = uart_timing(divisor * 1e6, 1e6)
    data = [0x00, 0xFF, 0x55, 0x80]
    for bit, good in ((timing.fastest_bit + 0.05, True), (timing.slowest_bit - 0.05, True),
                      (timing.fastest_bit - 0.15, False), (timing.slowest_bit + 0.15, False)):
        got = [_uart_rx_at_rate(divisor, bit / divisor, data, phase)
               for phase in (0.05, 0.5, 0.95)]
        assert all(g == data for g in got) == good, (bit, got)


def test_byte_level_fuzz():
    """>= 10,000 frames at one byte per cycle: every response as the model says, memory intact.
    Among them WRITEs sent again with the same SEQ (directly, after a corrupted copy, after a
    READ): a repetition is answered and not committed again; the target's WCOUNT register,
    which counts writes, and the memory read back at the end show it."""
    run = run_cocotb(ByteBench(), "host_link_byte_bench", TB_BYTES,
                     params={"seed": 20261126, "cases": 10000, "max_burst": MAX_BURST,
                             "gap": BYTE_TIMEOUT + 16,
                             "stim_line_entries": STIM_LINE_ENTRIES, "stim_lines": STIM_LINES,
                             "resp_line_bytes": RESP_LINE_BYTES, "resp_lines": RESP_LINES})
    out = run.outputs
    assert int(out["frames"]) >= 10_000
    assert int(out["mismatches"]) == 0
    np.testing.assert_array_equal(out["memory"], out["expected_memory"])
    kinds = dict(zip(out["kind_names"].tolist(), out["kind_counts"].tolist()))
    for kind in model.BAD_KINDS + model.VALID_KINDS:
        assert kinds.get(kind, 0) > 50, kinds
    assert int(out["repeats"]) > 200 and int(out["wcount"]) > 50


def _byte_fuzz_params(seed, cases):
    return {"seed": seed, "cases": cases, "max_burst": MAX_BURST, "gap": BYTE_TIMEOUT + 16,
            "stim_line_entries": STIM_LINE_ENTRIES, "stim_lines": STIM_LINES,
            "resp_line_bytes": RESP_LINE_BYTES, "resp_lines": RESP_LINES}


def test_bus_signature_read_latency():
    """read_latency is part of BusSignature's identity; HostLink's bus takes it."""
    assert BusSignature(16) == BusSignature(16, read_latency=1)
    assert BusSignature(16).read_latency == 1
    assert BusSignature(16, read_latency=2) == BusSignature(16, 2)
    assert BusSignature(16, read_latency=2) != BusSignature(16)
    assert BusSignature(16, read_latency=2) != BusSignature(16, read_latency=3)
    assert BusSignature(16, read_latency=2) != BusSignature(17, read_latency=2)
    assert repr(BusSignature(16)) == "BusSignature(16)"
    assert repr(BusSignature(16, 2)) == "BusSignature(16, read_latency=2)"
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            BusSignature(16, read_latency=bad)

    def components():
        link = HostLink(addr_width=model.ADDR_WIDTH, read_latency=2)
        assert link.read_latency == 2
        assert link.bus.signature == BusSignature(model.ADDR_WIDTH, 2)
        link1 = HostLink(addr_width=model.ADDR_WIDTH)
        assert link1.bus.signature == BusSignature(model.ADDR_WIDTH)
        target = DemoTarget(read_latency=2)
        assert link.bus.signature == target.bus.signature.flip()
        assert link1.bus.signature != target.bus.signature.flip()
        with pytest.raises(ValueError):
            HostLink(read_latency=0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)    # built, never elaborated
        components()
        gc.collect()


def test_byte_level_fuzz_read_latency_2():
    """HostLink(read_latency=2) against a target that registers its read data (and shows
    junk in every other cycle): every response as the model says, memory intact."""
    run = run_cocotb(ByteBench(read_latency=2), "host_link_byte_bench_rl2", TB_BYTES,
                     params=_byte_fuzz_params(20261127, 1500))
    out = run.outputs
    assert int(out["frames"]) >= 1500
    assert int(out["mismatches"]) == 0
    np.testing.assert_array_equal(out["memory"], out["expected_memory"])
    kinds = dict(zip(out["kind_names"].tolist(), out["kind_counts"].tolist()))
    assert kinds.get("read", 0) > 50, kinds


def test_byte_level_read_latency_mismatch_is_caught():
    """The same bench with the link sampling one cycle early (latency 1 against the
    latency-2 target) fails: the READ responses carry the target's junk."""
    from sim.harness import CocotbTestFailure

    with pytest.raises(CocotbTestFailure, match="expected"):
        run_cocotb(ByteBench(read_latency=2, link_read_latency=1),
                   "host_link_byte_bench_rl2_vs_1", TB_BYTES,
                   params=_byte_fuzz_params(20261128, 200))


def test_uart_link_round_trip_and_fuzz():
    """The whole link with UART bits: writes then reads, framing errors, a host 2 % off
    the board's baud rate, pipelined WRITE groups, a smaller fuzz."""
    run = run_cocotb(UartBench(), "host_link_uart_bench", TB_UART,
                     params={"seed": 99, "divisor": UART_DIVISOR, "timeout": UART_TIMEOUT,
                             "max_burst": MAX_BURST, "fuzz_cases": 240, "writes": 24,
                             "groups": 3, "clock_period_ns": 10})
    out = run.outputs
    assert int(out["round_trip_words"]) > 200
    assert int(out["fuzz_frames"]) >= 300
    assert int(out["framing_errors"]) > 0
    assert int(out["mismatch_frames"]) == 16
    assert int(out["pipelined_frames"]) >= 12 and int(out["overruns"]) == 0
    np.testing.assert_array_equal(out["memory"], out["expected_memory"])


def test_uart_link_at_the_icebreakers_divisor_with_a_host_2_percent_off():
    """The iCEBreaker's link: 30 MHz and 3 Mbaud, 10 cycles a bit.  WRITE/READ pairs from a
    host whose bit time is 2 % longer and 2 % shorter, pipelined WRITE groups at the board's
    rate and 2 % off both ways (no byte lost to an overrun), round trips, framing errors and a
    small fuzz: every byte the board sends as the reference model says."""
    divisor = uart_timing(30e6, 3_000_000).check().divisor
    assert divisor == 10
    run = run_cocotb(UartBench(divisor=divisor, timeout=4 * 10 * divisor),
                     "host_link_uart_bench_div10", TB_UART,
                     params={"seed": 100, "divisor": divisor, "timeout": 4 * 10 * divisor,
                             "max_burst": MAX_BURST, "fuzz_cases": 60, "writes": 8,
                             "groups": 6, "clock_period_ns": 10})
    out = run.outputs
    assert int(out["mismatch_frames"]) == 16
    assert int(out["pipelined_frames"]) >= 24 and int(out["overruns"]) == 0
    np.testing.assert_array_equal(out["memory"], out["expected_memory"])


def _answer_after_gap(timeout: int, gap: int):
    """Send SYNC and one header byte, wait ``gap`` cycles without a byte, then offer a
    second header byte.  Returns (bytes taken, cycles from the last byte taken to the first
    response byte, the response's kind and info bytes)."""
    from amaranth.sim import Simulator

    link = HostLink(addr_width=model.ADDR_WIDTH, max_burst=4, timeout=timeout)
    m = Module()
    m.submodules.link = link
    m.submodules.target = target = DemoTarget(read_latency=1)
    wiring.connect(m, link.bus, target.bus)
    result = []

    async def bench(ctx):
        ctx.set(link.tx.ready, 1)
        taken = 0
        since = 0               # cycles since the last byte was taken
        sent = []
        schedule = [SYNC, CMD_READ] + [None] * gap + [1]
        for cycle in range(len(schedule) + 4 * timeout + 40):
            byte = schedule[cycle] if cycle < len(schedule) else None
            ctx.set(link.rx.valid, byte is not None)
            ctx.set(link.rx.payload, 0 if byte is None else byte)
            if ctx.get(link.tx.valid):
                sent.append(ctx.get(link.tx.payload))
                if len(sent) == 1:
                    latency = since
                if len(sent) == 3:
                    result.extend([taken, latency, sent[1], sent[2]])
                    return
            took = byte is not None and ctx.get(link.rx.ready)
            await ctx.tick()
            since = 0 if took else since + 1
            taken += took

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return tuple(result)


@pytest.mark.parametrize("timeout", [2, 5, 48])
def test_inter_byte_timeout_is_exact(timeout):
    """Inside a frame, ``timeout - 1`` cycles without a byte (the byte comes in the
    ``timeout``-th) keep the frame; ``timeout`` cycles end it with ERROR 0x04."""
    kept = _answer_after_gap(timeout, timeout - 1)
    cut = _answer_after_gap(timeout, timeout)
    assert kept[0] == 3 and cut[0] == 2, (kept, cut)
    assert kept[1:] == cut[1:] == (timeout, RSP_ERROR, ERR_TIMEOUT), (kept, cut)
