"""The memories, their lanes, the geometry of a trainer and the host bus's address map.

Memories
--------
Every data memory holds words of ``S`` lanes (``S`` = ``Geometry.side``), lane 0 in the low
bits, lanes two's complement (CODE and LABEL unsigned):

========  ==============  ================================================================
memory    lane            holds
========  ==============  ================================================================
``ACT``   ``act_width``   inputs, activations and feature maps (int8) in two layouts and the
                          local errors feature-major (9 bits: ``LOSS_ERROR_WIDTH``); operand A
``WGT``   ``wgt_width``   weights (every layer; the local classifiers also transposed; the
                          average pools' constant identity)
``ERR``   ``err_width``   local errors and back-propagated errors, sample-major
``CODE``  ``CODE_WIDTH``  NITRO-ReLU codes (:class:`hw.contract.values.ReluCode`)
``LABEL`` ``LABEL_WIDTH`` one label per word (the true class of sample m at address m;
                          ``PAD_LABEL`` marks a padding sample)
``PROG``  --              the program, one instruction per word (``INSTRUCTION_BITS``)
========  ==============  ================================================================

Host bus (32-bit words; hw/link/host_link.py's ``BusSignature``)
----------------------------------------------------------------
``addr = region << REGION_SHIFT | word << chunk_bits(memory) | chunk``: a memory word of
``W`` bits is ``ceil(W/32)`` chunks, chunk 0 the low 32 bits.  Writing chunks ``0 .. n-2``
stages them; writing chunk ``n-1`` writes the whole word.  A word's chunk addresses are
a power of two apart (``1 << chunk_bits``); writing one of its unused chunk addresses
(``n .. 2**chunk_bits - 1``, e.g. the fourth of a 72-bit word) changes nothing, so a run of
words is one burst with zero chunks in those places (:func:`bus_writes`).  Reading any chunk
returns it (an unused one reads 0), a core's ``READ_LATENCY`` cycles later.  Memories may be read or written only while the
trainer is idle; an access while it runs, or beyond a memory's depth, is dropped and sets
``STATUS.access_error``.  Registers (region ``REGS``) are in hw/contract/registers.py.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields

import numpy as np

from .isa import ADDRESS_WIDTH, INSTRUCTION_BITS
from .values import CODE_WIDTH, LABEL_WIDTH, PAD_LABEL
from .widths import ACC_WIDTH, BACKERR_WIDTH, LOSS_ERROR_WIDTH, WEIGHT_WIDTH

__all__ = [
    "Region", "DATA_REGIONS", "REGION_SHIFT", "BUS_ADDR_WIDTH", "Geometry", "check_geometry",
    "lane_width", "lane_signed", "signed_range", "pack_word", "unpack_word", "pack_lanes",
    "unpack_lanes", "chunks_of", "chunk_bits_of", "bus_address", "bus_writes", "bus_read_span",
    "words_from_bus",
]

REGION_SHIFT = 20            # bus address bits below the region number
BUS_ADDR_WIDTH = 24


class Region(enum.IntEnum):
    REGS = 0
    PROG = 1
    ACT = 2
    WGT = 3
    ERR = 4
    CODE = 5
    LABEL = 6


#: the memories that hold data (every region but the registers and the program)
DATA_REGIONS = (Region.ACT, Region.WGT, Region.ERR, Region.CODE, Region.LABEL)


@dataclass(frozen=True)
class Geometry:
    """What a trainer instance offers: the tile side ``S``, memory depths (words) and lane
    widths (bits).  The host reads it back from the RO registers (:meth:`from_registers`)."""
    side: int = 8
    act_depth: int = 16384
    wgt_depth: int = 16384
    err_depth: int = 2048
    code_depth: int = 2048
    label_depth: int = 256
    prog_depth: int = 64
    act_width: int = LOSS_ERROR_WIDTH      # activations (8 bits) and loss errors (9 bits)
    wgt_width: int = WEIGHT_WIDTH
    err_width: int = BACKERR_WIDTH         # loss errors and back-propagated errors
    acc_width: int = ACC_WIDTH
    divisor_max: int = 2 ** 14 - 1         # the largest Scaler divisor (fan-in)
    d_g_width: int = 41                    # bits of the SGD divisor lr_inv * amp
    d_w_width: int = 21                    # bits of the decay divisor

    def replace(self, **changes) -> "Geometry":
        return Geometry(**{**self.as_dict(), **changes})

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def word_bits(self, region: int) -> int:
        region = Region(region)
        if region == Region.REGS:
            return 32
        if region == Region.PROG:
            return INSTRUCTION_BITS
        if region == Region.LABEL:
            return LABEL_WIDTH
        return self.side * lane_width(self, region)

    def depth(self, region: int) -> int:
        return {
            Region.PROG: self.prog_depth, Region.ACT: self.act_depth,
            Region.WGT: self.wgt_depth, Region.ERR: self.err_depth,
            Region.CODE: self.code_depth, Region.LABEL: self.label_depth,
        }[Region(region)]

    def registers(self) -> dict[int, int]:
        """The RO geometry registers' values (``{Reg: value}``)."""
        from .registers import GEOMETRY_REGISTERS
        return {reg: getattr(self, name) for reg, name in GEOMETRY_REGISTERS.items()}

    @classmethod
    def from_registers(cls, regs: dict[int, int]) -> "Geometry":
        from .registers import GEOMETRY_REGISTERS
        return cls(**{name: regs[reg] for reg, name in GEOMETRY_REGISTERS.items()})


def check_geometry(geometry: Geometry, *, min_side: int = 2) -> None:
    """Raise ``ValueError`` if no trainer can be built for ``geometry``: a side below
    ``min_side``, a depth outside ``1 .. 2**ADDRESS_WIDTH`` (the programs' addresses), ACT
    lanes narrower than the loss error, LABEL deeper than its sample index or a memory beyond
    its bus window."""
    g = geometry
    if g.side < min_side:
        raise ValueError(f"the array side must be at least {min_side}")
    for name in ("act_depth", "wgt_depth", "err_depth", "code_depth", "label_depth",
                 "prog_depth"):
        depth = getattr(g, name)
        if not 1 <= depth <= 2 ** ADDRESS_WIDTH:
            raise ValueError(f"{name} = {depth} outside 1 .. 2**{ADDRESS_WIDTH}")
    if g.act_width < LOSS_ERROR_WIDTH:
        raise ValueError(f"ACT lanes need at least {LOSS_ERROR_WIDTH} bits (local errors)")
    if g.label_depth > PAD_LABEL + 1:
        raise ValueError(f"label_depth is at most {PAD_LABEL + 1} ({LABEL_WIDTH}-bit sample "
                         "index in LABEL)")
    for region in Region:
        if region != Region.REGS:
            words = g.depth(region) << chunk_bits_of(g.word_bits(region))
            if words > 1 << REGION_SHIFT:
                raise ValueError(f"{region.name} does not fit its bus window")


def lane_width(geometry: Geometry, region: Region) -> int:
    """Bits of one lane (one value) of ``region``'s words."""
    return {Region.ACT: geometry.act_width, Region.WGT: geometry.wgt_width,
            Region.ERR: geometry.err_width, Region.CODE: CODE_WIDTH,
            Region.LABEL: LABEL_WIDTH}[Region(region)]


def lane_signed(region: Region) -> bool:
    return Region(region) not in (Region.CODE, Region.LABEL)


def signed_range(width: int) -> tuple[int, int]:
    """The smallest and largest value of a ``width``-bit two's complement number."""
    return -(1 << (width - 1)), (1 << (width - 1)) - 1


def pack_word(values, width: int) -> int:
    """Lane values (lane 0 first) packed into one word, two's complement, range-checked."""
    return pack_lanes(np.asarray([values]), width)[0]


def unpack_word(word: int, width: int, lanes: int, signed: bool = True) -> list[int]:
    return [int(v) for v in unpack_lanes([word], width, lanes, signed)[0]]


def pack_lanes(values, width: int, what: str = "lane value", signed: bool = True) -> list[int]:
    """Rows of lane values ``(n, S)`` -> ``n`` packed words (vectorised over the words);
    raises OverflowError naming ``what`` if a value does not fit ``width`` bits."""
    v = np.asarray(values, dtype=np.int64)
    lo, hi = signed_range(width) if signed else (0, (1 << width) - 1)
    if v.size and (v.min() < lo or v.max() > hi):
        bad = int(v.min()) if v.min() < lo else int(v.max())
        raise OverflowError(f"{what}: {bad} does not fit {width} "
                            f"{'signed' if signed else 'unsigned'} bits")
    u = (v & ((1 << width) - 1)).astype(object)
    words = np.zeros(v.shape[0], dtype=object)
    for lane in range(v.shape[1]):
        words = words + (u[:, lane] << (lane * width))
    return [int(w) for w in words]


def unpack_lanes(words, width: int, lanes: int, signed: bool = True) -> np.ndarray:
    """Packed words -> ``(n, lanes)`` int64 lane values (two's complement if ``signed``)."""
    w = np.array([int(x) for x in words], dtype=object)
    out = np.zeros((len(w), lanes), dtype=np.int64)
    mask, sign = (1 << width) - 1, 1 << (width - 1)
    for lane in range(lanes):
        u = ((w >> (lane * width)) & mask).astype(np.int64)
        out[:, lane] = u - ((u & sign) << 1) if signed else u
    return out


def chunks_of(width_bits: int) -> int:
    """32-bit chunks of a word of ``width_bits``."""
    return max(1, -(-width_bits // 32))


def chunk_bits_of(width_bits: int) -> int:
    """Address bits taken by the chunk index of a word of ``width_bits``."""
    return (chunks_of(width_bits) - 1).bit_length()


def bus_address(region: int, word: int = 0, chunk: int = 0, word_bits: int = 32) -> int:
    cb = chunk_bits_of(word_bits)
    offset = (word << cb) | chunk
    if offset >= 1 << REGION_SHIFT:
        raise ValueError(f"word {word} is beyond the bus window of region {Region(region).name}")
    return (int(region) << REGION_SHIFT) | offset


def bus_writes(geometry: Geometry, region: int, base: int, words,
               pad: bool = True) -> list[tuple[int, list[int]]]:
    """Memory words (ints of the region's word width) from word ``base`` on, as bus writes
    ``[(bus_addr, [32-bit chunks...]), ...]``: one run, with a zero at each unused chunk
    address of a word whose chunks do not tile them (a 72-bit word: 3 chunks and a zero), which
    the cores ignore.  ``pad=False``: one run per such word instead (no unused address
    written)."""
    wb = geometry.word_bits(region)
    n, stride = chunks_of(wb), 1 << chunk_bits_of(wb)
    mask = 0xFFFF_FFFF
    if n == stride or pad:
        flat = [(int(w) >> (32 * c)) & mask if c < n else 0
                for w in words for c in range(stride)]
        return [(bus_address(region, base, 0, wb), flat)] if flat else []
    return [(bus_address(region, base + i, 0, wb), [(int(w) >> (32 * c)) & mask for c in range(n)])
            for i, w in enumerate(words)]


def bus_read_span(geometry: Geometry, region: int, base: int, count: int) -> tuple[int, int]:
    """``(bus_addr, bus_words)`` to read ``count`` memory words from ``base`` in one burst."""
    wb = geometry.word_bits(region)
    return bus_address(region, base, 0, wb), count << chunk_bits_of(wb)


def words_from_bus(geometry: Geometry, region: int, raw, count: int) -> list[int]:
    """The memory words in a burst read by :func:`bus_read_span`."""
    wb = geometry.word_bits(region)
    n, stride = chunks_of(wb), 1 << chunk_bits_of(wb)
    return [sum(int(raw[i * stride + c]) << (32 * c) for c in range(n)) for i in range(count)]
