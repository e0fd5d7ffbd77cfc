"""Lattice ECP5 block RAM (DP16KD) instantiated by hand, so that its output register is used.

Yosys maps a ``lib.memory.Memory`` onto DP16KD with ``REGMODE = "NOREG"`` always (it never
absorbs a register after the read port into the block), so every read leaves the block through
its 5.8 ns clock-to-output (speed grade 6) and the first register is a fabric flip-flop that
the placer puts near its fan-out, not beside the block: the block's delay and a route across
the die in one 10 ns cycle.
With ``REGMODE_B = "OUTREG"`` the block's own output register is that register: the word
leaves the block from a flip-flop (about 1 ns clock-to-output).

:func:`dp16kd_bank` builds one bank: ``depth`` words of ``width`` bits as DP16KDs side by side
(one mode for all, :func:`dp16kd_mode`), port A writing and port B reading:

* ``w_addr``, ``w_data``, ``w_en``: a write (``CEA`` = ``WEA`` = ``w_en``);
* ``r_addr``, ``r_en``: a read (``CEB`` = ``r_en``): the word at ``r_addr`` enters the block's
  read latch at the clock edge and is held there while ``r_en`` is 0;
* ``out_en`` (``OCEB``), or ``None``: with ``out_en`` the output register loads the latch's
  word in cycles with ``out_en`` (``REGMODE_B = "OUTREG"``), exactly what a fabric register
  loaded on ``out_en`` from a NOREG block's output would hold; without it the output is the
  latch (``"NOREG"``, what Yosys infers).

A read and a write of the same word in the same cycle is not defined by the block (the
Trainer never does it and watches that it does not: hw/memory/banked_memory.py, Collisions).

Simulation: Amaranth's simulator cannot run an Instance.  :func:`sim_model` returns a
behavioural Verilog model of the subset of DP16KD used here (same module name, parameter
names and ports; one data width for both ports, 18, 9, 4, 2 or 1; port A written, port B
read; ``CS`` pins compared with ``CSDECODE``; synchronous ``RST``), written for this project.
:func:`with_sim_model` appends it to a design's Verilog for Verilator (sim/harness.py does
it); synthesis knows DP16KD as a cell and must *not* be given the model.  On a read that
meets a write of the same word the model returns the old word.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Signal, Value
from amaranth.utils import exact_log2

from hw.vendor.verilog_model import bus, with_model

__all__ = ["DP16KD_MODES", "dp16kd_mode", "dp16kd_blocks", "dp16kd_bank", "sim_model",
           "with_sim_model"]

#: (depth, width) of DP16KD's true dual-port modes, widest first (512 x 36 is PDPW16KD's only)
DP16KD_MODES = ((1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1))
_ADDR_PINS = 14
_DATA_PINS = 18


def dp16kd_mode(depth: int) -> tuple[int, int]:
    """The widest DP16KD mode ``(depth, width)`` holding ``depth`` words in one block."""
    for mode_depth, mode_width in DP16KD_MODES:
        if depth <= mode_depth:
            return mode_depth, mode_width
    raise ValueError(f"a DP16KD holds at most {DP16KD_MODES[-1][0]} words, not {depth}")


def dp16kd_blocks(depth: int, width: int) -> int:
    """DP16KDs :func:`dp16kd_bank` uses for ``depth`` words of ``width`` bits."""
    return -(-width // dp16kd_mode(depth)[1])


def _address_pins(addr: Value, mode_depth: int, mode_width: int, byte_enables: int) -> list:
    """The 14 address pins: the word address in the top bits (``AD[13:14-abits]``); below it
    zeros, except that in the 18-bit mode ``AD[1:0]`` are the write's byte enables."""
    abits = exact_log2(mode_depth)
    word = Cat(addr, Const(0, max(0, abits - len(addr))))[:abits]
    low = [Const(0, 1)] * (_ADDR_PINS - abits)
    if mode_width == 18:
        low[0] = low[1] = Const(byte_enables, 1)
    return low + [word[i] for i in range(abits)]


def dp16kd_bank(*, depth: int, width: int, w_addr: Value, w_data: Value, w_en: Value,
                r_addr: Value, r_en: Value, out_en: Value | None = None,
                domain: str = "sync", name: str = "bram") -> tuple[list[Instance], Value]:
    """``depth`` x ``width`` bits of DP16KD (module docstring).  Returns ``(instances,
    word)``: the blocks, to add as submodules, and the read word (``width`` bits)."""
    if width < 1:
        raise ValueError(f"a bank needs at least one bit, not {width}")
    mode_depth, mode_width = dp16kd_mode(depth)
    w_data = Value.cast(w_data)
    blocks = []
    outputs = []
    for k in range(dp16kd_blocks(depth, width)):
        lo, hi = k * mode_width, min(width, (k + 1) * mode_width)
        di = Cat(w_data[lo:hi], Const(0, _DATA_PINS - (hi - lo)))
        do = Signal(_DATA_PINS, name=f"{name}_do{k}")
        outputs.append(do[:hi - lo])
        kwargs = {
            "p_DATA_WIDTH_A": mode_width, "p_DATA_WIDTH_B": mode_width,
            "p_REGMODE_A": "NOREG", "p_REGMODE_B": "NOREG" if out_en is None else "OUTREG",
            "p_RESETMODE": "SYNC", "p_ASYNC_RESET_RELEASE": "SYNC",
            "p_CSDECODE_A": "0b000", "p_CSDECODE_B": "0b000",
            "p_WRITEMODE_A": "NORMAL", "p_WRITEMODE_B": "NORMAL",
            "p_GSR": "DISABLED",
            "i_CLKA": ClockSignal(domain), "i_CEA": w_en, "i_WEA": w_en, "i_OCEA": Const(1, 1),
            "i_RSTA": Const(0, 1),
            "i_CLKB": ClockSignal(domain), "i_CEB": r_en, "i_WEB": Const(0, 1),
            "i_OCEB": Const(1, 1) if out_en is None else out_en, "i_RSTB": Const(0, 1),
        }
        for port in "AB":
            for i in range(3):
                kwargs[f"i_CS{port}{i}"] = Const(0, 1)
        for i, pin in enumerate(_address_pins(Value.cast(w_addr), mode_depth, mode_width, 1)):
            kwargs[f"i_ADA{i}"] = pin
        for i, pin in enumerate(_address_pins(Value.cast(r_addr), mode_depth, mode_width, 0)):
            kwargs[f"i_ADB{i}"] = pin
        for i in range(_DATA_PINS):
            kwargs[f"i_DIA{i}"] = di[i]
            kwargs[f"i_DIB{i}"] = Const(0, 1)         # port A only writes, port B only reads
            kwargs[f"o_DOB{i}"] = do[i]
        blocks.append(Instance("DP16KD", **kwargs))
    return blocks, Cat(*outputs)


# ---------------------------------------------------------------------------- simulation model

def sim_model() -> str:
    """Behavioural Verilog of the DP16KD subset used by :func:`dp16kd_bank`."""
    ports = []
    for p in "AB":
        ports += [f"DI{p}{i}" for i in range(_DATA_PINS)]
        ports += [f"AD{p}{i}" for i in range(_ADDR_PINS)]
        ports += [f"CE{p}", f"OCE{p}", f"CLK{p}", f"WE{p}", f"RST{p}"]
        ports += [f"CS{p}{i}" for i in range(3)]
        ports += [f"DO{p}{i}" for i in range(_DATA_PINS)]

    lines = ["// Behavioural model of the Lattice ECP5 DP16KD subset used by hw/vendor/ecp5_bram.py",
             "// (written for this project; simulation only, never given to synthesis).",
             "// Supported: one data width for both ports (18, 9, 4, 2 or 1 bits), port A",
             "// written, port B read, REGMODE NOREG or OUTREG, CS compared with CSDECODE,",
             "// synchronous RST clearing the read latch and output register.  A read that",
             "// meets a write of the same word returns the old word (the block: undefined).",
             "/* verilator lint_off UNUSEDSIGNAL */",
             "/* verilator lint_off UNUSEDPARAM */",
             "/* verilator lint_off WIDTHTRUNC */",
             "/* verilator lint_off WIDTHEXPAND */",
             "module DP16KD(" + ", ".join(ports) + ");"]
    params = {"DATA_WIDTH_A": 18, "DATA_WIDTH_B": 18, "REGMODE_A": '"NOREG"',
              "REGMODE_B": '"NOREG"', "RESETMODE": '"SYNC"', "ASYNC_RESET_RELEASE": '"SYNC"',
              "CSDECODE_A": '"0b000"', "CSDECODE_B": '"0b000"', "WRITEMODE_A": '"NORMAL"',
              "WRITEMODE_B": '"NORMAL"', "GSR": '"ENABLED"'}
    lines += [f"  parameter {k} = {v};" for k, v in params.items()]
    for p in "AB":
        lines += [f"  input {bus('DI' + p, _DATA_PINS)[1:-1]};",
                  f"  input {bus('AD' + p, _ADDR_PINS)[1:-1]};",
                  f"  input {bus('CS' + p, 3)[1:-1]};",
                  f"  input CE{p}, OCE{p}, CLK{p}, WE{p}, RST{p};",
                  f"  output {bus('DO' + p, _DATA_PINS)[1:-1]};"]
    lines += [
        "  localparam W = DATA_WIDTH_A;",
        "  localparam ABITS = W == 18 ? 10 : W == 9 ? 11 : W == 4 ? 12 : W == 2 ? 13 : 14;",
        "  localparam DEPTH = 1 << ABITS;",
        "  function [2:0] csdecode(input [8*5-1:0] text);   // \"0bXYZ\" -> XYZ",
        "    csdecode = {text[16] , text[8], text[0]};",
        "  endfunction",
        "  initial begin",
        "    if (DATA_WIDTH_A != DATA_WIDTH_B",
        "        || !(W == 18 || W == 9 || W == 4 || W == 2 || W == 1)",
        '        || REGMODE_A != "NOREG" || (REGMODE_B != "NOREG" && REGMODE_B != "OUTREG")',
        '        || RESETMODE != "SYNC")',
        '      $fatal(1, "DP16KD model: one width (18/9/4/2/1), REGMODE_B NOREG/OUTREG, sync reset");',
        "  end",
        "  reg [W-1:0] mem [0:DEPTH-1];",
        "  integer k;",
        "  initial for (k = 0; k < DEPTH; k = k + 1) mem[k] = 0;",
        f"  wire [13:0] ada = {bus('ADA', _ADDR_PINS)};",
        f"  wire [13:0] adb = {bus('ADB', _ADDR_PINS)};",
        f"  wire [17:0] dia = {bus('DIA', _DATA_PINS)};",
        "  wire [ABITS-1:0] wa = ada[13:14-ABITS];",
        "  wire [ABITS-1:0] ra = adb[13:14-ABITS];",
        "  wire sel_a = {CSA2, CSA1, CSA0} == csdecode(CSDECODE_A);",
        "  wire sel_b = {CSB2, CSB1, CSB0} == csdecode(CSDECODE_B);",
        "  reg [W-1:0] latch_b = 0, out_b = 0;",
        "  generate if (W == 18) begin : bytes  // AD[1:0]: the two 9-bit byte enables",
        "    always @(posedge CLKA) if (CEA && WEA && sel_a) begin",
        "      if (ada[0]) mem[wa][8:0] <= dia[8:0];",
        "      if (ada[1]) mem[wa][17:9] <= dia[17:9];",
        "    end",
        "  end else begin : whole",
        "    always @(posedge CLKA) if (CEA && WEA && sel_a) mem[wa] <= dia[W-1:0];",
        "  end endgenerate",
        "  always @(posedge CLKB) begin",
        "    if (RSTB) begin",
        "      latch_b <= 0; out_b <= 0;",
        "    end else begin",
        "      if (CEB && sel_b) latch_b <= mem[ra];",
        "      if (OCEB) out_b <= latch_b;",
        "    end",
        "  end",
        '  wire [W-1:0] dob = REGMODE_B == "OUTREG" ? out_b : latch_b;',
        f"  assign {bus('DOB', _DATA_PINS)} = dob;        // zero-extended",
        f"  assign {bus('DOA', _DATA_PINS)} = 18'd0;",
        "endmodule",
        "/* verilator lint_on WIDTHEXPAND */",
        "/* verilator lint_on WIDTHTRUNC */",
        "/* verilator lint_on UNUSEDPARAM */",
        "/* verilator lint_on UNUSEDSIGNAL */", ""]
    return "\n".join(lines)


def with_sim_model(verilog_text: str) -> str:
    """``verilog_text`` plus the DP16KD model when the design instantiates the block."""
    return with_model(verilog_text, "DP16KD", sim_model)
