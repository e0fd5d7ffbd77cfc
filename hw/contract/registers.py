"""The registers (region ``REGS`` of the host bus), the status and overflow bits."""

from __future__ import annotations

import enum

__all__ = ["MAGIC", "Reg", "Control", "GEOMETRY_REGISTERS", "STATUS_BITS", "STATUS_ERRORS",
           "OVERFLOW_BITS"]

MAGIC = 0x4E49_5452          # "NITR"


class Reg(enum.IntEnum):
    """Register word addresses in region REGS."""
    ID = 0              # RO: MAGIC
    CONTROL = 1         # WO: Control bits
    STATUS = 2          # RO: STATUS_BITS
    OVERFLOW = 3        # RO: OVERFLOW_BITS (sticky until Control.CLEAR)
    CYCLES = 4          # RO: cycles of the last run, start to END
    RETIRED = 5         # RO: instructions completed by the last run (END excluded)
    PROG_START = 6      # RW: first instruction of a run
    SIDE = 8            # RO from here on: the geometry (GEOMETRY_REGISTERS)
    ACT_DEPTH = 9       # words
    WGT_DEPTH = 10
    ERR_DEPTH = 11
    CODE_DEPTH = 12
    LABEL_DEPTH = 13
    PROG_DEPTH = 14
    ACT_WIDTH = 15      # lane widths in bits
    WGT_WIDTH = 16
    ERR_WIDTH = 17
    ACC_WIDTH = 18
    DIVISOR_MAX = 19    # largest Scaler divisor (fan-in)
    D_G_WIDTH = 20      # bits of the SGD divisor d_g (lr_inv * amp <= 2**D_G_WIDTH - 1)
    D_W_WIDTH = 21      # bits of the decay divisor d_w
    MACS = 22           # multiply-accumulates per cycle (the core's parallelism)


class Control(enum.IntFlag):
    """The bits written to ``Reg.CONTROL``."""
    START = 1           # run the program from PROG_START (ignored while running)
    CLEAR = 2           # clear the sticky STATUS errors and OVERFLOW flags


#: the RO registers holding a ``Geometry`` field each
GEOMETRY_REGISTERS = {
    Reg.SIDE: "side", Reg.ACT_DEPTH: "act_depth", Reg.WGT_DEPTH: "wgt_depth",
    Reg.ERR_DEPTH: "err_depth", Reg.CODE_DEPTH: "code_depth", Reg.LABEL_DEPTH: "label_depth",
    Reg.PROG_DEPTH: "prog_depth", Reg.ACT_WIDTH: "act_width", Reg.WGT_WIDTH: "wgt_width",
    Reg.ERR_WIDTH: "err_width", Reg.ACC_WIDTH: "acc_width", Reg.DIVISOR_MAX: "divisor_max",
    Reg.D_G_WIDTH: "d_g_width", Reg.D_W_WIDTH: "d_w_width",
}

#: ``busy``: a program is running (or a START is about to make it so); ``done``: the last run
#: ended.  The errors, sticky until Control.CLEAR:
#: ``op_error``: the program held an instruction the core cannot execute (the run stopped);
#: ``access_error``: a memory access while running or beyond a memory's depth (dropped);
#: ``collision``: a memory was read and written at the same word in the same cycle (the
#: board's block RAMs do not define the word read; hw/memory/banked_memory.py);
#: ``tile_lost``: a tile finished in the MAC array while its result bank still held the
#: previous one (ruled out by the array's flow control; the watch on it);
#: ``row_lost``: the post-processing lanes were offered a row while not ready for it (ruled
#: out by the front's spacing of rows).
STATUS_BITS = {"busy": 0, "done": 1, "op_error": 2, "access_error": 3, "collision": 4,
               "tile_lost": 5, "row_lost": 6}
#: the STATUS bits that report an error; the backends raise on each
STATUS_ERRORS = tuple(k for k in STATUS_BITS if k not in ("busy", "done"))
#: ``mac``: an accumulator's partial sum left ``acc_width`` (it wraps); ``backerr``: a BACKWARD
#: accumulator did not fit the ERR lane (saturated); ``sgd``: an updated weight left the WGT
#: lane (saturated).  Sticky until Control.CLEAR.
OVERFLOW_BITS = {"mac": 0, "backerr": 1, "sgd": 2}
