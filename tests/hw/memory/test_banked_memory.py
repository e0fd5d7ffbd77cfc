"""BankedMemory (hw/memory/banked_memory.py) against a Python model, in the Amaranth simulator, and
with ``block="dp16kd"`` (hw/vendor/ecp5_bram.py) in Verilator with the block's model.

A reader's register, :meth:`BankedMemory.registered`, must hold exactly what a register loaded
on the same enable from a single block RAM read port would hold: the word at the address of the
last cycle with ``rd.en``, taken in a cycle with the reader's enable.  Random reads, writes and
enables cover every bank, a last bank shorter than the others, and out-of-range writes.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.hdl import Fragment
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hw.memory.banked_memory import BankedMemory
from hw.replica import replicas
from sim.harness import run_cocotb, verilog_of
from tests.support import BENCHES

TB_CYCLES = BENCHES / "tb_cycles.py"


class _Reader(wiring.Component):
    """A BankedMemory and one reader register loaded on ``take``; with ``copies``, loaded one
    cycle after ``take``, each bank's register on a copy of its own (hw/replica.py); with
    ``copies="shared"`` the same, through the memory's shared bank registers
    (``share_registers``, their enables driven by the copies).  With ``late_en`` the memory
    registers ``r_en`` (``registered_read_enable``): the read happens a cycle after it.  With
    ``group`` the reader selects the bank in two steps (``registered(..., group=)``): its word
    is one cycle later; with ``staged`` too, its group registers load on ``take`` itself
    (``group_en``: with ``copies``, a copy per group), one more stage advancing with it."""

    def __init__(self, width, depth, bank_depth, copies=False, registered_ports=False,
                 block="memory", late_en=False, group=None, staged=False):
        self.copies, self.group, self.staged = copies, group, staged
        self.mem = BankedMemory(width, depth, bank_depth=bank_depth,
                                registered_ports=registered_ports,
                                registered_read_enable=late_en, block=block)
        aw = self.mem.addr_width
        super().__init__({
            "w_addr": In(aw), "w_data": In(width), "w_en": In(1),
            "r_addr": In(aw), "r_en": In(1), "r_load": In(1), "take": In(1),
            "word": Out(width), "collision": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = self.mem
        m.d.comb += [mem.wr.addr.eq(self.w_addr), mem.wr.data.eq(self.w_data),
                     mem.wr.en.eq(self.w_en), mem.rd.addr.eq(self.r_addr),
                     mem.rd.en.eq(self.r_en),
                     self.collision.eq(mem.collision)]
        if self.mem.registered_ports:
            m.d.comb += mem.rd.load.eq(self.r_load)
        group_en = None
        if self.copies:
            take = Signal()
            m.d.sync += take.eq(self.take)
            if self.staged:
                group_en = replicas(m, self.take, mem.groups(self.group), "group_take")
        else:
            take = self.take
            if self.staged:
                group_en = take
        if self.copies == "shared":
            bank_en = mem.share_registers(m, "shared")
            m.d.comb += [en.eq(c) for en, c in
                         zip(bank_en, replicas(m, self.take, mem.banks, "take"))]
            word = mem.registered(m, take, "reader", group=self.group, group_en=group_en)
        elif self.copies:
            word = mem.registered(m, take, "reader", replicas(m, self.take, mem.banks, "take"),
                                  group=self.group, group_en=group_en)
        else:
            word = mem.registered(m, take, "reader", group=self.group, group_en=group_en)
        m.d.comb += self.word.eq(word)
        return m


INPUTS = ("w_en", "w_addr", "w_data", "r_en", "r_addr", "take", "r_load")


def _stimulus(rng, depth, aw, width, cycles):
    """Random cycles (one array per input of ``_Reader``): reads, writes (some beyond
    ``depth``), enables, forced collisions; half the reads go to a word written before."""
    stim = {name: [] for name in INPUTS}
    written = []
    for _ in range(cycles):
        w_en = rng.random() < 0.4
        w_addr = rng.randrange(1 << aw)
        r_en = rng.random() < 0.6
        r_addr = (rng.choice(written) if written and rng.random() < 0.5
                  else rng.randrange(depth))
        load = rng.random() < 0.5
        if rng.random() < 0.05:      # force some collisions
            w_en, r_en, w_addr = True, True, r_addr
            # registered: both registers take the address; a read next cycle meets it
            load = True
        if w_en and w_addr < depth:
            written.append(w_addr)
        for name, value in (("w_en", w_en), ("w_addr", w_addr),
                            ("w_data", rng.randrange(1 << width)), ("r_en", r_en),
                            ("r_addr", r_addr), ("take", rng.random() < 0.5), ("r_load", load)):
            stim[name].append(int(value))
    return {name: np.array(values, dtype=np.int64) for name, values in stim.items()}


def _expected(stim, depth, copies, registered_ports, late_en=False, group=None,
              staged=False):
    """Per cycle, after its clock edge: ``(address, word)`` the reader's register holds
    (``(None, None)`` before any read, word ``None``: never written, any value may be read)
    and the collision output.  ``late_en``: the read enable is registered (the block reads
    in the cycle after ``r_en``).  ``group``: the reader's word is that of a register loaded
    in the cycle after its enable from the register above (``staged``: loaded on its
    enable)."""
    model = [None] * depth
    port = (None, None)          # (address, word) a block RAM's read port would show now
    reg = (None, None)           # (address, word) the reader's register would hold now
    collided = [False, False]    # collisions of the last two cycles
    take_before = False          # `take` of the cycle before (with copies)
    addr_reg = 0                 # the read address register (registered_ports)
    w_late = (False, 0, 0)       # the write registered in the last cycle (registered_ports)
    r_en_before = 0              # r_en of the cycle before (late_en)
    regs, collisions = [], []
    for i in range(len(stim["w_en"])):
        w_en, w_addr, w_data, r_en, r_addr, take, load = (int(stim[n][i]) for n in INPUTS)
        if late_en:
            r_en, r_en_before = r_en_before, r_en
        # the edge: the reader's register takes the port's word, the port reads
        # (non-transparent: the old word), then the write lands
        if (take_before if copies else take):
            reg = port
        take_before = take
        if registered_ports:
            # the block reads the word at the address register; last cycle's write lands;
            # this cycle's enters the write register; the address register loads
            if r_en:
                port = (addr_reg, model[addr_reg] if addr_reg < depth else None)
            met = w_late[0] and r_en and w_late[1] == addr_reg
            if w_late[0] and w_late[1] < depth:
                model[w_late[1]] = w_late[2]
            w_late = (w_en, w_addr, w_data)
            if load:
                addr_reg = r_addr
        else:
            if r_en:
                port = (r_addr, model[r_addr])
            met = w_en and r_en and w_addr == r_addr
            if w_en and w_addr < depth:
                model[w_addr] = w_data
        # collision: reported two cycles after the cycle in which both ports met
        collided = [met, collided[0]]
        regs.append(reg)
        collisions.append(collided[1])
    if group:
        # the reader's enable in each cycle: take, or take of the cycle before (copies)
        take = [int(t) for t in stim["take"]]
        en = [0] + take[:-1] if copies else take
        later, word = [], (None, None)
        for i in range(len(regs)):
            if i and (en[i] if staged else en[i - 1]):
                word = regs[i - 1]
            later.append(word)
        regs = later
    return regs, collisions


def _simulate(dut, stim):
    """``dut``'s word and collision outputs after each cycle of ``stim``, in the Amaranth
    simulator."""
    words, collision_out = [], []

    async def bench(ctx):
        for i in range(len(stim["w_en"])):
            for name in INPUTS:
                ctx.set(getattr(dut, name), int(stim[name][i]))
            await ctx.tick()
            words.append(ctx.get(dut.word))
            collision_out.append(ctx.get(dut.collision))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return words, collision_out


def _check(dut, regs, collisions, words, collision_out):
    checked = {"n": 0, "banks": set(), "collisions": 0}
    for i, (reg, want, got, got_collision) in enumerate(zip(regs, collisions, words,
                                                             collision_out)):
        assert got_collision == want, f"cycle {i}: collision {got_collision}, expected {want}"
        checked["collisions"] += want
        if reg[1] is not None:
            assert got == reg[1], f"cycle {i}: read {got}, expected {reg}"
            checked["n"] += 1
            checked["banks"].add(reg[0] // dut.mem.bank_depth)
    assert checked["n"] > 300
    assert checked["collisions"] > 20
    assert len(checked["banks"]) == dut.mem.banks


@pytest.mark.parametrize("depth,bank_depth,copies,registered_ports,late_en,group", [
    (1000, 256, False, False, False, None), (64, 16, False, False, False, None),
    (48, 64, False, False, False, None), (1, 8, False, False, False, None),
    (300, 128, False, False, False, None), (300, 64, True, False, False, None),
    (1000, 256, False, True, False, None), (300, 64, True, True, False, None),
    (48, 64, False, True, False, None), (300, 64, "shared", True, False, None),
    (1000, 128, "shared", False, False, None),
    (1000, 256, False, True, True, None), (300, 64, "shared", True, True, None),
    (48, 64, True, True, True, None),
    # the bank selected in two steps: 16 banks in 4 groups, 5 banks in 2 groups (the last
    # of one bank), one group of 4, one bank, one bank per group
    (1000, 64, "shared", True, True, 4), (300, 64, True, True, False, 4),
    (1000, 256, False, False, False, 4), (48, 64, "shared", True, True, 4),
    (300, 64, False, True, True, 1)])
def test_registered_read_matches_a_single_block_ram(depth, bank_depth, copies,
                                                    registered_ports, late_en, group):
    """With ``registered_ports`` the model is a block RAM behind those registers: it reads
    the address register (loaded on ``load``), and writes land one cycle late; with
    ``late_en`` (``registered_read_enable``) it reads in the cycle after ``r_en``; with
    ``group`` the reader's word comes a cycle later."""
    width = 12
    dut = _Reader(width, depth, bank_depth, copies, registered_ports, late_en=late_en,
                  group=group)
    assert dut.mem.banks == -(-depth // min(bank_depth, 1 << max(0, (depth - 1).bit_length())))
    rng = random.Random(depth * 7 + bank_depth)
    stim = _stimulus(rng, depth, dut.mem.addr_width, width, 3000)
    words, collision_out = _simulate(dut, stim)
    _check(dut, *_expected(stim, depth, copies, registered_ports, late_en, group), words,
           collision_out)


@pytest.mark.parametrize("width,depth,bank_depth,copies,late_en,group", [
    (20, 3000, 1024, "shared", False, None),  # 1024 x 18 blocks, two per bank (both byte
                                              # enables)
    (20, 2100, 2048, "shared", True, None),   # 2048 x 9, three per bank; a last bank of 52
                                              # words; the read enable registered (a copy
                                              # per bank)
    (4, 6000, 4096, "shared", False, None),   # 4096 x 4
    (12, 300, 64, True, False, None),         # NOREG blocks, each reader's own bank registers
    (20, 5000, 512, "shared", True, 4)])      # 512 x 36, 10 banks selected in two steps
def test_dp16kd_banks_match_a_single_block_ram(width, depth, bank_depth, copies, late_en,
                                               group):
    """``block="dp16kd"`` (hw/vendor/ecp5_bram.py) in Verilator, with the block's model: the same
    reads as one block RAM (and as ``block="memory"``).  Shared bank registers are the
    blocks' own output registers (REGMODE OUTREG, loaded on OCEB)."""
    dut = _Reader(width, depth, bank_depth, copies, True, block="dp16kd", late_en=late_en,
                  group=group)
    rng = random.Random(depth * 11 + width)
    stim = _stimulus(rng, depth, dut.mem.addr_width, width, 6000)
    toplevel = (f"banked_dp16kd_{width}_{depth}_{bank_depth}_{copies}_{late_en}"
                f"_{group}").lower()
    verilog = verilog_of(dut, toplevel)
    outreg = verilog.count('"OUTREG"')
    assert verilog.count("DP16KD ") > 0 and (outreg > 0) == (copies == "shared")
    run = run_cocotb(verilog, toplevel, TB_CYCLES, vectors=stim,
                     params={"outputs": ["word", "collision"]})
    _check(dut, *_expected(stim, depth, copies, True, late_en, group),
           run.outputs["word"].tolist(), run.outputs["collision"].tolist())


@pytest.mark.parametrize("depth,bank_depth,copies,registered_ports,late_en", [
    (1000, 64, "shared", True, True), (300, 64, True, True, False),
    (1000, 256, False, False, False), (48, 64, "shared", True, True),
    (300, 64, False, True, True)])
def test_a_staged_group_select_is_one_more_stage_on_the_readers_enable(
        depth, bank_depth, copies, registered_ports, late_en):
    """``group_en``: the group registers load on the reader's enable (or on copies of it, one
    per group), so that the word is one stage further down a pipeline advancing with that
    enable, as the Trainer's engine reads (hw/trainers/trainer.py) need: 16 banks in 4 groups, 5 in 2,
    1 in 1; the reader holds its words over runs of cycles without its enable."""
    width = 12
    dut = _Reader(width, depth, bank_depth, copies, registered_ports, late_en=late_en,
                  group=4, staged=True)
    rng = random.Random(depth * 5 + bank_depth)
    stim = _stimulus(rng, depth, dut.mem.addr_width, width, 3000)
    words, collision_out = _simulate(dut, stim)
    _check(dut, *_expected(stim, depth, copies, registered_ports, late_en, 4, staged=True),
           words, collision_out)


def test_parameters_are_checked():
    with pytest.raises(ValueError):
        BankedMemory(8, 0)
    with pytest.raises(ValueError, match="group must be a power of two, got 3"):
        BankedMemory(8, 100, bank_depth=64).registered(Module(), 1, "r", group=3)
    with pytest.raises(ValueError, match="group_en needs group"):
        BankedMemory(8, 100, bank_depth=64).registered(Module(), 1, "r", group_en=1)
    with pytest.raises(ValueError, match="group_en has 1 signals for 2 groups"):
        BankedMemory(8, 300, bank_depth=64).registered(Module(), 1, "r", group=4,
                                                        group_en=[Signal()])
    with pytest.raises(ValueError, match="bank_en has 1 signals for 2 banks"):
        BankedMemory(8, 100, bank_depth=64).registered(Module(), 1, "r", [Signal()])
    with pytest.raises(ValueError):
        BankedMemory(8, 100, bank_depth=48)
    with pytest.raises(ValueError, match="block must be one of"):
        BankedMemory(8, 100, block="spram")
    with pytest.raises(ValueError, match="registered_read_enable needs registered_ports"):
        BankedMemory(8, 100, registered_read_enable=True)
    with pytest.raises(ValueError, match="holds at most 16384 words, not 32768"):
        BankedMemory(8, 20000, bank_depth=32768, block="dp16kd")
    assert BankedMemory(8, 20000, bank_depth=16384, block="dp16kd").banks == 2
    shared = BankedMemory(8, 100, bank_depth=64)
    assert len(shared.share_registers(Module(), "s")) == 2
    with pytest.raises(ValueError, match="already called"):
        shared.share_registers(Module(), "s")
    with pytest.raises(ValueError, match="shared: no bank_en"):
        shared.registered(Module(), 1, "r", [Signal(), Signal()])
    Fragment.get(shared, None)           # elaborates (and is not left unused)
    sizes = {}
    for depth, bank_depth in ((12288, 2048), (2500, 1024), (100, 2048)):
        mem = BankedMemory(8, depth, bank_depth=bank_depth)
        Fragment.get(mem, None)          # elaborates
        sizes[depth] = (mem.banks, mem.addr_width, mem.bank_sizes)
    assert sizes == {12288: (6, 14, [2048] * 6), 2500: (3, 12, [1024, 1024, 452]),
                     100: (1, 7, [100])}


def test_trainer_refuses_a_bank_depth_that_is_not_a_power_of_two():
    from hw.trainers.trainer import Trainer
    with pytest.raises(ValueError, match="bank_depth must be a power of two"):
        Trainer(bank_depth=1000)


def test_trainer_refuses_an_unknown_memory_block():
    from hw.trainers.trainer import Trainer
    with pytest.raises(ValueError, match="memory_block must be one of"):
        Trainer(memory_block="spram")
