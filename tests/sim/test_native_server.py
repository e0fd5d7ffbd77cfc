"""The native bus server (sim/native.py, sim/native/bus_server.cpp) answers exactly like the
cocotb one (sim/bus_server.py): one request sequence, sent as raw frames to both, gets the
same reply to every request -- data, CYCLE counts, WAIT_REG results and error replies.

The target design makes every difference in the clocking visible on the bus: besides a
memory and a countdown register it has a free-running counter of all rising edges since
time 0, a counter of the rising edges with reset high, and a signature register that
folds in the bus inputs (addr, w_data, w_en, r_en) seen at every rising edge.  So the reset
sequence, the cycle on which each request starts and ends, and what each input holds on
each edge (also between requests) must be the same for the replies to agree.
"""

import struct

import numpy as np
import pytest
from amaranth.hdl import Cat, Module, Mux, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from hw.host_bus import BusSignature
from sim.bus_client import (HEADER, OP_CYCLE, OP_READ, OP_WAIT_REG, OP_WRITE, STATUS_ERROR,
                            STATUS_OK, WAIT_REP, WAIT_REQ, SimBus, SimBusError)

ADDR_WIDTH = 12
MEM_WORDS = 256
REG_COUNT = 0x800       # write N: counts down to 0, one per cycle
REG_SCRATCH = 0x801
REG_FREE = 0x802        # rising edges since time 0 (never reset)
REG_RESETS = 0x803      # rising edges with rst high (never reset)
REG_SIGNATURE = 0x804   # folds in the bus inputs at every rising edge (never reset)
JUNK = 0x5EED_0BAD      # r_data when no read's word is due


class ProbeTarget(wiring.Component):
    """A bus target with read latency ``read_latency`` that shows how it was clocked."""

    def __init__(self, read_latency: int):
        self.read_latency = read_latency
        super().__init__({"bus": In(BusSignature(ADDR_WIDTH, read_latency))})

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        m.submodules.mem = mem = Memory(shape=32, depth=MEM_WORDS, init=[])
        wp, rp = mem.write_port(), mem.read_port()
        in_mem = bus.addr < MEM_WORDS
        m.d.comb += [wp.addr.eq(bus.addr), wp.data.eq(bus.w_data), wp.en.eq(bus.w_en & in_mem),
                     rp.addr.eq(bus.addr), rp.en.eq(bus.r_en)]

        count, scratch = Signal(32), Signal(32)
        free = Signal(32, reset_less=True)
        resets = Signal(32, reset_less=True)
        signature = Signal(32, reset_less=True)
        m.d.sync += free.eq(free + 1)
        with m.If(ResetSignal("sync")):
            m.d.sync += resets.eq(resets + 1)
        inputs = Cat(bus.addr, bus.w_en, bus.r_en)
        m.d.sync += signature.eq(((signature << 5) | (signature >> 27)) ^ bus.w_data ^ inputs)
        with m.If(bus.w_en & (bus.addr == REG_COUNT)):
            m.d.sync += count.eq(bus.w_data)
        with m.Elif(count != 0):
            m.d.sync += count.eq(count - 1)
        with m.If(bus.w_en & (bus.addr == REG_SCRATCH)):
            m.d.sync += scratch.eq(bus.w_data)

        # The word of a read is chosen at its r_en edge; then it goes through
        # read_latency - 1 registers, and r_data shows JUNK unless a word is due.
        from_mem, reg_value = Signal(), Signal(32)
        with m.If(bus.r_en):
            m.d.sync += [
                from_mem.eq(in_mem),
                reg_value.eq(Mux(bus.addr == REG_COUNT, count,
                             Mux(bus.addr == REG_SCRATCH, scratch,
                             Mux(bus.addr == REG_FREE, free,
                             Mux(bus.addr == REG_RESETS, resets,
                             Mux(bus.addr == REG_SIGNATURE, signature, 0)))))),
            ]
        word, due = Mux(from_mem, rp.data, reg_value), Signal()
        m.d.sync += due.eq(bus.r_en)
        for _ in range(self.read_latency - 1):
            word_q, due_q = Signal(32), Signal()
            m.d.sync += [word_q.eq(word), due_q.eq(due)]
            word, due = word_q, due_q
        m.d.comb += bus.r_data.eq(Mux(due, word, JUNK))
        return m


def _write(addr, words):
    return OP_WRITE, struct.pack(f"<I{len(words)}I", addr, *words)


def _read(addr, count):
    return OP_READ, struct.pack("<II", addr, count)


def _wait(addr, mask, value, poll, max_cycles):
    return OP_WAIT_REG, WAIT_REQ.pack(addr, mask, value, poll, max_cycles)


CYCLE = (OP_CYCLE, b"")


def request_sequence(seed: int) -> list[tuple[int, bytes]]:
    """A fixed mix of every kind of request, good and malformed."""
    rng = np.random.default_rng(seed)
    top = 1 << ADDR_WIDTH
    seq = [CYCLE, _read(REG_FREE, 1), _read(REG_RESETS, 1), _read(REG_SIGNATURE, 1), CYCLE]
    for _ in range(150):
        kind = rng.integers(0, 9)
        if kind == 0:      # a burst into the memory, maybe past its end
            n = int(rng.integers(1, 40))
            addr = int(rng.integers(0, MEM_WORDS + 8))
            seq.append(_write(addr, rng.integers(0, 1 << 32, n, dtype=np.uint64).tolist()))
        elif kind == 1:    # a burst read, maybe across the end of the memory
            seq.append(_read(int(rng.integers(0, MEM_WORDS + 8)), int(rng.integers(0, 40))))
        elif kind == 2:    # a countdown, waited for (matched or timed out)
            n = int(rng.integers(0, 3000))
            seq.append(_write(REG_COUNT, [n]))
            seq.append(_wait(REG_COUNT, 0xFFFFFFFF, 0, int(rng.integers(0, 300)),
                             int(rng.integers(0, 4000))))
        elif kind == 3:    # a masked wait on the scratch register
            v = int(rng.integers(0, 1 << 32))
            seq.append(_write(REG_SCRATCH, [v]))
            seq.append(_wait(REG_SCRATCH, 0xFF, int(rng.integers(0, 2)) * v, 7, 50))
        elif kind == 4:
            seq.append(_read(int(rng.choice([REG_FREE, REG_SIGNATURE, REG_COUNT])), 1))
        elif kind == 5:    # out of range: rejected, no cycles
            seq.append(rng.choice([0, 1, 2]) == 0 and _write(top - 1, [1, 2]) or
                       _read(top - int(rng.integers(0, 3)), 3))
        elif kind == 6:    # malformed
            seq.append([(OP_WRITE, b"\x01\x02"), (OP_WRITE, b"\0" * 7), (OP_READ, b"\0" * 7),
                        (OP_WAIT_REG, b"\0" * 23), (0x7E, b""), (0x00, b"abc")][
                int(rng.integers(0, 6))])
        elif kind == 7:    # empty requests
            seq.append([_write(5, []), _read(5, 0), _wait(top, 1, 1, 1, 1)][int(rng.integers(0, 3))])
        seq.append(CYCLE)
    seq += [_read(0, MEM_WORDS), _read(REG_FREE, 1), _read(REG_SIGNATURE, 1), CYCLE]
    return seq


def replies(server: str, design, toplevel: str, read_latency: int, seq) -> list:
    with SimBus.start(design, toplevel, read_latency=read_latency, server=server) as bus:
        assert bus.server == server
        return [bus.exchange(op, payload) for op, payload in seq]


@pytest.mark.parametrize("read_latency", [1, 3, 10])   # SimBus default; SerialTrainer; Trainer
def test_native_and_cocotb_servers_reply_alike(read_latency):
    seq = request_sequence(seed=read_latency)
    design = ProbeTarget(read_latency)
    toplevel = f"probe_target_rl{read_latency}"
    native = replies("native", design, toplevel, read_latency, seq)
    cocotb = replies("cocotb", design, toplevel, read_latency, seq)
    assert len(native) == len(cocotb) == len(seq)
    for i, (request, got, want) in enumerate(zip(seq, native, cocotb)):
        assert got == want, (i, request, got, want)

    # The sequence did what it is meant to test (so that the comparison means something).
    statuses = [status for status, _ in native]
    assert statuses.count(STATUS_ERROR) >= 5 and statuses.count(STATUS_OK) > 100
    cycles = [struct.unpack("<Q", p)[0] for (op, _), (st, p) in zip(seq, native) if op == OP_CYCLE]
    assert cycles[0] == 0 and cycles == sorted(cycles) and cycles[-1] > 10_000
    waits = [WAIT_REP.unpack(p) for (op, _), (st, p) in zip(seq, native)
             if op == OP_WAIT_REG and st == STATUS_OK]
    assert any(m for _, _, m in waits) and any(not m for _, _, m in waits)
    # Before cycle 0: rising edges at 0 and 10 ns with reset high, one at 20 ns with it low
    # (the first read latches the counters at the next edge).
    assert native[1] == (STATUS_OK, struct.pack("<I", 3))
    assert native[2] == (STATUS_OK, struct.pack("<I", 2))


def test_native_server_error_replies_name_the_problem():
    seq = [(OP_WRITE, b"\x01\x02"), (0x7E, b""), _read((1 << ADDR_WIDTH) - 1, 2)]
    got = replies("native", ProbeTarget(1), "probe_target_rl1", 1, seq)
    assert got[0] == (STATUS_ERROR, b"WRITE payload of 2 bytes")
    assert got[1] == (STATUS_ERROR, b"unknown request op 0x7e")
    assert got[2] == (STATUS_ERROR, b"addresses 0xfff..0x1000 outside the 12-bit bus")


def test_rejected_write_is_raised_by_the_next_waiting_call():
    """Writes do not wait for their replies: the error comes with the next call that waits."""
    bus = SimBus.start(ProbeTarget(1), "probe_target_rl1")
    bus.write((1 << ADDR_WIDTH) - 1, [1, 2])           # sent, not yet answered
    with pytest.raises(SimBusError, match="rejected a write: addresses 0xfff..0x1000"):
        bus.cycle()
    c0 = bus.cycle()                                   # the session goes on
    bus.write(3, [33])
    assert bus.read(3, 1) == [33] and bus.cycle() - c0 == 2
    bus.write((1 << ADDR_WIDTH) - 1, [1, 2])
    with pytest.raises(SimBusError, match="rejected a write"):
        bus.sync()
    bus.write(1 << ADDR_WIDTH, [1])
    with pytest.raises(SimBusError, match="rejected a write: addresses 0x1000..0x1000"):
        bus.close()                                    # raised after closing cleanly
    assert bus.run is not None and bus.run.failed == 0


@pytest.mark.parametrize("server", ["native", "cocotb"])
def test_waves_record_the_session(server):
    """``waves=True`` works on both servers: dump.vcd in the run's directory, with the
    design's signals and one rising clock edge per cycle."""
    with SimBus.start(ProbeTarget(1), "probe_target_rl1", waves=True, server=server) as bus:
        bus.write(0, [1, 2, 3])
        bus.write(REG_COUNT, [40])
        assert bus.wait_reg(REG_COUNT, 0xFFFFFFFF, 0, poll=5) > 0
        cycles = bus.cycle()
    vcd = bus.run.test_dir / "dump.vcd"
    text = vcd.read_text()
    assert "signature" in text and "bus__w_data" in text
    header, _, body = text.partition("$enddefinitions")
    clk_id = next(line.split()[3] for line in header.splitlines()
                  if line.split()[:1] == ["$var"] and line.split()[4] == "clk")
    rising = sum(1 for line in body.splitlines() if line == "1" + clk_id)
    # the three edges before cycle 0, then one per cycle; none after the last request
    assert rising == cycles + 3, (cycles, rising)


def test_native_server_stops_when_the_host_goes_away_during_a_long_wait():
    """A host that dies during WAIT_REG does not leave the server running to MAX_CYCLES."""
    import time

    bus = SimBus.start(ProbeTarget(1), "probe_target_rl1", server="native")
    op, payload = _wait(REG_SCRATCH, 1, 1, 64, 1 << 50)   # never matches
    bus._sock.sendall(HEADER.pack(op, len(payload)) + payload)
    time.sleep(0.2)
    bus._sock.close()                                      # the host "dies"
    bus._thread.join(60)
    assert not bus._thread.is_alive()
    assert bus._state["run"].returncode == 0
    bus.close()                                            # nothing left to report


def test_port_header_from_verilators_declarations():
    from sim.native import PortError, port_header

    vtop_h = """
    VL_IN8(&clk,0,0);
    VL_IN8(&rst,0,0);
    VL_IN8(&bus___05Fw_en,0,0);
    VL_IN8(&bus___05Fr_en,0,0);
    VL_IN(&bus___05Fw_data,31,0);
    VL_OUT(&bus___05Fr_data,31,0);
    VL_IN(&bus___05Faddr,23,0);
    """
    header = port_header(vtop_h, "t")
    assert "#define NITROD_ADDR bus___05Faddr\n#define NITROD_ADDR_WIDTH 24\n" in header
    assert "#define NITROD_R_DATA bus___05Fr_data\n#define NITROD_R_DATA_WIDTH 32\n" in header
    with pytest.raises(PortError, match="no output port bus__r_data"):
        port_header(vtop_h.replace("VL_OUT(&bus___05Fr_data,31,0);", ""), "t")
    with pytest.raises(PortError, match="port bus__w_data of t: input of 96 bits"):
        port_header(vtop_h.replace("VL_IN(&bus___05Fw_data,31,0);",
                                   "VL_INW(&bus___05Fw_data,95,0,3);"), "t")
    with pytest.raises(PortError, match="port bus__r_data of t: input of 32 bits"):
        port_header(vtop_h.replace("VL_OUT(&bus___05Fr_data", "VL_IN(&bus___05Fr_data"), "t")
