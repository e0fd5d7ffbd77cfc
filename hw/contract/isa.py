"""The program: one instruction a product (or a pool), and what each instruction's
post-processing does.

Every data memory holds words of ``S`` lanes (``S`` = ``Geometry.side``), lane 0 in the low
bits (hw/contract/memory_map.py has the memories and their lanes).

One product per instruction
---------------------------
An instruction computes ``P = A-operand @ B-operand`` tile by tile (``S x S`` values a tile):
each *beat* of a tile reads one ``ACT`` word (S values: the tile's rows) and one ``B`` word
(S values: the tile's columns; ``B`` is ``WGT`` when ``b_src`` is 0, ``ERR`` when 1).  Each
tile row ``i`` (S accumulators) goes through the instruction's post-processing ``op`` and is
written as one S-lane word at the row's *offset* ``off``; with ``col_en`` the tile is also
written transposed (column ``c``, the lane-``c`` values of rows ``0..S-1``, as one word at
the column's offset ``coff``).

The loops
~~~~~~~~~
Tiles and beats are nested loops, outermost first (a count field of 0 or 1 runs once)::

    tiles:  ty < y_tiles, uy < y_repeat, tx < x_tiles, ux < x_repeat, tr < tiles_r, tc < tiles_c
    beats:  ky < y_beats, kx < x_beats, k < k_len

    A word  ACT[a_base + tr*a_tile_stride + k*a_k_stride + SA]
    B word  B[b_base + tc*b_tile_stride + k*b_k_stride + SB]
    SA = sum over d in (y, x) of  kd*d_stride + (0 if tile_b else td*w_d*d_stride)
    SB = sum over d in (y, x) of  kd*d_b_stride + (td*d_stride if tile_b else 0)
    w_d = d_beats if windows else 1
    O = (ty*y_repeat + uy)*y_out + (tx*x_repeat + ux)*x_out
    row i:     off  = O + tr*S + i + tc*tc_stride
    column c:  coff = O + tr*col_tr_stride + tc*S + c

``tiles_r``, ``tiles_c``, ``k_len`` and the strides ``a_tile_stride``, ``a_k_stride``,
``b_tile_stride``, ``b_k_stride``, ``tc_stride``, ``col_tr_stride`` are the MLP product's: an
MLP instruction has every field of :data:`CNN_FIELDS` 0 (``y_*``, ``x_*``, ``windows``,
``tile_b``) and reads ``A[a_base + tr*a_tile_stride + k*a_k_stride]``, ``B[b_base +
tc*b_tile_stride + k*b_k_stride]``, writes row ``i`` at ``tr*S + i + tc*tc_stride`` and
column ``c`` at ``tr*col_tr_stride + tc*S + c``.

The two *spatial levels* ``y`` and ``x`` (convolutions and pools) each pair a tile
loop ``td`` with a beat loop ``kd`` that move the same operand by the same ``d_stride``:

* a convolution slides its 3 x 3 window: the A word of output position ``t`` and kernel
  offset ``k`` is at ``(t + k)*d_stride`` (``windows`` 0);
* a pool tiles its input with windows: ``(t*d_beats + k)*d_stride`` (``windows`` 1);
* without beats (``d_beats`` 0) the tile loop alone walks positions (local classifiers' and
  linear layers' SGD over a feature map, ``BACKWARD``), without tiles (``d_tiles`` 0) the beat
  loop alone (products that flatten a feature map: ``LOSS``, ``FORWARD`` of a linear layer);
* ``tile_b``: the tile loops move ``B`` instead of ``A`` (``BACKWARD`` of a conv block, where
  each position's classifier weights differ and the local errors do not);
* ``d_repeat``: each tile step is written ``d_repeat`` times at consecutive ``d_out`` steps
  with the same operands (``BACKWARD`` of a conv block: a pooled feature's error goes to every
  position of its decoder pool's window; ``POOL_CODE`` has left ReluCode.ZERO at every
  position but the window's maximum, so the fused ReLU backward leaves the error only there).

Every address is an affine function of the loop indices with non-negative coefficients (no
division, no modulo): walkers add strides.  Why the levels are tied this way (the shared
``d_stride`` of a level's tiles and beats, one ``d_out`` for rows and columns, no lane
strides, no mask-level selectors): the instruction is stored in PROG (the SerialTrainer's
PROG holds it as 32-bit chunks in slots of ``2**chunk_bits``, in the iCE40's scarce block
RAM), and with the compiler's layouts (nitrod/compiler.py) these ties hold for every product
of a NITRO-D network, so the instruction stays within 16 chunks (:data:`INSTRUCTION_BITS` =
508): fully general levels (a count and A, B, row and column strides for each of six tile
levels, a count and A and B strides for each of three beat levels, lane strides, mask level
selectors) would take about 880 bits (28 chunks).

Post-processing
~~~~~~~~~~~~~~~
* ``FORWARD``: ``h = NitroRelu(Scaler(acc, divisor), inv_slope)``; ``h`` -> ``ACT[row_base+off]``
  and the ReLU code -> ``CODE[aux_base+off]``.
* ``LOSS``: ``e = Scaler(acc, divisor) - (ONE_HOT_VALUE if tc*S+lane == LABEL[tr*S+i] else
  0)``; ``e`` -> ``ERR[row_base+off]``.
* ``BACKWARD``: ``d = NitroReluBackward(acc, CODE[aux_base+off], inv_slope)`` (``acc`` must
  fit the ERR lane: else the ``backerr`` overflow flag, and it saturates); ``d`` ->
  ``ERR[row_base+off]``.
* ``SGD``: ``w' = SgdUpdate(WGT[row_base+off], acc, d_g, d_w)`` -> ``WGT[row_base+off]``.
* ``SCALE``: ``y = Scaler(acc, divisor)`` (no ReLU, no code) -> ``ACT[row_base+off]``.  An
  average pool: the B operand is a constant ``256 * identity`` (so ``acc = 256 * sum``) and
  ``divisor = k*k``, so ``y = tdiv(sum, k*k)`` exactly (the Scaler divides by ``256*divisor``).
* ``POOL`` (no MAC array, no B): tile row ``i`` is the lane-wise maximum over the beats of the
  words ``ACT[A + i]`` (``A`` the A word address above: a tile's rows are ``S`` consecutive
  words), written to ``ACT[row_base+off]``.  Ties go to the first beat (the first maximum in
  row-major window order).  Window positions outside a feature map are never walked: the
  compiler splits a padded pool's windows into classes of equal shape, one instruction each,
  which is exactly a max over the real positions (padding with the most negative value).
* ``POOL_CODE``: ``POOL``, and for every beat and row ``i`` the code word
  ``CODE[aux_base + (A - a_base) + i]`` (the CODE word of the pooled ACT word) keeps, lane by
  lane, its code where this beat is the lane's maximum and becomes ``ReluCode.ZERO``
  elsewhere (a read-modify-write of CODE, like SGD's of WGT).

With ``col_en`` (FORWARD, LOSS, SGD, SCALE) the columns go to ``col_base + coff`` of ``ACT``
(FORWARD, LOSS, SCALE) or ``WGT`` (SGD).  Masking keeps every padding value exactly 0: a lane
whose column index ``tc*S + lane`` is ``>= col_len``, or a row whose index ``tr*S + i`` is
``>= row_len``, is written as 0 (its CODE as ``ReluCode.ZERO``) by every op but the pools, also
in the transposed writes (the pools' padding inputs are 0 already).  LOSS also writes 0 for a
sample whose label is ``PAD_LABEL``.  The compiler allocates whole tiles and keeps operand
padding 0 (NITRO-ReLU(0) is not 0, so without the masks padded neurons would train as phantom
ones).

Instructions run one after the other: each sees every write of the ones before it.  ``END``
stops the program.  Programs start at the address in register ``PROG_START``.

The cores
~~~~~~~~~
A core's class says whether it runs CNN programs (``hw.trainers.core.TrainerCore.RUNS_CNN``):
the Trainer and the SerialTrainer implement every op and loop; a core without it implements
the MLP ops (:data:`MLP_OPS`) with every field of :data:`CNN_FIELDS` 0, and an instruction
with another op or a non-zero CNN field stops its program with ``op_error``.  What a CNN core
adds:

* walkers: the A and B addresses are the MLP walkers' plus the spatial levels' running sums
  (each level keeps a tile offset and a beat offset; with ``windows`` a tile step adds
  ``d_beats * d_stride``, a constant of the instruction: ``d_stride`` added ``d_beats``
  times while it is decoded, say); the written rows' and columns' offset ``O`` steps by
  ``d_out`` at every repeat and tile step of a level;
* the repeats: the operands do not change across ``uy``, ``ux``, so a core may compute such a
  tile once and write it ``y_repeat * x_repeat`` times (:func:`tile_count` counts every
  written tile, :func:`beat_count` the beats of one);
* SCALE: FORWARD's lanes without the ReLU and the codes;
* a pool unit (POOL, POOL_CODE: ``b_src``, the B fields, ``row_len`` and ``col_len`` are not
  used): per row, lane by lane, the running maximum over the beats (replaced only by a greater
  value: ties keep the first) and the beat it came from; POOL_CODE then walks the window again
  and rewrites each code word from it.  Its words read are ``tile_count * beat_count * S`` (not
  MAC-array beats).

The compiler's programs never let an instruction write a word twice, nor write a word it reads
(but SGD's weights and POOL_CODE's codes, read then written in place).
"""

from __future__ import annotations

import enum

__all__ = ["Op", "MLP_OPS", "POOL_OPS", "INSTRUCTION_FIELDS", "INSTRUCTION_BITS", "CNN_FIELDS",
           "ADDRESS_WIDTH", "LEVEL_COUNT_WIDTH", "pack_instruction", "unpack_instruction",
           "empty_instruction", "loop_counts", "tile_count", "beat_count"]

#: Bits of the instructions' addresses, strides and counts (16: every memory is at most 65,536
#: words deep, and a product at most 65,535 tiles and beats in each direction).
ADDRESS_WIDTH = 16
#: Bits of the spatial levels' counts (``y_tiles``, ``y_repeat``, ``y_beats``, ...): feature
#: maps, windows and kernels of at most 255 positions a side.
LEVEL_COUNT_WIDTH = 8


class Op(enum.IntEnum):
    END = 0
    FORWARD = 1
    LOSS = 2
    BACKWARD = 3
    SGD = 4
    POOL = 5            # lane-wise max over the beats (no MAC array)
    POOL_CODE = 6       # POOL, and CODE zeroed but at each window's maximum
    SCALE = 7           # Scaler only (average pools, on the MAC array)


#: the ops of MLP programs (what a core that does not run CNN programs implements)
MLP_OPS = (Op.FORWARD, Op.LOSS, Op.BACKWARD, Op.SGD)
#: the ops that use the pool unit instead of the MAC array
POOL_OPS = (Op.POOL, Op.POOL_CODE)

_SPATIAL = tuple(
    (f"{d}_{name}", width) for d in "yx" for name, width in (
        ("tiles", LEVEL_COUNT_WIDTH),     # tile steps of the level
        ("repeat", LEVEL_COUNT_WIDTH),    # each tile step written this many times
        ("beats", LEVEL_COUNT_WIDTH),     # beat steps of the level
        ("stride", ADDRESS_WIDTH),        # A (B for the tile steps with tile_b) per step
        ("b_stride", ADDRESS_WIDTH),      # B per beat step
        ("out", ADDRESS_WIDTH),           # rows, columns and CODE per (repeated) tile step
    ))

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
        "divisor",          # Scaler fan-in (FORWARD, LOSS, SCALE)
    )),
    ("d_g", 48),            # SGD: lr_inv * amp
    ("d_w", 32),            # SGD: decay_inv (0: no decay)
    # CNN programs: the spatial levels; 0 in every MLP instruction
    ("windows", 1),         # the spatial levels' tile steps are whole windows of their beats
    ("tile_b", 1),          # the spatial levels' tile steps move B instead of A
    *_SPATIAL,
)
INSTRUCTION_BITS = sum(w for _, w in INSTRUCTION_FIELDS)
_FIELD_WIDTH = dict(INSTRUCTION_FIELDS)
#: The fields CNN programs add: an MLP instruction has 0 in each, and a core that
#: implements only the MLP product stops with ``op_error`` on an instruction where one is not.
CNN_FIELDS: tuple[str, ...] = ("windows", "tile_b", *(name for name, _ in _SPATIAL))


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


def loop_counts(ins: dict) -> dict:
    """The iterations of each loop of ``ins`` (a count field of 0 runs once): keys ``y_tiles``,
    ``y_repeat``, ``x_tiles``, ``x_repeat``, ``tiles_r``, ``tiles_c``, ``y_beats``,
    ``x_beats``, ``k_len`` (the last three: 0 stays 0 for ``k_len``, an empty product)."""
    out = {name: max(1, int(ins.get(name, 0))) for name in (
        "y_tiles", "y_repeat", "x_tiles", "x_repeat", "y_beats", "x_beats")}
    out.update(tiles_r=int(ins["tiles_r"]), tiles_c=int(ins["tiles_c"]), k_len=int(ins["k_len"]))
    return out


def tile_count(ins: dict) -> int:
    """The tiles of ``ins`` (each one S rows of results, written after its beats)."""
    n = loop_counts(ins)
    return (n["y_tiles"] * n["y_repeat"] * n["x_tiles"] * n["x_repeat"] * n["tiles_r"]
            * n["tiles_c"])


def beat_count(ins: dict) -> int:
    """The beats of each tile of ``ins`` (operand reads; MAC-array beats but for the pools)."""
    n = loop_counts(ins)
    return n["y_beats"] * n["x_beats"] * n["k_len"]
