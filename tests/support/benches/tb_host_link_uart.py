"""cocotb bench of the whole link with UART bits (tests/test_host_link.py::UartBench).

The test drives the serial line ``rx`` bit by bit (``divisor`` cycles per bit,
the design runs free in between) and a monitor decodes ``tx`` by sampling
each bit in its middle.  Like a real host it waits for each response before
sending more.  Three parts, one reference model (tb_host_link_model) for all:

1. round trip: random WRITE bursts (memory and CTRL), then the whole memory
   read back and compared with what was written;
2. framing errors: frames in which one byte has a 0 stop bit (the receiver
   drops it, the frame times out and changes nothing), then a PING;
3. baud-rate mismatch: WRITE/READ pairs sent with bit times 2 % off;
4. pipelined WRITE groups (protocol 3): ``groups`` groups of WRITE frames (every other one
   of ``max_burst`` words) sent back to back without waiting for the ACKs, at the board's
   bit time and 2 % faster and slower: every ACK as the model says, no overrun;
5. a small fuzz from the generator (``half_duplex=True``).

Every byte the board sends is compared with the model.  Params: ``seed``,
``divisor``, ``timeout``, ``max_burst``, ``fuzz_cases``, ``writes``, ``groups``,
``clock_period_ns`` (the clock started by sim.tb.start_clock_and_reset).
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, Timer

from hw.contract import link as P
from nitrod import link as L
from sim import tb

import tb_host_link_model as hm


class SerialHost:
    def __init__(self, dut, divisor, timeout):
        self.dut = dut
        self.div = divisor
        self.timeout = timeout
        self.received = bytearray()
        self.expected = bytearray()
        self.tx_errors = []
        self.framing_errors = 0
        self.overruns = 0

    async def monitor(self):
        dut, div = self.dut, self.div
        while True:
            await FallingEdge(dut.tx)
            await ClockCycles(dut.clk, div // 2)
            if int(dut.tx.value) != 0:
                self.tx_errors.append(f"start-bit glitch after byte {len(self.received)}")
                continue
            value = 0
            for bit in range(8):
                await ClockCycles(dut.clk, div)
                value |= int(dut.tx.value) << bit
            await ClockCycles(dut.clk, div)
            if int(dut.tx.value) != 1:
                self.tx_errors.append(f"bad stop bit in byte {len(self.received)}")
            self.received.append(value)

    async def count_framing_errors(self):
        while True:
            await RisingEdge(self.dut.framing_error)
            self.framing_errors += 1

    async def count_overruns(self):
        while True:
            await RisingEdge(self.dut.overrun)
            self.overruns += 1

    async def send(self, data, bad_stop=None, bit_ps=None):
        """Send bytes back to back; byte number ``bad_stop`` gets a 0 stop bit and
        the line then idles for two bit times.  ``bit_ps``: bit time in picoseconds
        (a host whose baud rate differs from the board's), else ``divisor`` cycles."""
        dut, div = self.dut, self.div
        for i, byte in enumerate(data):
            stop = 0 if i == bad_stop else 1
            for bit in [0] + [(byte >> k) & 1 for k in range(8)] + [stop]:
                dut.rx.value = bit
                if bit_ps:
                    await Timer(bit_ps, unit="ps")
                else:
                    await ClockCycles(dut.clk, div)
            if not stop:
                dut.rx.value = 1
                await ClockCycles(dut.clk, 2 * div)
        dut.rx.value = 1

    async def gap(self):
        """Idle for longer than the link's inter-byte timeout."""
        await ClockCycles(self.dut.clk, self.timeout + 4 * self.div)

    async def settle(self, what=""):
        """Wait until every response the model predicts has arrived, then compare."""
        byte_time = 10 * self.div
        waited = 0
        while len(self.received) < len(self.expected):
            await ClockCycles(self.dut.clk, byte_time)
            waited += byte_time
            assert waited < 20 * self.timeout + byte_time * len(self.expected), (
                f"{what}: only {len(self.received)} of {len(self.expected)} response bytes arrived")
        assert not self.tx_errors, self.tx_errors
        n = len(self.expected)
        assert self.received[:n] == self.expected, (
            f"{what}: responses differ from the model\n expected {self.expected[-64:].hex()}\n"
            f" got      {self.received[-64:].hex()}")
        await ClockCycles(self.dut.clk, 2 * byte_time)     # nothing more may come
        assert len(self.received) == n, f"{what}: unexpected bytes {self.received[n:].hex()}"

    async def request(self, device, frame, what="request"):
        self.expected += device.feed(frame)
        await self.send(frame)
        await self.settle(what)


@cocotb.test()
async def uart_link(dut):
    p = tb.params()
    rng = np.random.default_rng(p["seed"])
    div, mb = p["divisor"], p["max_burst"]
    dut.rx.value = 1
    await tb.start_clock_and_reset(dut)
    await ClockCycles(dut.clk, 4)
    host = SerialHost(dut, div, p["timeout"])
    cocotb.start_soon(host.monitor())
    cocotb.start_soon(host.count_framing_errors())
    cocotb.start_soon(host.count_overruns())

    device = hm.DeviceModel(hm.TargetModel(), max_burst=mb)
    intended = hm.TargetModel()

    # 1. round trip -------------------------------------------------------------
    await host.request(device, L.encode_request(P.CMD_PING), "first PING")
    written = 0
    for k in range(p["writes"]):
        if k % 8 == 7:
            addr, words = hm.REG_CTRL, [int(rng.integers(0, 1 << 32))]
        else:
            n = int(rng.integers(1, 17))
            addr = int(rng.integers(0, hm.MEM_WORDS - n + 1))
            words = [int(w) for w in rng.integers(0, 1 << 32, n, dtype=np.uint64)]
        await host.request(device, L.encode_request(P.CMD_WRITE, addr, len(words), words), f"write {k}")
        for i, w in enumerate(words):
            intended.write(addr + i, w)
        written += len(words)
    start = len(host.received)
    for addr in range(0, hm.MEM_WORDS, mb):
        await host.request(device, L.encode_request(P.CMD_READ, addr, mb), f"read 0x{addr:x}")
    await host.request(device, L.encode_request(P.CMD_READ, hm.REG_CTRL, 3), "read registers")
    responses = L.ResponseDecoder().feed(bytes(host.received[start:]))
    words = [w for r in responses for w in r.words]
    assert words == intended.mem + intended.registers(), "round trip: read-back differs"
    assert device.target == intended
    assert int(dut.ctrl.value.to_unsigned()) == intended.ctrl
    info = L.ResponseDecoder().feed(bytes(host.received[:1 + P.RESPONSE_HEADER_BYTES + 8 + 2]))[0]
    assert info.words[0] & 0xFFFF == (mb << 8) | P.PROTOCOL_VERSION

    # 2. framing errors -------------------------------------------------------------
    framing_cases = 0
    while framing_cases < 8:
        n = int(rng.integers(1, 5))
        addr = int(rng.integers(0, hm.MEM_WORDS - n + 1))
        frame = L.encode_request(P.CMD_WRITE, addr, n,
                                 [int(w) for w in rng.integers(0, 1 << 32, n, dtype=np.uint64)])
        bad = int(rng.integers(0, len(frame)))
        delivered = frame[:bad] + frame[bad + 1:]
        trial = device.clone()
        positions = trial.feed_positions(delivered)
        trial.gap()
        if trial.target != intended or any(i != len(delivered) - 1 for i in positions):
            continue
        before = host.framing_errors
        host.expected += device.feed(delivered)
        await host.send(frame, bad_stop=bad)
        await host.gap()
        host.expected += device.gap()
        await host.settle(f"framing case {framing_cases}")
        await host.request(device, L.encode_request(P.CMD_PING), "PING after a framing error")
        assert host.framing_errors == before + 1
        framing_cases += 1

    # 3. baud-rate mismatch: the host's bit time 2 % longer or shorter ---------
    mismatch_frames = 0
    for k in range(8):
        bit_ps = round(p["clock_period_ns"] * 1000 * div * (1.02 if k & 1 else 0.98))
        n = int(rng.integers(1, 9))
        addr = int(rng.integers(0, hm.MEM_WORDS - n + 1))
        words = [int(w) for w in rng.integers(0, 1 << 32, n, dtype=np.uint64)]
        frame = L.encode_request(P.CMD_WRITE, addr, n, words)
        host.expected += device.feed(frame)
        await host.send(frame, bit_ps=bit_ps)
        await host.settle(f"write at {bit_ps} ps per bit")
        for i, w in enumerate(words):
            intended.write(addr + i, w)
        frame = L.encode_request(P.CMD_READ, addr, n)
        host.expected += device.feed(frame)
        await host.send(frame, bit_ps=bit_ps)
        await host.settle(f"read at {bit_ps} ps per bit")
        mismatch_frames += 2
    assert device.target == intended

    # 4. pipelined WRITE groups: back to back, no waiting for the ACKs -------------------
    pipelined_frames = 0
    period_ps = p["clock_period_ns"] * 1000 * div
    for g in range(p["groups"]):
        frames = []
        for k in range(int(rng.integers(4, 9))):
            n = mb if k % 2 == 0 else int(rng.integers(1, mb + 1))
            addr = int(rng.integers(0, hm.MEM_WORDS - n + 1))
            words = [int(w) for w in rng.integers(0, 1 << 32, n, dtype=np.uint64)]
            frames.append(L.encode_request(P.CMD_WRITE, addr, n, words,
                                           seq=(16 * g + k) % P.SEQ_MODULO))
            for i, w in enumerate(words):
                intended.write(addr + i, w)
        data = b"".join(frames)
        bit_ps = None if g % 3 == 0 else round(period_ps * (0.98 if g % 3 == 1 else 1.02))
        host.expected += device.feed(data)
        await host.send(data, bit_ps=bit_ps)
        await host.settle(f"group {g} ({len(frames)} frames, {bit_ps or period_ps} ps a bit)")
        pipelined_frames += len(frames)
    assert device.target == intended
    assert host.overruns == 0, f"{host.overruns} bytes lost to overruns"

    # 5. fuzz ---------------------------------------------------------------------
    cases, _, intended, rejected = hm.generate_cases(
        rng, p["fuzz_cases"], max_burst=mb, max_too_long=mb + 16, half_duplex=True,
        model=device.clone(), intended=intended)
    frames = 0
    for index, case in enumerate(cases):
        for item in case.items:
            if item is hm.GAP:
                await host.gap()
                host.expected += device.gap()
            else:
                host.expected += device.feed(item)
                await host.send(item)
            await host.settle(f"fuzz case {index} ({case.kind})")
        frames += case.frames
    assert device.target == intended

    # final read-back
    start = len(host.received)
    for addr in range(0, hm.MEM_WORDS, mb):
        await host.request(device, L.encode_request(P.CMD_READ, addr, mb), f"final read 0x{addr:x}")
    await host.request(device, L.encode_request(P.CMD_READ, hm.REG_CTRL, 3), "final register read")
    words = [w for r in L.ResponseDecoder().feed(bytes(host.received[start:])) for w in r.words]
    words = words[:hm.MEM_WORDS + 1] + words[hm.MEM_WORDS + 2:]
    assert int(dut.error_count.value.to_unsigned()) == device.error_count
    dut._log.info("round trip %d words, %d framing cases, %d fuzz frames (%d rejected), %d bytes back",
                  written + len(intended.mem) + 2, framing_cases, frames, rejected, len(host.received))
    tb.save_outputs(round_trip_words=written + hm.MEM_WORDS + 2, fuzz_frames=frames,
                    mismatch_frames=mismatch_frames, pipelined_frames=pipelined_frames,
                    overruns=host.overruns,
                    framing_errors=host.framing_errors,
                    memory=np.array(words, np.uint64),
                    expected_memory=np.array(intended.mem + [intended.ctrl, intended.wcount],
                                             np.uint64))
