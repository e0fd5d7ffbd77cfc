"""hw/contract/isa.py: the program format: the spatial levels of CNN programs."""

import numpy as np
import pytest

from hw.contract import (ADDRESS_WIDTH, CNN_FIELDS, INSTRUCTION_BITS, INSTRUCTION_FIELDS,
                         LEVEL_COUNT_WIDTH, MLP_OPS, POOL_OPS, Op, beat_count, chunk_bits_of,
                         chunks_of, empty_instruction, loop_counts, pack_instruction, tile_count,
                         unpack_instruction)

#: the fields the cores decode today, with the widths they were built for
MLP_FIELDS = {"op": 3, "b_src": 1, "col_en": 1, "inv_slope": 5, "d_g": 48, "d_w": 32,
              **{name: ADDRESS_WIDTH for name in (
                  "a_base", "a_tile_stride", "a_k_stride", "b_base", "b_tile_stride",
                  "b_k_stride", "k_len", "tiles_r", "tiles_c", "row_base", "tc_stride",
                  "aux_base", "col_base", "col_tr_stride", "row_len", "col_len", "divisor")}}


def test_instruction_fits_sixteen_chunks():
    """508 bits: 16 host chunks, so the SerialTrainer's PROG keeps its slots of 16 words
    (4 EBR for 32 instructions on the iCE40)."""
    assert INSTRUCTION_BITS == 508
    assert chunks_of(INSTRUCTION_BITS) == 16 and chunk_bits_of(INSTRUCTION_BITS) == 4


def test_mlp_fields_keep_their_names_widths_and_order():
    fields = dict(INSTRUCTION_FIELDS)
    assert {k: fields[k] for k in MLP_FIELDS} == MLP_FIELDS
    names = [name for name, _ in INSTRUCTION_FIELDS]
    # the CNN fields come after every MLP field: an MLP instruction's high bits are 0
    assert names[:len(MLP_FIELDS)] == [n for n in names if n in MLP_FIELDS]
    assert tuple(names[len(MLP_FIELDS):]) == CNN_FIELDS
    assert sum(w for n, w in INSTRUCTION_FIELDS if n in MLP_FIELDS) == 362
    word = pack_instruction({**{n: (1 << w) - 1 for n, w in MLP_FIELDS.items()}})
    assert word >> 362 == 0


def test_cnn_fields_are_neutral_at_zero():
    ins = empty_instruction(Op.FORWARD, tiles_r=3, tiles_c=2, k_len=5)
    assert all(ins[f] == 0 for f in CNN_FIELDS)
    n = loop_counts(ins)
    assert n == {"y_tiles": 1, "y_repeat": 1, "x_tiles": 1, "x_repeat": 1, "y_beats": 1,
                 "x_beats": 1, "tiles_r": 3, "tiles_c": 2, "k_len": 5}
    assert tile_count(ins) == 6 and beat_count(ins) == 5


def test_loop_counts():
    ins = empty_instruction(Op.BACKWARD, tiles_r=2, tiles_c=3, k_len=10, y_tiles=4,
                            y_repeat=2, x_tiles=1, x_repeat=0, y_beats=0, x_beats=3)
    assert tile_count(ins) == 4 * 2 * 1 * 1 * 2 * 3
    assert beat_count(ins) == 3 * 10
    assert tile_count(empty_instruction(Op.SGD, tiles_r=0, tiles_c=4, k_len=1)) == 0


def test_counts_and_ops_fit_their_fields():
    fields = dict(INSTRUCTION_FIELDS)
    assert max(Op) < 1 << fields["op"]
    for d in "yx":
        for name in ("tiles", "repeat", "beats"):
            assert fields[f"{d}_{name}"] == LEVEL_COUNT_WIDTH
        for name in ("stride", "b_stride", "out"):
            assert fields[f"{d}_{name}"] == ADDRESS_WIDTH
    assert set(MLP_OPS) | set(POOL_OPS) | {Op.END, Op.SCALE} == set(Op)
    with pytest.raises(ValueError, match="y_tiles = 256"):
        pack_instruction(empty_instruction(Op.FORWARD, y_tiles=256))


def test_pack_unpack_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(50):
        ins = {name: int(rng.integers(0, 1 << min(w, 62))) for name, w in INSTRUCTION_FIELDS}
        assert unpack_instruction(pack_instruction(ins)) == ins
