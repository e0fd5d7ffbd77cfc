"""The co-simulation bus bridge (sim/bus_client.py with sim/bus_server.py under cocotb, and with
sim/native.py's server) on a small test design.

One simulation session serves the functional tests (module-scoped fixture), so the
Verilator build (cached) and the simulator start are paid once.
"""


import time

import numpy as np
import pytest
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from hw.host_bus import BusSignature
from sim.bus_client import SimBus, SimBusError, SimBusTimeout

MEM_WORDS = 1024
REG_COUNT = 0x1000      # write N: counts down to 0, one per cycle; reads the current value
REG_SCRATCH = 0x1001    # plain read/write register
ADDR_WIDTH = 24


class BusTarget(wiring.Component):
    """1024 x 32 memory at 0..1023, the countdown register and a scratch register;
    reads have one cycle latency (registered), unmapped addresses read 0.

    With ``read_latency=2`` the read data goes through one more register and ``r_data``
    shows each word only in the cycle two after its ``r_en`` (:data:`JUNK` otherwise).
    """

    JUNK = 0xBAD0_C0DE

    def __init__(self, read_latency: int = 1):
        if read_latency not in (1, 2):
            raise ValueError("BusTarget has read latency 1 or 2")
        self.read_latency = read_latency
        super().__init__({"bus": In(BusSignature(ADDR_WIDTH, read_latency))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=32, depth=MEM_WORDS, init=[])
        wp = mem.write_port()
        rp = mem.read_port()
        bus = self.bus
        in_mem = bus.addr < MEM_WORDS
        m.d.comb += [
            wp.addr.eq(bus.addr), wp.data.eq(bus.w_data), wp.en.eq(bus.w_en & in_mem),
            rp.addr.eq(bus.addr), rp.en.eq(bus.r_en),
        ]
        count = Signal(32)
        scratch = Signal(32)
        with m.If(bus.w_en & (bus.addr == REG_COUNT)):
            m.d.sync += count.eq(bus.w_data)
        with m.Elif(count != 0):
            m.d.sync += count.eq(count - 1)
        with m.If(bus.w_en & (bus.addr == REG_SCRATCH)):
            m.d.sync += scratch.eq(bus.w_data)

        # read mux: the source is chosen when r_en is sampled, the data shown next cycle
        from_mem = Signal()
        reg_value = Signal(32)
        with m.If(bus.r_en):
            m.d.sync += [
                from_mem.eq(in_mem),
                reg_value.eq(Mux(bus.addr == REG_COUNT, count,
                                 Mux(bus.addr == REG_SCRATCH, scratch, 0))),
            ]
        r_data = Mux(from_mem, rp.data, reg_value)
        if self.read_latency == 1:
            m.d.comb += bus.r_data.eq(r_data)
        else:
            r_data_q = Signal(32)
            read_1 = Signal()
            read_2 = Signal()    # r_en was high 2 cycles ago: r_data_q holds that word
            m.d.sync += [r_data_q.eq(r_data), read_1.eq(bus.r_en), read_2.eq(read_1)]
            m.d.comb += bus.r_data.eq(Mux(read_2, r_data_q, self.JUNK))
        return m


@pytest.fixture(scope="module", params=["native", "cocotb"])
def server(request):
    """Every test runs on both servers: sim/native.py's and sim/bus_server.py under cocotb."""
    return request.param


@pytest.fixture(scope="module")
def bus(server):
    with SimBus.start(BusTarget(), "bus_target", server=server) as b:
        assert b.server == server
        yield b


def test_bulk_write_read_back(bus):
    rng = np.random.default_rng(1)
    words = rng.integers(0, 1 << 32, 1000, dtype=np.uint64).tolist()
    c0 = bus.cycle()
    bus.write(0, words)
    c1 = bus.cycle()
    assert c1 - c0 == 1000                     # one word per cycle
    assert bus.read(0, 1000) == words
    assert bus.cycle() - c1 == 1000            # pipelined: r_en high N cycles
    assert bus.read(500, 1) == [words[500]]
    assert bus.read(0, 0) == []


def test_read_latency_and_mapping(bus):
    bus.write(1020, [11, 12, 13, 14])
    # burst across the end of the memory: unmapped words read 0, no shift in the pipeline
    assert bus.read(1018, 8)[2:] == [11, 12, 13, 14, 0, 0]
    bus.write(REG_SCRATCH, [0xDEADBEEF])
    assert bus.read_word(REG_SCRATCH) == 0xDEADBEEF
    # The countdown register is N after the write's clock edge; the READ's r_en is
    # sampled at the next edge and shows the value before it; each read takes one cycle.
    bus.write(REG_COUNT, [500])
    assert [bus.read_word(REG_COUNT) for _ in range(4)] == [500, 499, 498, 497]
    c0 = bus.cycle()
    assert bus.read_word(REG_COUNT) == 496 and bus.cycle() - c0 == 1
    # mixed burst: memory, register, memory
    bus.write(0, [7, 8])
    bus.write(REG_COUNT, [0])
    got = bus.read(1022, 4)
    assert got == [13, 14, 0, 0]
    # negative values are written as their 32-bit pattern
    bus.write_words(3, [-1])
    assert bus.read_word(3) == 0xFFFFFFFF


def test_wait_reg_countdown(bus):
    for n, poll in [(5000, 64), (20_000, 1000), (3, 16)]:
        bus.write(REG_COUNT, [n])
        c0 = bus.cycle()
        cycles = bus.wait_reg(REG_COUNT, 0xFFFFFFFF, 0, max_cycles=10 * n + 100, poll=poll)
        # the register reads 0 from about n cycles after the write; polled every poll + 2
        assert n - 2 <= cycles <= n + poll + 4, (n, poll, cycles)
        assert bus.cycle() - c0 == cycles
    # a masked wait on a value already there returns after the one read
    bus.write(REG_SCRATCH, [0x1234_5678])
    assert bus.wait_reg(REG_SCRATCH, 0xFF, 0x78) == 1


def test_wait_reg_timeout(bus):
    bus.write(REG_COUNT, [1_000_000])
    with pytest.raises(SimBusTimeout) as info:
        bus.wait_reg(REG_COUNT, 0xFFFFFFFF, 0, max_cycles=10_000, poll=500)
    assert 10_000 <= info.value.cycles <= 10_000 + 4
    # exact cycle accounting across the simulator-timed idle stretches: the read that
    # ended m cycles into the request latched the count of m - 1 cycles after the write
    assert info.value.word == 1_000_000 - info.value.cycles + 1
    bus.write(REG_COUNT, [0])


def test_bad_requests_keep_the_session(bus):
    with pytest.raises(SimBusError, match="outside"):
        bus.read((1 << ADDR_WIDTH) - 1, 2)
    with pytest.raises(ValueError):
        bus.read(-1, 1)
    bus.write(5, [55])
    assert bus.read_word(5) == 55


def test_throughput_and_close(server):
    """10,000-word write and read bursts (throughput printed), then close."""
    rng = np.random.default_rng(2)
    n = 10_000
    with SimBus.start(BusTarget(), "bus_target", server=server) as bus:
        bus.chunk_words = 4096                 # exercise the chunking: 3 requests each way
        data = rng.integers(0, 1 << 32, n, dtype=np.uint64).tolist()
        c0 = bus.cycle()
        t = time.perf_counter()
        bus.write(0, data)                     # words beyond the memory are ignored
        t_write = time.perf_counter() - t
        t = time.perf_counter()
        got = bus.read(0, n)
        t_read = time.perf_counter() - t
        assert bus.cycle() - c0 == 2 * n
        expected = data[:MEM_WORDS] + [0] * (n - MEM_WORDS)
        expected[REG_SCRATCH] = data[REG_SCRATCH]
        # the countdown register got data[REG_COUNT] and has been counting since
        assert max(data[REG_COUNT] - 2 * n, 0) <= got[REG_COUNT] < data[REG_COUNT]
        expected[REG_COUNT] = got[REG_COUNT]
        assert got == expected
        print(f"\nSimBus throughput: write {n / t_write:,.0f} words/s, "
              f"read {n / t_read:,.0f} words/s (10,000-word bursts)")
    assert bus.run is not None and bus.run.failed == 0
    with pytest.raises(SimBusError, match="closed"):
        bus.cycle()
    bus.close()                                # idempotent


def test_read_latency_2(server):
    """A target with registered read data (latency 2) under SimBus.start(read_latency=2):
    data and cycle accounting (each read ends one cycle later); the same design served
    with latency 1 reads the junk the target shows one cycle after r_en."""
    rng = np.random.default_rng(3)
    words = rng.integers(0, 1 << 32, 300, dtype=np.uint64).tolist()
    with SimBus.start(BusTarget(read_latency=2), "bus_target_rl2", read_latency=2,
                      server=server) as bus:
        c0 = bus.cycle()
        bus.write(0, words)
        c1 = bus.cycle()
        assert c1 - c0 == 300
        assert bus.read(0, 300) == words
        assert bus.cycle() - c1 == 301             # N + L - 1
        assert bus.read(299, 1) == [words[299]]
        assert bus.read(1020, 8) == [0] * 8        # memory (never written there) then unmapped
        bus.write(1020, [11, 12, 13, 14])
        assert bus.read(1018, 8)[2:] == [11, 12, 13, 14, 0, 0]
        bus.write(REG_SCRATCH, [0xDEADBEEF])
        assert bus.read_word(REG_SCRATCH) == 0xDEADBEEF
        # the register is latched when r_en is sampled, as with latency 1; each read
        # now takes 2 cycles
        bus.write(REG_COUNT, [500])
        assert [bus.read_word(REG_COUNT) for _ in range(4)] == [500, 498, 496, 494]
        c0 = bus.cycle()
        assert bus.read_word(REG_COUNT) == 492 and bus.cycle() - c0 == 2
        bus.write(REG_COUNT, [3000])
        c0 = bus.cycle()
        cycles = bus.wait_reg(REG_COUNT, 0xFFFFFFFF, 0, max_cycles=10_000, poll=100)
        assert 2998 <= cycles <= 3000 + 100 + 4 and bus.cycle() - c0 == cycles
        assert bus.wait_reg(REG_SCRATCH, 0xFF, 0xEF) == 2
    with SimBus.start(BusTarget(read_latency=2), "bus_target_rl2",
                      server=server) as bus:   # wrong latency
        bus.write(0, [1, 2, 3])
        # sampled one cycle early: junk, then each word one read late
        assert bus.read(0, 3) == [BusTarget.JUNK, 1, 2]
    with pytest.raises(ValueError):
        SimBus.start(lambda: BusTarget(), "bus_target", read_latency=0)
    with pytest.raises(ValueError, match="contradicts"):
        SimBus.start(lambda: BusTarget(), "bus_target", params={"read_latency": 2})


class NoBus(wiring.Component):
    """Has no bus port: the server fails at start."""
    x: In(8)

    def elaborate(self, platform):
        m = Module()
        y = Signal(8)
        m.d.sync += y.eq(self.x)
        return m


def test_missing_bus_port_is_a_clear_error(server):
    t = time.perf_counter()
    with pytest.raises(SimBusError, match="bus__addr"):
        SimBus.start(NoBus(), "bus_target_no_bus", server=server)
    assert time.perf_counter() - t < 120


def test_build_failure_is_a_clear_error(server):
    broken = "module broken_top(input clk, input rst);\n  wire x = ;\nendmodule\n"
    t = time.perf_counter()
    with pytest.raises(SimBusError, match="Verilator build of broken_top failed"):
        SimBus.start(broken, "broken_top", start_timeout=120, server=server)
    assert time.perf_counter() - t < 120
