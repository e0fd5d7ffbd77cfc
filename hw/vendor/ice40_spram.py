"""The iCE40UP5K's SPRAM (SB_SPRAM256KA): the cell, instantiated by hand, and its simulation model.

The UP5K has four SPRAM blocks of 16,384 x 16 bits.  Yosys never infers them from a memory (it
maps memories to SB_RAM40_4K), so :class:`hw.memory.single_port.SinglePortMemory` with
``block="spram"`` places ``ceil(width / 16) x ceil(depth / 16384)`` cells itself
(:func:`spram_blocks`, :func:`sb_spram256ka`): the word cut into 16-bit slices side by side
(the last slice's spare bits written as zeros and never read), and a column of blocks per
16,384 words.

The SPRAM pins: ``ADDRESS`` = ``addr``'s low 14 bits, ``DATAIN`` = the slice of ``w_data``,
``MASKWREN`` = 0b1111 (whole words), ``WREN`` = ``w_en``, ``CHIPSELECT`` = 1 (one column) or
the column's decode, ``CLOCK`` = the domain's clock, ``STANDBY`` = 0, ``SLEEP`` = 0,
``POWEROFF`` = 1 (active low: 1 is powered).

Simulation: Amaranth's simulator cannot run an Instance, so ``block="spram"`` runs in Verilator
with :func:`sim_model`, a behavioural Verilog model of SB_SPRAM256KA written for this project
(same module and port names): 16K x 16, ``MASKWREN``'s nibble enables honoured, ``DATAOUT``
loaded on ``CLOCK`` when ``CHIPSELECT`` and not ``WREN``, held while ``CHIPSELECT`` is 0, and on a
write cycle replaced by its bitwise complement: the model's deterministic stand-in for the
block's undefined output, so that a design relying on the output after a write fails its
simulation instead of passing by luck.  Only the normal power state is modelled: the model stops
the simulation (``$fatal``) on a clock edge with ``STANDBY``, ``SLEEP`` or not ``POWEROFF``.
:func:`with_sim_model` appends the model to a design's Verilog; synthesis knows the cell and
must *not* be given it.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal

from hw.vendor.verilog_model import with_model

__all__ = ["SPRAM_DEPTH", "SPRAM_WIDTH", "ADDRESS_BITS", "spram_blocks", "sb_spram256ka",
           "sim_model", "with_sim_model"]

#: words of one SB_SPRAM256KA
SPRAM_DEPTH = 16384
#: bits per word of one SB_SPRAM256KA
SPRAM_WIDTH = 16
#: address bits of one SB_SPRAM256KA
ADDRESS_BITS = 14


def spram_blocks(width: int, depth: int) -> int:
    """SB_SPRAM256KA blocks a memory of ``depth`` words of ``width`` bits takes:
    ``ceil(width / 16) * ceil(depth / 16384)``."""
    if width < 1:
        raise ValueError(f"a memory needs at least one bit per word, not {width}")
    if depth < 1:
        raise ValueError(f"a memory needs at least one word, not {depth}")
    return -(-width // SPRAM_WIDTH) * -(-depth // SPRAM_DEPTH)


def sb_spram256ka(m: Module, name: str, *, address, data_in, wren, chipselect,
                 domain: str = "sync"):
    """One SB_SPRAM256KA cell, submodule ``name`` of ``m``, writing whole words, always
    powered; returns its ``DATAOUT``."""
    dataout = Signal(SPRAM_WIDTH, name=f"{name}_dataout")
    m.submodules[name] = Instance(
        "SB_SPRAM256KA",
        i_ADDRESS=address,
        i_DATAIN=data_in,
        i_MASKWREN=Const(0b1111, 4),
        i_WREN=wren,
        i_CHIPSELECT=chipselect,
        i_CLOCK=ClockSignal(domain),
        i_STANDBY=Const(0, 1),
        i_SLEEP=Const(0, 1),
        i_POWEROFF=Const(1, 1),
        o_DATAOUT=dataout)
    return dataout


# ---------------------------------------------------------------------------- simulation model

def sim_model() -> str:
    """Behavioural Verilog of SB_SPRAM256KA (module docstring), for Verilator."""
    return "\n".join([
        "// Behavioural model of the iCE40 UltraPlus SPRAM, SB_SPRAM256KA (hw/vendor/ice40_spram.py;",
        "// written for this project; simulation only, never given to synthesis).  16384 words",
        "// of 16 bits; MASKWREN[i] enables DATAIN[4i+3:4i] of a write.  DATAOUT is a register:",
        "// loaded with the addressed word on a CLOCK edge with CHIPSELECT and not WREN, kept on",
        "// an edge without CHIPSELECT, and on a write edge (undefined on the device) set to its",
        "// own complement, so that a design relying on it fails.  Only the normal power state",
        "// is modelled: an edge with STANDBY, SLEEP or not POWEROFF (active low) stops the",
        "// simulation.  The contents start as zeros (undefined on the device).",
        "/* verilator lint_off UNUSEDSIGNAL */",
        "module SB_SPRAM256KA(ADDRESS, DATAIN, MASKWREN, WREN, CHIPSELECT, CLOCK, STANDBY,",
        "                     SLEEP, POWEROFF, DATAOUT);",
        "  input [13:0] ADDRESS;",
        "  input [15:0] DATAIN;",
        "  input [3:0] MASKWREN;",
        "  input WREN, CHIPSELECT, CLOCK, STANDBY, SLEEP, POWEROFF;",
        "  output [15:0] DATAOUT;",
        "  reg [15:0] words [0:16383];",
        "  reg [15:0] out_q;",
        "  integer n;",
        "  initial begin",
        "    for (n = 0; n < 16384; n = n + 1) words[n] = 16'd0;",
        "    out_q = 16'd0;",
        "  end",
        "  wire [15:0] keep = {{4{~MASKWREN[3]}}, {4{~MASKWREN[2]}},",
        "                      {4{~MASKWREN[1]}}, {4{~MASKWREN[0]}}};",
        "  always @(posedge CLOCK) begin",
        "    if (STANDBY || SLEEP || !POWEROFF)",
        '      $fatal(1, "SB_SPRAM256KA model: only STANDBY=0, SLEEP=0, POWEROFF=1 is modelled");',
        "    if (CHIPSELECT) begin",
        "      if (WREN) begin",
        "        words[ADDRESS] <= (words[ADDRESS] & keep) | (DATAIN & ~keep);",
        "        out_q <= ~out_q;",
        "      end else begin",
        "        out_q <= words[ADDRESS];",
        "      end",
        "    end",
        "  end",
        "  assign DATAOUT = out_q;",
        "endmodule",
        "/* verilator lint_on UNUSEDSIGNAL */", ""])


def with_sim_model(verilog_text: str) -> str:
    """``verilog_text`` plus the SB_SPRAM256KA model when the design instantiates the block
    (and does not define it already)."""
    return with_model(verilog_text, "SB_SPRAM256KA", sim_model)
