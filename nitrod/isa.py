"""The Trainer's program format and host memory map, in pure Python (no Amaranth).

Shared by the gateware (``hw/trainer.py`` builds its layouts from these field lists), the
host-side compiler (``nitrod/compiler.py``) and the backends, so that the three agree by
construction.  docs/ARCHITECTURE.md §"Trainer" explains the dataflow.

Memories
--------
Every data memory holds words of ``S`` lanes (``S`` = the MAC array's side, rows = cols = S),
lane 0 in the low bits, lanes two's complement:

========  ====  =========================================================================
memory    lane  holds
========  ====  =========================================================================
``ACT``   9     inputs and activations (int8) in two layouts, local errors E (9 bits)
                feature-major; operand A of every product
``WGT``   18    weights (every layer; the local classifiers also transposed)
``ERR``   24    local errors E and back-propagated errors D, sample-major
``CODE``  2     NITRO-ReLU derivative codes (``hw.nitro_relu.ReluCode``), like H sample-major
``LABEL`` 8     one label per word (the true class of sample m at address m;
                ``PAD_LABEL`` = 255 marks a padding sample, whose error is forced to 0)
``PROG``  --    the program, one instruction per word (``INSTRUCTION_BITS``)
========  ====  =========================================================================

One product per instruction
---------------------------
The engine computes ``P = A-operand @ B-operand`` tile by tile on the ``S x S`` array: tile
``(tr, tc)`` beat ``k`` reads ``ACT[a_base + tr*a_tile_stride + k*a_k_stride]`` (S values: the
tile's rows) and ``B[b_base + tc*b_tile_stride + k*b_k_stride]`` (S values: the tile's
columns; ``B`` is ``WGT`` when ``b_src`` is 0, ``ERR`` when 1), ``k < k_len``; tiles run
row-major (``tr`` outer).  Each drained tile row ``i`` (S accumulators) goes through the
instruction's post-processing ``op`` on S parallel lanes.  Its *row offset* is
``off = tr*S + i + tc*tc_stride``:

* ``FORWARD``: ``h = NitroRelu(Scaler(acc, divisor), inv_slope)``; ``h`` -> ``ACT[row_base+off]``
  and the code -> ``CODE[aux_base+off]``.
* ``LOSS``: ``e = Scaler(acc, divisor) - (32 if tc*S+lane == LABEL[tr*S+i] else 0)``;
  ``e`` -> ``ERR[row_base+off]``.
* ``BACKWARD``: ``d = NitroReluBackward(acc, CODE[aux_base+off], inv_slope)`` (``acc`` must
  fit the ERR lane: else the BACKERR overflow flag); ``d`` -> ``ERR[row_base+off]``.
* ``SGD``: ``w' = SgdUpdate(WGT[row_base+off], acc, d_g, d_w)`` -> ``WGT[row_base+off]``.

With ``col_en`` the tile is also written transposed: after its S rows, column ``c`` (the
lane-``c`` values of rows ``0..S-1``, as one S-lane word) goes to
``col_base + tr*col_tr_stride + tc*S + c`` of ``ACT`` (FORWARD, LOSS) or ``WGT`` (SGD).
Masking keeps every padding value exactly 0: a lane whose column index ``tc*S + lane`` is
``>= col_len``, or a row whose index ``tr*S + i`` is ``>= row_len``, is written as 0 (its CODE
as ZERO) by every op, also in the transposed writes.  LOSS also writes 0 for a sample whose
label is ``PAD_LABEL`` (255).  The compiler allocates whole tiles and keeps operand padding 0
(NITRO-ReLU(0) is not 0, so without the masks padded neurons would train as phantom ones).

``END`` stops the program.  Programs start at the address in register ``PROG_START``.

Host bus (32-bit words, hw/host_link.py's bus)
----------------------------------------------
``addr = region << REGION_SHIFT | word << chunk_bits(memory) | chunk``: a memory word of
``W`` bits is ``ceil(W/32)`` chunks, chunk 0 the low 32 bits.  Writing chunks
``0 .. n-2`` stages them; writing chunk ``n-1`` writes the whole word.  Reading any chunk
returns it (one cycle latency).  Memories may be read or written only while the
Trainer is idle; an access while it runs is ignored and sets ``STATUS.ACCESS_ERROR``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "Op", "Region", "Reg", "PAD_LABEL", "INSTRUCTION_FIELDS", "INSTRUCTION_BITS", "MAGIC", "REGION_SHIFT",
    "STATUS_BITS", "STATUS_ERRORS", "OVERFLOW_BITS", "pack_instruction", "unpack_instruction",
    "chunks_of", "chunk_bits_of", "bus_address", "Geometry", "check_geometry", "pack_word",
    "unpack_word",
]

MAGIC = 0x4E49_5452          # "NITR"
REGION_SHIFT = 20            # bus address bits below the region number
BUS_ADDR_WIDTH = 24
ONE_HOT_VALUE = 32
PAD_LABEL = 255


class Op(enum.IntEnum):
    END = 0
    FORWARD = 1
    LOSS = 2
    BACKWARD = 3
    SGD = 4


class Region(enum.IntEnum):
    REGS = 0
    PROG = 1
    ACT = 2
    WGT = 3
    ERR = 4
    CODE = 5
    LABEL = 6


class Reg(enum.IntEnum):
    """Register word addresses in region REGS."""
    ID = 0              # RO: MAGIC
    CONTROL = 1         # WO: bit 0 start, bit 1 clear STATUS errors and OVERFLOW flags
    STATUS = 2          # RO: STATUS_BITS
    OVERFLOW = 3        # RO: OVERFLOW_BITS (sticky until CONTROL bit 1)
    CYCLES = 4          # RO: cycles of the last run, start to END
    RETIRED = 5         # RO: instructions completed by the last run (END excluded)
    PROG_START = 6      # RW: first instruction of a run
    SIDE = 8            # RO: S, the array side (rows = cols = lanes)
    ACT_DEPTH = 9       # RO: words
    WGT_DEPTH = 10
    ERR_DEPTH = 11
    CODE_DEPTH = 12
    LABEL_DEPTH = 13
    PROG_DEPTH = 14
    ACT_WIDTH = 15      # RO: lane widths in bits
    WGT_WIDTH = 16
    ERR_WIDTH = 17
    ACC_WIDTH = 18
    DIVISOR_MAX = 19    # RO: largest Scaler divisor (fan-in)
    D_G_WIDTH = 20      # RO: bits of the SGD divisor d_g (lr_inv * amp <= 2**D_G_WIDTH - 1)
    D_W_WIDTH = 21      # RO: bits of the decay divisor d_w


#: ``collision``: a memory was read and written at the same word in the same cycle (the
#: board's block RAMs do not define the word read; hw/banked_memory.py)
#: ``tile_lost``: a tile finished in the MacArray while its result bank still held the previous
#: one (ruled out by the array's flow control; the watch on it, hw/mac_array.py)
#: ``row_lost``: the post-processing lanes were offered a row while not ready for it (ruled
#: out by the front's spacing of FORWARD, LOSS and SGD rows; hw/trainer.py, hw/post_lanes.py)
STATUS_BITS = {"busy": 0, "done": 1, "op_error": 2, "access_error": 3, "collision": 4,
               "tile_lost": 5, "row_lost": 6}
#: the STATUS bits that report an error (sticky until CONTROL bit 1); the backends raise on each
STATUS_ERRORS = tuple(k for k in STATUS_BITS if k not in ("busy", "done"))
OVERFLOW_BITS = {"mac": 0, "backerr": 1, "sgd": 2}

#: Instruction fields, least significant first: (name, width).
INSTRUCTION_FIELDS: tuple[tuple[str, int], ...] = (
    ("op", 3),
    ("b_src", 1),           # 0: B from WGT, 1: B from ERR
    ("col_en", 1),          # also write each tile transposed
    ("inv_slope", 5),       # NITRO-ReLU inverse slope (FORWARD, BACKWARD)
    ("a_base", 16), ("a_tile_stride", 16), ("a_k_stride", 16),
    ("b_base", 16), ("b_tile_stride", 16), ("b_k_stride", 16),
    ("k_len", 16), ("tiles_r", 16), ("tiles_c", 16),
    ("row_base", 16), ("tc_stride", 16), ("aux_base", 16),
    ("col_base", 16), ("col_tr_stride", 16),
    ("row_len", 16),        # rows tr*S+i >= row_len are written as 0
    ("col_len", 16),        # lanes tc*S+lane >= col_len are written as 0
    ("divisor", 16),        # Scaler fan-in (FORWARD, LOSS)
    ("d_g", 48),            # SGD: lr_inv * amp
    ("d_w", 32),            # SGD: decay_inv (0: no decay)
)
INSTRUCTION_BITS = sum(w for _, w in INSTRUCTION_FIELDS)
_FIELD_WIDTH = dict(INSTRUCTION_FIELDS)


def pack_instruction(fields: dict) -> int:
    """An instruction dict (missing fields are 0) packed LSB-first; range-checked."""
    unknown = set(fields) - set(_FIELD_WIDTH)
    if unknown:
        raise KeyError(f"unknown instruction fields {sorted(unknown)}")
    word, shift = 0, 0
    for name, width in INSTRUCTION_FIELDS:
        value = int(fields.get(name, 0))
        if not 0 <= value < 2 ** width:
            raise ValueError(f"instruction field {name} = {value} does not fit {width} bits")
        word |= value << shift
        shift += width
    return word


def unpack_instruction(word: int) -> dict:
    out, shift = {}, 0
    for name, width in INSTRUCTION_FIELDS:
        out[name] = (word >> shift) & ((1 << width) - 1)
        shift += width
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


def pack_word(values, width: int) -> int:
    """Lane values (lane 0 first) packed into one word, two's complement, range-checked."""
    word = 0
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    for i, v in enumerate(values):
        v = int(v)
        if not lo <= v <= hi:
            raise OverflowError(f"lane value {v} does not fit {width} signed bits")
        word |= (v & ((1 << width) - 1)) << (i * width)
    return word


def unpack_word(word: int, width: int, lanes: int, signed: bool = True) -> list[int]:
    mask = (1 << width) - 1
    out = []
    for i in range(lanes):
        v = (word >> (i * width)) & mask
        if signed and v >> (width - 1):
            v -= 1 << width
        out.append(v)
    return out


@dataclass(frozen=True)
class Geometry:
    """What a Trainer instance offers (read back from its RO registers, or from hw config)."""
    side: int = 8
    act_depth: int = 16384
    wgt_depth: int = 16384
    err_depth: int = 2048
    code_depth: int = 2048
    label_depth: int = 256
    prog_depth: int = 64
    act_width: int = 9
    wgt_width: int = 18
    err_width: int = 24
    acc_width: int = 48
    divisor_max: int = 2 ** 14 - 1
    d_g_width: int = 41
    d_w_width: int = 21

    def word_bits(self, region: int) -> int:
        return {
            Region.REGS: 32, Region.PROG: INSTRUCTION_BITS,
            Region.ACT: self.side * self.act_width, Region.WGT: self.side * self.wgt_width,
            Region.ERR: self.side * self.err_width, Region.CODE: self.side * 2,
            Region.LABEL: 8,
        }[Region(region)]

    def depth(self, region: int) -> int:
        return {
            Region.PROG: self.prog_depth, Region.ACT: self.act_depth,
            Region.WGT: self.wgt_depth, Region.ERR: self.err_depth,
            Region.CODE: self.code_depth, Region.LABEL: self.label_depth,
        }[Region(region)]

    def registers(self) -> dict[int, int]:
        """The RO geometry registers' values."""
        return {
            Reg.SIDE: self.side, Reg.ACT_DEPTH: self.act_depth, Reg.WGT_DEPTH: self.wgt_depth,
            Reg.ERR_DEPTH: self.err_depth, Reg.CODE_DEPTH: self.code_depth,
            Reg.LABEL_DEPTH: self.label_depth, Reg.PROG_DEPTH: self.prog_depth,
            Reg.ACT_WIDTH: self.act_width, Reg.WGT_WIDTH: self.wgt_width,
            Reg.ERR_WIDTH: self.err_width, Reg.ACC_WIDTH: self.acc_width,
            Reg.DIVISOR_MAX: self.divisor_max, Reg.D_G_WIDTH: self.d_g_width,
            Reg.D_W_WIDTH: self.d_w_width,
        }

    @classmethod
    def from_registers(cls, regs: dict[int, int]) -> "Geometry":
        return cls(side=regs[Reg.SIDE], act_depth=regs[Reg.ACT_DEPTH],
                   wgt_depth=regs[Reg.WGT_DEPTH], err_depth=regs[Reg.ERR_DEPTH],
                   code_depth=regs[Reg.CODE_DEPTH], label_depth=regs[Reg.LABEL_DEPTH],
                   prog_depth=regs[Reg.PROG_DEPTH], act_width=regs[Reg.ACT_WIDTH],
                   wgt_width=regs[Reg.WGT_WIDTH], err_width=regs[Reg.ERR_WIDTH],
                   acc_width=regs[Reg.ACC_WIDTH], divisor_max=regs[Reg.DIVISOR_MAX],
                   d_g_width=regs[Reg.D_G_WIDTH], d_w_width=regs[Reg.D_W_WIDTH])


def check_geometry(geometry: Geometry, *, count_width: int = 16, min_side: int = 2) -> None:
    """Raise ``ValueError`` if no trainer can be built for ``geometry``: a side below
    ``min_side``, a depth outside ``1 .. 2**count_width`` (the programs' 16-bit addresses), ACT
    lanes narrower than 9 bits (local errors), LABEL deeper than 256 (8-bit sample index) or a
    memory beyond its bus window."""
    g = geometry
    if g.side < min_side:
        raise ValueError(f"the array side must be at least {min_side}")
    for name in ("act_depth", "wgt_depth", "err_depth", "code_depth", "label_depth",
                 "prog_depth"):
        depth = getattr(g, name)
        if not 1 <= depth <= 2 ** count_width:
            raise ValueError(f"{name} = {depth} outside 1 .. 2**{count_width}")
    if g.act_width < 9:
        raise ValueError("ACT lanes need at least 9 bits (local errors)")
    if g.label_depth > 256:
        raise ValueError("label_depth is at most 256 (8-bit sample index in LABEL)")
    for region in Region:
        if region != Region.REGS:
            words = g.depth(region) << chunk_bits_of(g.word_bits(region))
            if words > 1 << REGION_SHIFT:
                raise ValueError(f"{region.name} does not fit its bus window")


def bus_writes(geometry: Geometry, region: int, base: int, words) -> list[tuple[int, list[int]]]:
    """Memory words (ints of the region's word width) from word ``base`` on, as bus writes
    ``[(bus_addr, [32-bit chunks...]), ...]`` (one run when the chunks tile the addresses)."""
    wb = geometry.word_bits(region)
    n, stride = chunks_of(wb), 1 << chunk_bits_of(wb)
    mask = 0xFFFF_FFFF
    if n == stride:
        flat = [(int(w) >> (32 * c)) & mask for w in words for c in range(n)]
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
