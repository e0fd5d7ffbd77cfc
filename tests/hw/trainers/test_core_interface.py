"""Every trainer core declares what the boards, the simulator and the backends rely on
(hw/trainers/core.py): its ports, its read latency, its multiply-accumulates per cycle, its
memories and the memories a board build treats specially. Checked on the elaborated cores, so a
renamed submodule or a region without a memory fails here, not in a 40-minute board build.
"""

from __future__ import annotations

import fnmatch

import pytest
from amaranth.hdl import Fragment
from amaranth.lib.wiring import Flow

from hw.contract import (BUS_ADDR_WIDTH, DATA_REGIONS, GEOMETRY_REGISTERS, OVERFLOW_BITS, Geometry,
                         Op, Reg, Region, empty_instruction)
from hw.trainers.core import TrainerCore
from hw.trainers.serial_trainer import SerialTrainer
from hw.trainers.trainer import Trainer

SMALL = Geometry(side=2, act_depth=256, wgt_depth=256, err_depth=64, code_depth=64)
#: a PROG too deep for the Trainer's distributed RAM
DEEP_PROG = SMALL.replace(prog_depth=Trainer.DISTRIBUTED_PROG_DEPTH * 2)
SERIAL = Geometry(side=2, act_depth=1024, wgt_depth=1024, err_depth=256, code_depth=512,
                  label_depth=256, prog_depth=32, wgt_width=16, acc_width=36, d_g_width=36)

CORES = {
    "trainer": lambda: Trainer(SMALL, bank_depth=64),
    "trainer_deep_prog": lambda: Trainer(DEEP_PROG, bank_depth=64),
    "trainer_ecp5": lambda: Trainer(SMALL, bank_depth=64, mac_options={"multiplier": "ecp5_dsp"},
                                    memory_block="dp16kd"),
    "serial": lambda: SerialTrainer(SERIAL),
    "serial_spram": lambda: SerialTrainer(SERIAL, memory_block="spram"),
}


@pytest.fixture(scope="module", params=sorted(CORES))
def elaborated(request):
    core = CORES[request.param]()
    fragment = Fragment.get(core, None)
    return core, {name for _, name, _ in fragment.subfragments}


def test_is_a_trainer_core(elaborated):
    core, _ = elaborated
    assert isinstance(core, TrainerCore)


def test_ports(elaborated):
    core, _ = elaborated
    members = core.signature.members
    assert set(members) == {"bus", "busy", "overflow"}
    assert members["busy"].flow == Flow.Out and len(core.busy) == 1
    assert members["overflow"].flow == Flow.Out
    assert len(core.overflow) == len(OVERFLOW_BITS)
    bus = members["bus"].signature
    assert bus.read_latency == type(core).READ_LATENCY
    assert len(core.bus.addr) == BUS_ADDR_WIDTH


def test_constant_registers(elaborated):
    core, _ = elaborated
    registers = core.constant_registers()
    assert set(GEOMETRY_REGISTERS) | {Reg.MACS} <= set(registers)
    macs = registers[Reg.MACS]
    assert macs == type(core).mac_elements(core.geometry) >= 1
    assert macs == (core.geometry.side ** 2 if isinstance(core, Trainer) else 1)


def test_every_region_has_its_memory(elaborated):
    core, submodules = elaborated
    regions = type(core).region_memories(core.geometry)
    assert set(regions) == {Region.PROG, *DATA_REGIONS}
    for region, (width, depth) in regions.items():
        assert f"mem_{region.name.lower()}" in submodules
        assert width >= 1 and depth >= core.geometry.depth(region)


def test_special_memories_exist(elaborated):
    """The names a board build gives Yosys (boards/build.py) match the elaborated core: a
    pattern that matches nothing would silently drop the attribute."""
    core, submodules = elaborated
    for pattern in core.collision_free_memories:
        assert fnmatch.filter(submodules, pattern), pattern
    for path in core.distributed_memories:
        assert path in submodules, path
    regions = type(core).distributed_regions(core.geometry)
    assert {f"mem_{r.name.lower()}" for r in regions} <= set(core.distributed_memories)
    assert set(type(core).SPRAM_REGIONS) <= set(DATA_REGIONS)


def test_trainer_prog_in_distributed_ram_only_when_shallow():
    assert Region.PROG in Trainer.distributed_regions(SMALL)
    assert Region.PROG not in Trainer.distributed_regions(DEEP_PROG)


def test_program_cycles():
    """The SerialTrainer has an exact cycle model (tests/support/conformance.py checks it
    against the gateware); the Trainer has none."""
    end = empty_instruction(Op.END)
    assert Trainer.program_cycles(SMALL, [end]) is None
    cycles = SerialTrainer.program_cycles(SERIAL, [end])
    assert isinstance(cycles, int) and cycles >= 1


@pytest.mark.parametrize("cls", [Trainer, SerialTrainer])
@pytest.mark.parametrize("bad", [{"act_depth": 0}, {"prog_depth": 2 ** 17}, {"act_width": 8},
                                 {"side": 1}])
def test_refuses_a_bad_geometry(cls, bad):
    with pytest.raises(ValueError):
        cls(SMALL.replace(**bad))
