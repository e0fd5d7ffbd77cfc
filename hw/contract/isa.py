"""The program: one instruction a product, and what each instruction's post-processing does.

Every data memory holds words of ``S`` lanes (``S`` = ``Geometry.side``), lane 0 in the low
bits (hw/contract/memory_map.py has the memories and their lanes).

One product per instruction
---------------------------
An instruction computes ``P = A-operand @ B-operand`` tile by tile (``S x S`` values a tile):
tile ``(tr, tc)`` beat ``k`` reads ``ACT[a_base + tr*a_tile_stride + k*a_k_stride]`` (S
values: the tile's rows) and ``B[b_base + tc*b_tile_stride + k*b_k_stride]`` (S values: the
tile's columns; ``B`` is ``WGT`` when ``b_src`` is 0, ``ERR`` when 1), ``k < k_len``; tiles run
row-major (``tr`` outer).  Each tile row ``i`` (S accumulators) goes through the instruction's
post-processing ``op``.  Its *row offset* is ``off = tr*S + i + tc*tc_stride``:

* ``FORWARD``: ``h = NitroRelu(Scaler(acc, divisor), inv_slope)``; ``h`` -> ``ACT[row_base+off]``
  and the ReLU code -> ``CODE[aux_base+off]``.
* ``LOSS``: ``e = Scaler(acc, divisor) - (ONE_HOT_VALUE if tc*S+lane == LABEL[tr*S+i] else 0)``;
  ``e`` -> ``ERR[row_base+off]``.
* ``BACKWARD``: ``d = NitroReluBackward(acc, CODE[aux_base+off], inv_slope)`` (``acc`` must
  fit the ERR lane: else the ``backerr`` overflow flag, and it saturates); ``d`` ->
  ``ERR[row_base+off]``.
* ``SGD``: ``w' = SgdUpdate(WGT[row_base+off], acc, d_g, d_w)`` -> ``WGT[row_base+off]``.

With ``col_en`` the tile is also written transposed: column ``c`` (the lane-``c`` values of
rows ``0..S-1``, as one S-lane word) goes to ``col_base + tr*col_tr_stride + tc*S + c`` of
``ACT`` (FORWARD, LOSS) or ``WGT`` (SGD).  Masking keeps every padding value exactly 0: a lane
whose column index ``tc*S + lane`` is ``>= col_len``, or a row whose index ``tr*S + i`` is
``>= row_len``, is written as 0 (its CODE as ``ReluCode.ZERO``) by every op, also in the
transposed writes.  LOSS also writes 0 for a sample whose label is ``PAD_LABEL``.  The
compiler allocates whole tiles and keeps operand padding 0 (NITRO-ReLU(0) is not 0, so
without the masks padded neurons would train as phantom ones).

Instructions run one after the other: each sees every write of the ones before it.  ``END``
stops the program.  Programs start at the address in register ``PROG_START``.
"""

from __future__ import annotations

import enum

__all__ = ["Op", "INSTRUCTION_FIELDS", "INSTRUCTION_BITS", "ADDRESS_WIDTH", "pack_instruction",
           "unpack_instruction", "empty_instruction"]

#: Bits of the instructions' addresses, strides and counts (16: every memory is at most 65,536
#: words deep, and a product at most 65,535 tiles and beats in each direction).
ADDRESS_WIDTH = 16


class Op(enum.IntEnum):
    END = 0
    FORWARD = 1
    LOSS = 2
    BACKWARD = 3
    SGD = 4


#: Instruction fields, least significant first: (name, width).
INSTRUCTION_FIELDS: tuple[tuple[str, int], ...] = (
    ("op", 3),
    ("b_src", 1),           # 0: B from WGT, 1: B from ERR
    ("col_en", 1),          # also write each tile transposed
    ("inv_slope", 5),       # NITRO-ReLU inverse slope (FORWARD, BACKWARD)
    *((name, ADDRESS_WIDTH) for name in (
        "a_base", "a_tile_stride", "a_k_stride",
        "b_base", "b_tile_stride", "b_k_stride",
        "k_len", "tiles_r", "tiles_c",
        "row_base", "tc_stride", "aux_base",
        "col_base", "col_tr_stride",
        "row_len",          # rows tr*S+i >= row_len are written as 0
        "col_len",          # lanes tc*S+lane >= col_len are written as 0
        "divisor",          # Scaler fan-in (FORWARD, LOSS)
    )),
    ("d_g", 48),            # SGD: lr_inv * amp
    ("d_w", 32),            # SGD: decay_inv (0: no decay)
)
INSTRUCTION_BITS = sum(w for _, w in INSTRUCTION_FIELDS)
_FIELD_WIDTH = dict(INSTRUCTION_FIELDS)


def empty_instruction(op: Op = Op.END, **fields) -> dict:
    """An instruction dict with every field present (0 unless given)."""
    ins = {name: 0 for name, _ in INSTRUCTION_FIELDS}
    ins.update(op=int(op), **fields)
    return ins


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
