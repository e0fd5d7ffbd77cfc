"""The accelerator's contract: what the host software and the gateware agree on.

Pure Python (no Amaranth): the program format (:mod:`.isa`), the memories, the trainer's
geometry and the host bus's address map (:mod:`.memory_map`), the registers, status and
overflow bits (:mod:`.registers`), the encodings of the values the memories hold
(:mod:`.values`), the datapath's widths and why (:mod:`.widths`) and the link's frames
(:mod:`.link`).  The gateware (``hw``) builds its layouts from these; the compiler, the
machine model and the backends (``nitrod``) use the same definitions, so the two agree by
construction.  It imports only ``golden`` (the arithmetic's constants) and NumPy.
"""

from .isa import (ADDRESS_WIDTH, CNN_FIELDS, INSTRUCTION_BITS, INSTRUCTION_FIELDS,
                  LEVEL_COUNT_WIDTH, MLP_OPS, POOL_OPS, Op, beat_count, empty_instruction,
                  loop_counts, pack_instruction, tile_count, unpack_instruction)
from .memory_map import (BUS_ADDR_WIDTH, DATA_REGIONS, REGION_SHIFT, Geometry, Region,
                         bus_address, bus_read_span, bus_writes, check_geometry, chunk_bits_of,
                         chunks_of, lane_signed, lane_width, pack_lanes, pack_word, signed_range,
                         unpack_lanes, unpack_word, words_from_bus)
from .registers import (GEOMETRY_REGISTERS, MAGIC, OVERFLOW_BITS, STATUS_BITS, STATUS_ERRORS,
                        Control, Reg)
from .values import (ACT_MAX, CODE_WIDTH, DEFAULT_SLOPE, LABEL_WIDTH, ONE_HOT_VALUE, PAD_LABEL,
                     RELU_MEAN_CORRECTION, SCALE_SHIFT, SLOPE_WIDTH, SLOPES, ReluCode, relu_code,
                     relu_codes)

__all__ = [
    "ADDRESS_WIDTH", "CNN_FIELDS", "INSTRUCTION_BITS", "INSTRUCTION_FIELDS", "LEVEL_COUNT_WIDTH",
    "MLP_OPS", "POOL_OPS", "Op", "beat_count", "empty_instruction", "loop_counts",
    "pack_instruction", "tile_count", "unpack_instruction", "BUS_ADDR_WIDTH", "DATA_REGIONS",
    "REGION_SHIFT", "Geometry", "Region", "bus_address", "bus_read_span", "bus_writes", "check_geometry",
    "chunk_bits_of", "chunks_of", "lane_signed", "lane_width", "pack_lanes", "pack_word",
    "signed_range", "unpack_lanes", "unpack_word", "words_from_bus", "GEOMETRY_REGISTERS",
    "MAGIC", "OVERFLOW_BITS", "STATUS_BITS", "STATUS_ERRORS", "Control", "Reg", "ACT_MAX",
    "CODE_WIDTH", "DEFAULT_SLOPE", "LABEL_WIDTH", "ONE_HOT_VALUE", "PAD_LABEL",
    "RELU_MEAN_CORRECTION", "SCALE_SHIFT", "SLOPE_WIDTH",
    "SLOPES", "ReluCode", "relu_code", "relu_codes",
]
