"""What only the Trainer (hw/trainers/trainer/) does, beyond the conformance suite
(tests/hw/trainers/test_conformance.py): its watches on its own pipelines (STATUS.tile_lost,
row_lost, collision) reach the host, and its host port's timing seen from the bus, cycle by
cycle in Amaranth's simulator (START, clears, writes then reads, pipelined reads).
"""

from __future__ import annotations

import numpy as np
import pytest

from golden.datasets import one_hot
from golden.network import NetworkSpec
from hw.trainers.trainer import Trainer
from hw import contract as isa
from nitrod.backends import AcceleratorBackend, AcceleratorError
from hw.contract import Control, Geometry, Reg, Region
from sim.bus_client import SimBus
GEOMETRY = Geometry(side=4, act_depth=1024, wgt_depth=1024, err_depth=512, code_depth=512)


def test_fifo_depth_is_checked():
    # two is refused: Amaranth's SyncFIFOBuffered of depth 2 does not always take the second
    # row that a second credit promises (a run with it reports STATUS.row_lost)
    for depth in (0, 2):
        with pytest.raises(ValueError, match="fifo_depth must be 1 or at least 3"):
            Trainer(GEOMETRY, fifo_depth=depth)


# ------------------------------------------------------------- the array's flow-control watch

def test_a_tile_lost_in_the_array_is_reported_and_cleared():
    """STATUS.tile_lost reaches the host: a Trainer whose MacArray takes every last beat
    (tests/test_mac_array.py: _NoFlowControl) loses tiles of one beat on the first FORWARD
    and then waits forever for their rows; the API gives up after max_cycles naming the
    flag (the Trainer stays busy: only a reset frees it), and CONTROL bit 1 clears the flag.
    (Every other Trainer run checks the flag stays low with the real array.)"""
    from tests.hw.array.test_mac_array import _NoFlowControl

    g = Geometry(side=2, act_depth=256, wgt_depth=256, err_depth=128, code_depth=128,
                 label_depth=64, prog_depth=16)

    def broken_trainer():
        trainer = Trainer(g, bank_depth=64)
        mac = trainer.engine.mac
        mac._MustUse__silence = True             # replaced, never elaborated
        trainer.engine.mac = _NoFlowControl(rows=mac.rows, cols=mac.cols, a_width=mac.a_width,
                                            b_width=mac.b_width, acc_width=mac.acc_width,
                                            multiplier=mac.multiplier)
        return trainer

    spec = NetworkSpec((1, 1, 1), 2, ("l2",))
    rng = np.random.default_rng(5)
    with SimBus.start(broken_trainer, "trainer", read_latency=Trainer.READ_LATENCY) as b:
        backend = AcceleratorBackend(b, spec, batch=8, seed=0, max_cycles=20_000)
        x = rng.integers(-128, 128, size=(8, 1, 1, 1), dtype=np.int8)
        with pytest.raises(AcceleratorError, match="did not end.*tile_lost") as info:
            backend.train_step(x, one_hot(rng.integers(0, 2, 8), 2), lr_inv=256)
        assert info.value.flags["tile_lost"]
        backend.write_reg(Reg.CONTROL, Control.CLEAR)
        bits = isa.STATUS_BITS                   # still waiting for the lost rows: busy
        assert backend.read_reg(Reg.STATUS) == 1 << bits["busy"]


def test_a_row_the_lanes_were_not_ready_for_is_reported_and_cleared():
    """STATUS.row_lost reaches the host: a Trainer whose front hands FORWARD rows to the lanes
    every cycle while their units take a row only every second cycle (``row_spacing`` set
    to 1 against the lanes' ``row_cycles`` of 2) drops rows, never finishes the program, and
    the API names the flag after max_cycles.  (Every other Trainer run checks it stays low.)"""
    g = Geometry(side=2, act_depth=256, wgt_depth=256, err_depth=128, code_depth=128,
                 label_depth=64, prog_depth=16)

    def unspaced_trainer():
        trainer = Trainer(g, bank_depth=64, row_cycles=2)
        assert trainer.row_spacing == 2
        trainer.row_spacing = 1
        return trainer

    spec = NetworkSpec((1, 1, 4), 2, ("l2",))
    rng = np.random.default_rng(6)
    with SimBus.start(unspaced_trainer, "trainer", read_latency=Trainer.READ_LATENCY) as b:
        backend = AcceleratorBackend(b, spec, batch=8, seed=0, max_cycles=20_000)
        x = rng.integers(-128, 128, size=(8, 1, 1, 4), dtype=np.int8)
        with pytest.raises(AcceleratorError, match="did not end.*row_lost") as info:
            backend.train_step(x, one_hot(rng.integers(0, 2, 8), 2), lr_inv=256)
        assert info.value.flags["row_lost"]
        assert not info.value.flags["tile_lost"]
        backend.write_reg(Reg.CONTROL, Control.CLEAR)
        assert not backend.read_reg(Reg.STATUS) >> isa.STATUS_BITS["row_lost"] & 1


# ------------------------------------------------------------- START, seen from the bus

# A 2 x 2 Trainer for the tests that drive its bus cycle by cycle in Amaranth's simulator
SMALL = Geometry(side=2, act_depth=64, wgt_depth=64, err_depth=64, code_depth=64,
                 prog_depth=16, label_depth=16)


def _small_trainer():
    return Trainer(SMALL, bank_depth=32, mac_options={"multiplier": "dsp"})  # no Instance here


def _small_addr(region, word=0, chunk=0):
    return isa.bus_address(region, word, chunk, SMALL.word_bits(region))


async def _bus_access(ctx, dut, address, data=None):
    """One bus cycle: a write of ``data``, or a read (its word comes READ_LATENCY later)."""
    ctx.set(dut.bus.addr, address)
    ctx.set(dut.bus.w_data, data or 0)
    ctx.set(dut.bus.w_en, data is not None)
    ctx.set(dut.bus.r_en, data is None)
    await ctx.tick()
    ctx.set(dut.bus.w_en, 0)
    ctx.set(dut.bus.r_en, 0)


async def _bus_read(ctx, dut, address):
    """A read bus cycle, then the READ_LATENCY - 1 cycles to its word; returns the word."""
    await _bus_access(ctx, dut, address)
    await ctx.tick().repeat(Trainer.READ_LATENCY - 1)
    return ctx.get(dut.bus.r_data)


def test_start_is_busy_and_refuses_memory_writes_from_the_next_bus_cycle():
    """The START strobe is registered after the bus decode (one cycle before the sequencer
    leaves IDLE); from the very next bus cycle the host must still see STATUS.busy, and a
    memory write there must be refused with access_error, not lost to the datapath's port.
    Amaranth's simulator, one bus access per cycle; the program is PROG[0] = 0, an END."""
    from amaranth.sim import Simulator

    dut = _small_trainer()
    got = {}
    addr = _small_addr

    async def access(ctx, address, data=None):
        await _bus_access(ctx, dut, address, data)

    async def read_after(ctx):              # access() has ticked once since r_en
        await ctx.tick().repeat(Trainer.READ_LATENCY - 1)
        return ctx.get(dut.bus.r_data)

    async def bench(ctx):
        await access(ctx, addr(Region.REGS, Reg.CONTROL), 1)
        await access(ctx, addr(Region.REGS, Reg.STATUS))
        got["status"] = await read_after(ctx)
        await ctx.tick().repeat(40)
        await access(ctx, addr(Region.REGS, Reg.STATUS))
        got["status_end"] = await read_after(ctx)
        await access(ctx, addr(Region.REGS, Reg.CONTROL), 1)
        await access(ctx, addr(Region.ACT, 3), 0x5A)
        await ctx.tick().repeat(40)
        await access(ctx, addr(Region.REGS, Reg.STATUS))
        got["status_write"] = await read_after(ctx)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    bits = isa.STATUS_BITS
    assert got["status"] >> bits["busy"] & 1, hex(got["status"])
    assert got["status_end"] == 1 << bits["done"], hex(got["status_end"])
    assert got["status_write"] >> bits["access_error"] & 1, hex(got["status_write"])
    assert not got["status_write"] >> bits["busy"] & 1


def test_a_host_write_reads_back_from_the_next_bus_cycle_without_a_collision():
    """The memories register a write once more in front of their blocks (registered_ports):
    a host write lands one cycle after the bus decode; a read passes one more register too
    (the read enable's copy beside each bank), so a read in the very next bus cycle reads
    after the write: it sees the new word and STATUS.collision stays clear (docs section 7).
    Amaranth's simulator, one bus access per cycle."""
    from amaranth.sim import Simulator

    dut = _small_trainer()
    got = {}
    addr = _small_addr

    async def access(ctx, address, data=None):
        await _bus_access(ctx, dut, address, data)

    async def read(ctx, address):
        return await _bus_read(ctx, dut, address)

    async def bench(ctx):
        # (region, word, its 32-bit chunks in order: the last one writes the word)
        prog = [0x100 + c for c in range(isa.chunks_of(SMALL.word_bits(Region.PROG)))]
        for region, word, chunks in ((Region.ACT, 3, [0x5A]), (Region.ERR, 5, [0x1234, 0x5]),
                                     (Region.WGT, 2, [0x789, 0x6]), (Region.CODE, 7, [0x3]),
                                     (Region.LABEL, 1, [0x42]), (Region.PROG, 2, prog)):
            assert len(chunks) == isa.chunks_of(SMALL.word_bits(region))
            for c, value in enumerate(chunks):
                await access(ctx, addr(region, word, c), value)
            # the very next bus cycle
            got[region, "next"] = await read(ctx, addr(region, word, len(chunks) - 1))
        got["status"] = await read(ctx, addr(Region.REGS, Reg.STATUS))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got[Region.ACT, "next"] == 0x5A
    assert got[Region.ERR, "next"] == 0x5
    assert got[Region.WGT, "next"] == 0x6
    assert got[Region.CODE, "next"] == 0x3
    assert got[Region.LABEL, "next"] == 0x42
    assert got[Region.PROG, "next"] == 0x100 + isa.chunks_of(SMALL.word_bits(Region.PROG)) - 1
    assert got["status"] == 0, hex(got["status"])


def test_a_memory_collision_reaches_status_and_is_cleared(monkeypatch):
    """STATUS.collision reaches the host: the host cannot make a memory's ports collide (the
    test above), so a stand-in BankedMemory also reports one on every write to word 3 of any
    memory.  A write to word 2 leaves the flag clear, a write to word 3 sets it (sticky),
    CONTROL bit 1 clears it.  (Every other Trainer run checks it stays low.)"""
    from amaranth import Signal
    from amaranth.sim import Simulator

    import hw.trainers.trainer.top
    from hw.memory.banked_memory import BankedMemory

    class _Colliding(BankedMemory):
        def elaborate(self, platform):
            port, inner = self.collision, Signal(name="watch")
            self.collision = inner               # the watch drives a signal of its own
            try:
                m = super().elaborate(platform)
            finally:
                self.collision = port
            m.d.comb += port.eq(inner | (self.wr.en & (self.wr.addr == 3)))
            return m

    monkeypatch.setattr(hw.trainers.trainer.top, "BankedMemory", _Colliding)
    dut = _small_trainer()
    got = {}
    status = _small_addr(Region.REGS, Reg.STATUS)

    async def bench(ctx):
        await _bus_access(ctx, dut, _small_addr(Region.ACT, 2), 0x11)
        got["word2"] = await _bus_read(ctx, dut, status)
        await _bus_access(ctx, dut, _small_addr(Region.ACT, 3), 0x22)
        await ctx.tick().repeat(4)
        got["word3"] = await _bus_read(ctx, dut, status)
        got["sticky"] = await _bus_read(ctx, dut, status)
        await _bus_access(ctx, dut, _small_addr(Region.REGS, Reg.CONTROL), 2)
        got["cleared"] = await _bus_read(ctx, dut, status)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    bit = 1 << isa.STATUS_BITS["collision"]
    assert got["word2"] == 0, hex(got["word2"])
    assert got["word3"] == got["sticky"] == bit, (hex(got["word3"]), hex(got["sticky"]))
    assert got["cleared"] == 0, hex(got["cleared"])


def test_a_clear_shows_in_status_from_the_next_bus_cycle():
    """CONTROL bit 1 loads a clear flip-flop (the decode stays off the sticky flags'
    enables), which clears the flags one cycle later; STATUS must still read them as cleared
    in the very next bus cycle.  Amaranth's simulator, one bus access per cycle."""
    from amaranth.sim import Simulator

    dut = _small_trainer()
    got = {}

    async def read(ctx, address):
        return await _bus_read(ctx, dut, address)

    async def bench(ctx):
        status = _small_addr(Region.REGS, Reg.STATUS)
        await _bus_access(ctx, dut, _small_addr(Region.ACT, SMALL.act_depth + 3))  # refused
        got["set"] = await read(ctx, status)
        await _bus_access(ctx, dut, _small_addr(Region.REGS, Reg.CONTROL), 2)
        got["next"] = await read(ctx, status)
        got["later"] = await read(ctx, status)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    bit = 1 << isa.STATUS_BITS["access_error"]
    assert got["set"] & bit, hex(got["set"])
    assert got["next"] == got["later"] == 0, (hex(got["next"]), hex(got["later"]))


def test_reads_in_consecutive_bus_cycles_each_return_their_own_word():
    """The bus allows pipelined reads (r_en high in consecutive cycles, each word
    READ_LATENCY cycles after its r_en; hw/link/host_link.py BusSignature).  Words and chunks of
    every memory and a register, read back to back, each in its own output cycle; the
    region and chunk differ from one read to the next.  Amaranth's simulator."""
    from amaranth.sim import Simulator

    dut = _small_trainer()
    got = {}
    addr = _small_addr
    nprog = isa.chunks_of(SMALL.word_bits(Region.PROG))
    words = {(Region.ACT, 3): [0x5A], (Region.ACT, 4): [0x33], (Region.ERR, 5): [0x1234, 0x5],
             (Region.WGT, 2): [0x789, 0x6], (Region.CODE, 7): [0x3], (Region.LABEL, 1): [0x42],
             (Region.PROG, 2): [0x100 + c for c in range(nprog)],
             (Region.PROG, 3): [0x200 + c for c in range(nprog)]}
    reads = [(addr(r, w, c), v) for (r, w), chunks in words.items() for c, v in enumerate(chunks)]
    # interleave so that consecutive reads differ in region, word and chunk
    regs = [(Reg.ID, isa.MAGIC), (Reg.ACT_DEPTH, SMALL.act_depth), (7, 0),
            (Reg.PROG_DEPTH, SMALL.prog_depth), (Reg.STATUS, 0), (40, 0), (Reg.SIDE, SMALL.side),
            (Reg.D_W_WIDTH, SMALL.d_w_width), (Reg.PROG_START, 0), (8 + 32, 0)]
    reads = reads[::2] + [(addr(Region.REGS, r), v) for r, v in regs] + reads[1::2]
    reads += [(addr(Region.PROG, 2, c), 0x100 + c) for c in reversed(range(nprog))]

    async def bench(ctx):
        for (region, word), chunks in words.items():
            for c, value in enumerate(chunks):
                await _bus_access(ctx, dut, addr(region, word, c), value)
        await ctx.tick().repeat(4)
        lat = Trainer.READ_LATENCY
        for step in range(len(reads) + lat):
            if step < len(reads):
                ctx.set(dut.bus.addr, reads[step][0])
            ctx.set(dut.bus.r_en, step < len(reads))
            await ctx.tick()
            if 0 <= step + 1 - lat < len(reads):
                got[step + 1 - lat] = ctx.get(dut.bus.r_data)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    want = {i: value for i, (_, value) in enumerate(reads)}
    assert {i: hex(v) for i, v in got.items()} == {i: hex(v) for i, v in want.items()}
