"""What a trainer core is: the interface the boards, the simulator and the backends use.

A trainer core runs the contract's programs (hw/contract/isa.py) from its memories, which the
host fills and reads over the host bus (hw/contract/memory_map.py) while the core is idle.
Every core of the project derives from :class:`TrainerCore`, so the rest of the project never
probes a core for what it offers: the class says it (tests/hw/trainers/test_core_interface.py
checks it on every core).
"""

from __future__ import annotations

from amaranth import Cat, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.contract import (BUS_ADDR_WIDTH, CNN_FIELDS, DATA_REGIONS, INSTRUCTION_FIELDS,
                         OVERFLOW_BITS, Geometry, Reg, Region, check_geometry)
from hw.host_bus import BusSignature

__all__ = ["TrainerCore", "instruction_layout", "uses_cnn_fields"]


def instruction_layout() -> data.StructLayout:
    """The instruction word (``hw.contract.INSTRUCTION_FIELDS``, least significant first)."""
    return data.StructLayout({name: unsigned(width) for name, width in INSTRUCTION_FIELDS})


def uses_cnn_fields(ins):
    """1 when the instruction ``ins`` (a view of :func:`instruction_layout`) has a non-zero
    field of ``hw.contract.CNN_FIELDS`` (the spatial levels: a core that does not
    implement them, ``RUNS_CNN`` False, stops with ``op_error`` on such an instruction)."""
    return Cat(*(getattr(ins, name) for name in CNN_FIELDS)).any()


class TrainerCore(wiring.Component):
    """Base class of the trainer cores.

    Ports
    -----
    bus : In(BusSignature(BUS_ADDR_WIDTH, READ_LATENCY)) -- the host's access
    busy : Out(1) -- a program is running
    overflow : Out(3) -- the OVERFLOW register (``OVERFLOW_BITS``)

    Class attributes and methods a core defines (the defaults suit a core of plain memories):
    """

    #: cycles from ``bus.r_en`` to the word on ``bus.r_data``
    READ_LATENCY: int = 1
    #: the core runs CNN programs: the spatial levels (``hw.contract.CNN_FIELDS``) and the ops
    #: POOL, POOL_CODE and SCALE; a core without them stops on such an instruction with
    #: ``op_error``, and the host refuses a CNN for it (``nitrod.compiler.hardware_refusal``)
    RUNS_CNN: bool = False
    #: the regions whose memory may be iCE40 SPRAM (boards/: the fit check)
    SPRAM_REGIONS: tuple = ()
    #: the memories (module paths below the core) whose read never meets a write of the same
    #: word in the same cycle; the board build tells Yosys (no collision logic behind them)
    collision_free_memories: tuple = ()

    def __init__(self, geometry: Geometry):
        check_geometry(geometry)
        self.geometry = geometry
        super().__init__({
            "bus": In(BusSignature(BUS_ADDR_WIDTH, read_latency=self.READ_LATENCY)),
            "busy": Out(1),
            "overflow": Out(len(OVERFLOW_BITS)),
        })

    @classmethod
    def mac_elements(cls, geometry: Geometry) -> int:
        """Multiply-accumulates per cycle (the bound of a program's cycles is its useful
        MACs over this); register ``Reg.MACS`` reads it."""
        raise NotImplementedError

    def constant_registers(self) -> dict:
        """The read-only registers: the geometry and ``Reg.MACS``."""
        return {**self.geometry.registers(), Reg.MACS: self.mac_elements(self.geometry)}

    @classmethod
    def region_memories(cls, geometry: Geometry) -> dict:
        """``{region: (word_bits, depth)}`` of the memories as the host addresses them."""
        return {r: (geometry.word_bits(r), geometry.depth(r))
                for r in (Region.PROG, *DATA_REGIONS)}

    @classmethod
    def distributed_regions(cls, geometry: Geometry) -> tuple:
        """The regions whose memory goes to distributed RAM on the ECP5 with ``geometry``
        (the boards' first fit check, on the geometry alone, uses this)."""
        return ()

    @property
    def distributed_memories(self) -> tuple:
        """The memories (module paths below the core) for distributed RAM on the ECP5."""
        return ()

    @classmethod
    def program_cycles(cls, geometry: Geometry, program) -> int | None:
        """Cycles a run of ``program`` (instruction dicts from PROG_START on, up to its
        ``END``) takes, what ``Reg.CYCLES`` reads after it; ``None`` if the core has no exact
        cycle model."""
        return None
