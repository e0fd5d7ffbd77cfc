"""The Trainer: whole NITRO-D training steps of MLPs on chip, run by a program.

Blocks (docs/ARCHITECTURE.md §7 has the diagram; nitrod/isa.py the program format and
memory map, shared with the host-side compiler)::

    host bus --> registers, memories (PROG, ACT, WGT, ERR, CODE, LABEL)
    sequencer: PROG[pc] --> instruction register --> TileEngine (S x S MacArray)
    TileEngine: A operands from ACT, B operands from WGT or ERR
        --> front (reads the row's aux word: CODE or WGT)
        --> PostLanes (S lanes: Scaler/NitroRelu, Scaler, NitroReluBackward or SgdUpdate)
        --> writer (row write, LOSS target, transposer) --> ACT / ERR / WGT / CODE

One instruction at a time: the sequencer fetches an instruction, hands its product to the
engine and waits until the writer has written the instruction's last row (and, with
``col_en``, its last transposed column) before fetching the next, so an instruction sees every
write of the ones before it.  Sizes are run-time data: one bitstream trains any MLP whose
memory map (nitrod/compiler.py) fits the geometry.

Host access (``bus``, hw/host_link.py's BusSignature): registers any time; memories only while
idle (an access while running is dropped and sets ``STATUS.access_error``; a word address
beyond a memory's depth likewise).  Wide words are written chunk by chunk: chunks ``0..n-2``
go to a staging register, chunk ``n-1`` writes the word.

Overflow (register OVERFLOW, sticky until CONTROL bit 1): ``mac`` (an accumulator left
``acc_width``: the MacArray's per-tile flag), ``backerr`` (a BACKWARD accumulator did not fit
the ERR lane; saturated), ``sgd`` (an updated weight left the WGT lane; saturated).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hw.banked_memory import BLOCKS, BankedMemory
from hw.host_link import BusSignature
from hw.nitro_relu import ReluCode
from hw.post_lanes import CODE_WIDTH, PostLanes
from hw.replica import replica, replicas
from hw.tile_engine import TileEngine
from nitrod.isa import (BUS_ADDR_WIDTH, INSTRUCTION_BITS, INSTRUCTION_FIELDS, MAGIC,
                        ONE_HOT_VALUE, PAD_LABEL, REGION_SHIFT, Geometry, Op, Reg, Region, chunk_bits_of,
                        check_geometry, chunks_of)

__all__ = ["Trainer", "instruction_layout"]

COUNT_WIDTH = 16

#: cycles per FORWARD, LOSS or SGD row in the post-processing lanes (hw/post_lanes.py): the
#: Trainer has ``side / ROW_CYCLES`` Scaler, NitroRelu and SgdUpdate units
#: (docs/ARCHITECTURE.md section 7, *Fewer units than lanes*)
ROW_CYCLES = 4


def default_row_cycles(side: int) -> int:
    """``ROW_CYCLES``, or the largest divisor of it that divides ``side``."""
    return math.gcd(side, ROW_CYCLES)


def instruction_layout() -> data.StructLayout:
    """The instruction word (nitrod.isa.INSTRUCTION_FIELDS, least significant first)."""
    return data.StructLayout({name: unsigned(width) for name, width in INSTRUCTION_FIELDS})


class _RowWalk:
    """Counts the drained rows of an instruction in issue order (tiles row-major, rows of a
    tile in order) and derives the row offset ``off = tr*S + i + tc*tc_stride`` and friends.

    ``reset`` (re)loads the limits from the instruction register; ``step`` moves to the next
    row.  ``off`` and ``m`` are registers too (computed from the next counters on a step), so
    that an address is one adder away from flip-flops.  The ``at_*_last`` flags are registers
    as well, set on a step from the current counters and flags (``tc == tiles_c - 2`` rather
    than ``tc + 1 == tiles_c - 1``), so that no compare sits before the adders and no adder
    before a compare.  With ``base`` (constant while an instruction runs), ``addr = base +
    off`` is a register, and so are the addresses of the current tile's and tile row's row 0:
    the next address is one adder (``addr + 1``, ``tile_addr + tc_stride`` or ``tr_addr + S``) and a
    choice away from flip-flops, so that a block RAM's read address comes straight from
    flip-flops; ``addr_next`` and ``m_next`` are the next values of ``addr`` and ``m`` (LABEL's
    own address register, hw/banked_memory.py, loads ``m_next`` to hold the same row index in
    the same cycle)."""

    def __init__(self, m: Module, name: str, side: int, cur, reset, step, base=None):
        S = side
        iw = max(1, ceil_log2(S))
        sig = lambda n, w=COUNT_WIDTH, **kw: Signal(w, name=f"{name}_{n}", **kw)  # noqa: E731
        self.i, self.tc, self.tr = sig("i", iw), sig("tc"), sig("tr")
        self.tr_off, self.tc_off = sig("tr_off"), sig("tc_off")       # tr*S, tc*tc_stride
        self.tc_cls, self.col_tr_off = sig("tc_cls"), sig("col_tr_off")  # tc*S, tr*col_tr_stride
        # the penultimate tile column and tile row (tiles - 2, modulo 2**COUNT_WIDTH), and
        # whether there is one tile column: the flags below are compared on the current
        # counters, with no adder before the compare (tc + 1 == tiles_c - 1 is tc == tc_pen)
        tc_pen, tr_pen = sig("tc_pen"), sig("tr_pen")
        tc_one = sig("tc_one", 1, init=1)
        # registers equal to i == S - 1, tc == tiles_c - 1, tr == tiles_r - 1 in every cycle
        # (they change with the counters, on reset and step only); the reset values match
        self.at_i_last = sig("at_i_last", 1, init=int(S == 1))
        self.at_tc_last = sig("at_tc_last", 1, init=1)
        self.at_tr_last = sig("at_tr_last", 1, init=1)
        self.final = Signal(name=f"{name}_final")
        self.off = sig("off")
        self.m = sig("m")
        n = {k: sig(f"next_{k}", w) for k, w in
             (("i", iw), ("tc", COUNT_WIDTH), ("tr", COUNT_WIDTH), ("tr_off", COUNT_WIDTH),
              ("tc_off", COUNT_WIDTH), ("tc_cls", COUNT_WIDTH), ("col_tr_off", COUNT_WIDTH))}
        regs = {"i": self.i, "tc": self.tc, "tr": self.tr, "tr_off": self.tr_off,
                "tc_off": self.tc_off, "tc_cls": self.tc_cls, "col_tr_off": self.col_tr_off}
        m.d.comb += self.final.eq(self.at_i_last & self.at_tc_last & self.at_tr_last)
        m.d.comb += [n[k].eq(v) for k, v in regs.items()]
        with m.If(self.at_i_last):
            m.d.comb += n["i"].eq(0)
            with m.If(self.at_tc_last):
                m.d.comb += [n["tc"].eq(0), n["tc_off"].eq(0), n["tc_cls"].eq(0),
                             n["tr"].eq(self.tr + 1), n["tr_off"].eq(self.tr_off + S),
                             n["col_tr_off"].eq(self.col_tr_off + cur.col_tr_stride)]
            with m.Else():
                m.d.comb += [n["tc"].eq(self.tc + 1),
                             n["tc_off"].eq(self.tc_off + cur.tc_stride),
                             n["tc_cls"].eq(self.tc_cls + S)]
        with m.Else():
            m.d.comb += n["i"].eq(self.i + 1)

        def next_tile(tile, tr_row0):
            # row 0 of the tile after a tile's last row, as an offset or an address: the
            # next tile row's (its row 0 + S) or the next tile's in this tile row
            return Mux(self.at_tc_last, tr_row0 + S, tile + cur.tc_stride)

        # off and m kept incrementally (one adder each): tile_off = tr_off + tc_off is the
        # offset of the current tile's row 0
        tile_off = sig("tile_off")
        next_tile_off = sig("next_tile_off")
        next_off, next_m = sig("next_off"), sig("next_m")
        m.d.comb += [next_tile_off.eq(tile_off), next_off.eq(self.off + 1),
                     next_m.eq(self.m + 1)]
        with m.If(self.at_i_last):
            m.d.comb += [next_tile_off.eq(next_tile(tile_off, self.tr_off)),
                         next_m.eq(Mux(self.at_tc_last, self.tr_off + S, self.tr_off)),
                         next_off.eq(next_tile_off)]
        self.addr = sig("addr")
        self.addr_next = sig("addr_next")
        self.m_next = sig("m_next")
        m.d.comb += [self.addr_next.eq(self.addr), self.m_next.eq(self.m)]
        m.d.sync += [self.addr.eq(self.addr_next), self.m.eq(self.m_next)]
        if base is not None:
            # base + tile_off and base + tr_off, kept like tile_off and tr_off
            tile_addr, tr_addr = sig("tile_addr"), sig("tr_addr")
            next_tile_addr = sig("next_tile_addr")
            m.d.comb += next_tile_addr.eq(Mux(self.at_i_last, next_tile(tile_addr, tr_addr),
                                              tile_addr))
        with m.If(reset):
            m.d.sync += [r.eq(0) for r in regs.values()]
            m.d.sync += [self.off.eq(0), tile_off.eq(0)]
            m.d.comb += self.m_next.eq(0)
            one_tc = (cur.tiles_c - 1)[:COUNT_WIDTH] == 0
            m.d.sync += [tc_pen.eq(cur.tiles_c - 2), tr_pen.eq(cur.tiles_r - 2),
                         tc_one.eq(one_tc)]
            m.d.sync += [self.at_i_last.eq(S == 1),
                         self.at_tc_last.eq(one_tc),
                         self.at_tr_last.eq((cur.tiles_r - 1)[:COUNT_WIDTH] == 0)]
            if base is not None:
                m.d.comb += self.addr_next.eq(base)
                m.d.sync += [tile_addr.eq(base), tr_addr.eq(base)]
        with m.Elif(step):
            m.d.sync += [r.eq(n[k]) for k, r in regs.items()]
            m.d.sync += [self.off.eq(next_off), tile_off.eq(next_tile_off)]
            # the flags of the next counters (n), from the current ones: after a tile's last
            # row i is 0 (last if S == 1), tc is 0 after the last tile column (last if there
            # is one) and tc + 1 otherwise, and tr moves on after a tile row's last tile
            m.d.sync += self.at_i_last.eq(~self.at_i_last & (self.i == S - 2) if S > 1 else 1)
            with m.If(self.at_i_last):
                m.d.sync += self.at_tc_last.eq(Mux(self.at_tc_last, tc_one, self.tc == tc_pen))
                with m.If(self.at_tc_last):
                    m.d.sync += self.at_tr_last.eq(self.tr == tr_pen)
            m.d.comb += self.m_next.eq(next_m)
            if base is not None:
                m.d.comb += self.addr_next.eq(Mux(self.at_i_last, next_tile_addr,
                                                  self.addr + 1))
                m.d.sync += tile_addr.eq(next_tile_addr)
                with m.If(self.at_i_last & self.at_tc_last):
                    m.d.sync += tr_addr.eq(tr_addr + S)


class Trainer(wiring.Component):
    """Runs NITRO-D training programs (see module doc and nitrod/isa.py).

    Parameters
    ----------
    geometry : nitrod.isa.Geometry -- array side, memory depths and lane widths.
    mac_options : further keyword arguments of the MacArray (default ``multiplier="dsp"``:
        hard multipliers mapped by Yosys, as on the iCE40).  The ECP5 boards pass
        ``"ecp5_dsp"`` (each MULT18X18D with its own registers, array latency 6 instead of 5;
        Verilator runs the block's model, sim/harness.py): the same results, one cycle later
        per tile.  The default stays ``"dsp"`` because Verilator compiles the 64 blocks' model
        of the 8 x 8 several times slower (tests/test_trainer.py runs both).
    bank_depth : words per memory bank (a power of two; hw/banked_memory.py): 2048, one
        DP16KD of 9-bit lanes on the ECP5, so that no depth multiplexer follows a block RAM.
    memory_block : what the banks of ACT, WGT, ERR and CODE are made of (hw/banked_memory.py:
        ``BLOCKS``): ``"memory"`` (default; any simulator, any device) or ``"dp16kd"`` (the
        ECP5 boards: block RAM instantiated by hand, hw/ecp5_bram.py, whose own output
        registers are the shared bank registers; Verilator runs the block's model).
    row_cycles : cycles each FORWARD, LOSS or SGD row takes to enter the post-processing
        lanes, which then have ``side / row_cycles`` Scaler, NitroRelu and SgdUpdate units
        (hw/post_lanes.py); default ``default_row_cycles(side)``.
    fifo_depth : rows the FIFO between the lanes and the writer holds (default 64; 1 or at
        least 3); a row leaves the engine only against a credit for one, so a small FIFO
        slows the program and loses nothing (``STATUS.row_lost`` watches it).

    Ports
    -----
    bus : In(BusSignature(BUS_ADDR_WIDTH)) -- host access (registers and memories)
    busy : Out(1) -- a program is running
    overflow : Out(3) -- the OVERFLOW register (mac, backerr, sgd)
    """

    #: cycles from ``bus.r_en`` to the word on ``bus.r_data`` (hw/host_link.py: BusSignature):
    #: the bus inputs are registered at the Trainer's edge (1), the decoded memory strobes,
    #: word address and data are registered (1), and once more (the read enable a register
    #: beside each bank, the address in the memory's address register: 1), the block RAM
    #: reads (1), its words are registered as they leave the RAM (1), the bank is selected
    #: in two steps, within groups of :attr:`BANK_GROUP` banks (1) and among the groups (1),
    #: then each region selects the chunk in two steps, within groups of :attr:`READ_GROUP`
    #: chunks (1) and among the groups (1), then the region is selected into the register
    #: that drives ``bus.r_data`` (1)
    READ_LATENCY = 10
    #: banks per group in the first step of the bank select of the host's and the front's
    #: reads (BankedMemory.registered's ``group``): WGT's 6 banks of 144-bit words (16 DP16KD
    #: each, spread over the die) through one 6-to-1 multiplexer (3 LUTs) into the host's
    #: register were the MNIST-memory build's critical path (10.60 ns, 8.75 of it routing),
    #: the front's (into the lanes' WGT input, 10.50) next to it
    BANK_GROUP = 4
    #: chunks per group in the first step of the host read's chunk select (a 4-to-1
    #: multiplexer per bit, one slice)
    READ_GROUP = 4

    #: the memories (module paths below the Trainer) whose read never meets a write of the same
    #: word in the same cycle (host accesses only while idle; an instruction's read and written
    #: words are disjoint, or, for SGD's WGT, each row is written well after its only read);
    #: watched by STATUS.collision.  boards/build.py tells Yosys (hw/banked_memory.py).
    collision_free_memories = ("mem_*",)

    #: PROG words at most this deep go to distributed RAM on the ECP5 (boards/build.py): its
    #: 362-bit words took 11 DP16KD whose outputs, 5.8 ns clock-to-output and a route across
    #: the die into the sequencer's register, were the MNIST-memory build's critical path
    #: (11.6 ns); 64 x 362 bits are 364 TRELLIS_DPR16X4 beside the sequencer
    DISTRIBUTED_PROG_DEPTH = 64

    @classmethod
    def distributed_regions(cls, geometry) -> tuple:
        """The regions whose memory goes to distributed RAM on the ECP5 with ``geometry``:
        PROG when at most :attr:`DISTRIBUTED_PROG_DEPTH` deep, and LABEL (at most 256 x 8
        bits: 32 TRELLIS_DPR16X4 instead of a DP16KD whose output, 5.8 ns clock-to-output and
        a route into the writer's W1 label register, was 9.8 to 10.0 ns on MNIST-memory 8 x 8
        builds).  The boards' first fit check, on the geometry alone, uses this too."""
        prog = (Region.PROG,) if geometry.prog_depth <= cls.DISTRIBUTED_PROG_DEPTH else ()
        return (*prog, Region.LABEL)

    @property
    def distributed_memories(self) -> tuple:
        """The memories (module paths below the Trainer) for distributed RAM on the ECP5: the
        :meth:`distributed_regions`' memories, and the row FIFO between the lanes and the
        writer (``fifo_depth`` rows: its block RAM's output into the writer's W0R registers,
        10.44 ns, was the MNIST-memory build's second path after the host's WGT read)."""
        regions = self.distributed_regions(self.geometry)
        return (*(f"mem_{r.name.lower()}" for r in regions), "fifo")

    #: the memories whose readers share one register per bank (below; with
    #: ``memory_block="dp16kd"`` those are the blocks' own output registers)
    SHARED_REGIONS = (Region.ACT, Region.WGT, Region.ERR, Region.CODE)

    def __init__(self, geometry: Geometry = Geometry(), *, mac_options: dict | None = None,
                 bank_depth: int = 2048, row_cycles: int | None = None, fifo_depth: int = 64,
                 memory_block: str = "memory"):
        g = geometry
        if fifo_depth < 1 or fifo_depth == 2:
            # Amaranth's SyncFIFOBuffered of depth 2 refuses a write in the cycle after the
            # first one into it (that row is on its way to the output register), so it
            # does not always hold the two rows that two credits promise
            self._MustUse__silence = True       # never built: no "unused" warning
            raise ValueError(f"fifo_depth must be 1 or at least 3, got {fifo_depth}")
        if bank_depth < 1 or bank_depth & (bank_depth - 1):
            self._MustUse__silence = True       # never built: no "unused" warning
            raise ValueError(f"bank_depth must be a power of two, got {bank_depth}")
        self.bank_depth = bank_depth
        if memory_block not in BLOCKS:
            self._MustUse__silence = True       # never built: no "unused" warning
            raise ValueError(f"memory_block must be one of {BLOCKS}, not {memory_block!r}")
        self.memory_block = memory_block
        check_geometry(g, count_width=COUNT_WIDTH)
        self.geometry = g
        S = g.side
        #: rows between the engine and the writer (the lanes' latency plus slack for the
        #: transposer's S-cycle emission per tile); a row leaves the engine against a credit
        self.fifo_depth = fifo_depth
        self.engine = TileEngine(S, S, a_width=g.act_width, b_width=max(g.err_width, g.wgt_width),
                                 acc_width=g.acc_width, a_depth=g.act_depth,
                                 b_depth=max(g.wgt_depth, g.err_depth), count_width=COUNT_WIDTH,
                                 cycle_width=32,
                                 mac_options={"multiplier": "dsp", **(mac_options or {})},
                                 memories="external",
                                 read_latency=5)
        self.lanes = PostLanes(S, acc_width=g.acc_width, wgt_width=g.wgt_width,
                               err_width=g.err_width,
                               fan_in_width=g.divisor_max.bit_length(),
                               lr_div_max=2 ** (g.d_g_width - 1),
                               decay_max=2 ** (g.d_w_width - 1), free_running=True,
                               row_cycles=(default_row_cycles(S) if row_cycles is None
                                           else row_cycles))
        #: cycles between two FORWARD, LOSS or SGD rows the front hands to the lanes (their
        #: ``row_cycles``); ``STATUS.row_lost`` watches that the lanes took every row
        self.row_spacing = self.lanes.row_cycles
        if self.lanes.sgds[0].d_g.shape().width != g.d_g_width:
            raise ValueError("d_g_width does not match the SgdUpdate")
        self.instr_layout = instruction_layout()
        self.words = {
            Region.ACT: data.ArrayLayout(signed(g.act_width), S),
            Region.WGT: data.ArrayLayout(signed(g.wgt_width), S),
            Region.ERR: data.ArrayLayout(signed(g.err_width), S),
            Region.CODE: data.ArrayLayout(unsigned(CODE_WIDTH), S),
            Region.LABEL: unsigned(8),
            Region.PROG: unsigned(INSTRUCTION_BITS),
        }
        super().__init__({
            "bus": In(BusSignature(BUS_ADDR_WIDTH, read_latency=self.READ_LATENCY)),
            "busy": Out(1),
            "overflow": Out(3),
        })

    def elaborate(self, platform):
        m = Module()
        g = self.geometry
        S = g.side
        m.submodules.engine = eng = self.engine
        m.submodules.lanes = lanes = self.lanes
        bus = self.bus
        # The bus inputs are registered at the Trainer's edge: the link's address and
        # strobes come from far away (the UART end of the die), and everything they decode
        # (the CONTROL register's start, the memories' host ports) then starts at a flip-flop.
        # Writes and reads are delayed alike, so their order is kept.
        bus_addr = Signal.like(bus.addr, reset_less=True)
        bus_w_data = Signal.like(bus.w_data, reset_less=True)
        bus_w_en, bus_r_en = Signal(), Signal()
        m.d.sync += [bus_addr.eq(bus.addr), bus_w_data.eq(bus.w_data),
                     bus_w_en.eq(bus.w_en), bus_r_en.eq(bus.r_en)]

        # ---- memories: one write port and one read port each -------------------------------
        # cut into banks of one block RAM's depth (hw/banked_memory.py); every reader
        # registers each bank's word before the bank is selected.  Every memory keeps the
        # registers in front of its blocks itself (registered_ports): the multiplexer between
        # the host's port and the datapath's comes before them.
        mems, wr, rd = {}, {}, {}
        collision = Signal()                  # sticky: some memory's read met its write
        for region, shape in self.words.items():
            block = self.memory_block if region in self.SHARED_REGIONS else "memory"
            mem = BankedMemory(shape, g.depth(region), bank_depth=self.bank_depth,
                               registered_ports=True, block=block,
                               registered_read_enable=region in self.SHARED_REGIONS)
            m.submodules[f"mem_{region.name.lower()}"] = mems[region] = mem
            wr[region], rd[region] = mem.wr, mem.rd
            with m.If(mem.collision):
                m.d.sync += collision.eq(1)
        # ACT, WGT, ERR and CODE (the engine's operands, many banks; the front's codes) keep
        # one register per bank that all their readers share (hw/banked_memory.py): a block's
        # output then drives one flip-flop, not one per reader (engine, front, host), 2,215
        # fewer on the MNIST-memory 8 x 8 (ACT, WGT, ERR).  (The placer still did not put it
        # beside its block: docs section 8.  With memory_block="dp16kd" it is the block's own
        # output register.)
        # Its enable (a copy per bank) is the enable of the reader that has the port, driven at
        # the end (shared_en_next).
        shared_en = {r: mems[r].share_registers(m, f"{r.name.lower()}_shared")
                     for r in self.SHARED_REGIONS}

        # ---- sequencer state ---------------------------------------------------------------
        cur = Signal(self.instr_layout)
        pc = Signal(16)
        prog_start = Signal(16)
        cycles = Signal(32)
        retired = Signal(16)
        done_flag = Signal()
        op_error = Signal()
        access_error = Signal()
        ovf_mac = Signal()
        ovf_backerr = Signal()
        tile_lost = Signal()                  # sticky: the MacArray's flow-control watch
        row_lost = Signal()                   # sticky: a row the lanes were not ready for
                                              # (or the writer's FIFO had no room for)
        fifo_overrun = Signal()               # a row written to the full FIFO (below)
        start = Signal()                      # a START written in the last bus cycle (a
                                              # flip-flop: the bus decode stays off the
                                              # sequencer's next state and busy's copies)
        clear = Signal()                      # a CONTROL clear written in the last bus cycle
                                              # (a flip-flop, as start: the decode stays off
                                              # the sticky flags' enables)
        instr_done = Signal()
        issue = Signal()                      # ISSUE state: walkers reset, engine offered
        run = Signal()                        # in the RUN state (a flip-flop of its own, not
                                              # decoded from the state: it gates the FIFO's reads)
        # run's next value (the front's ready register is computed from it): set as ISSUE
        # hands the instruction to the engine, cleared as RUN ends
        run_next = Signal()
        m.d.comb += run_next.eq((issue & eng.instr.ready) | (run & ~instr_done))
        m.d.sync += run.eq(run_next)
        busy = self.busy
        engaged = Signal()                    # busy, or a START about to make it so: what the
        m.d.comb += engaged.eq(busy | start)  # host sees as busy and what refuses its accesses
        op = cur.op

        # ---- host bus decode ----------------------------------------------------------------
        region = bus_addr[REGION_SHIFT:]
        offset = bus_addr[:REGION_SHIFT]
        host_chunk, host_in_range = {}, {}
        for r in self.words:
            cb = chunk_bits_of(g.word_bits(r))
            host_chunk[r] = offset[:cb] if cb else Const(0, 1)
            host_in_range[r] = offset[cb:] < g.depth(r)
        max_chunks = max(chunks_of(g.word_bits(r)) for r in self.words)
        stage = Signal(32 * max(1, max_chunks - 1))
        # Staging is not a memory write: only the last chunk, checked in full, writes the
        # word from it.  So a chunk is staged without the range and busy checks, which keeps
        # the depth compare off the path to the 32 x (n - 1) stage flip-flops (the 2 x 2
        # board build's critical path); a dropped chunk still sets access_error below.  The
        # staging register's word enables are flip-flops, decoded from the bus inputs in the
        # cycle bus_addr registers them (so they equal the decode of bus_addr): each drives
        # its word's 32 flip-flops, and no decode of bus_addr drives all of them.
        stage_en = Signal(max(1, max_chunks - 1), name="stage_en")
        stage_en_next = [Const(0, 1)] * len(stage_en)
        for r in self.words:
            cb = chunk_bits_of(g.word_bits(r))
            for k in range(chunks_of(g.word_bits(r)) - 1):
                stage_en_next[k] = stage_en_next[k] | (
                    bus.w_en & (bus.addr[REGION_SHIFT:] == r) & (bus.addr[:cb] == k))
        m.d.sync += stage_en.eq(Cat(*stage_en_next))
        for k in range(len(stage_en)):
            with m.If(stage_en[k]):
                m.d.sync += stage.word_select(k, 32).eq(bus_w_data)
        host_wr = {r: Signal(name=f"host_wr_{r.name.lower()}") for r in self.words}
        host_rd = {r: Signal(name=f"host_rd_{r.name.lower()}") for r in self.words}
        for r in self.words:
            nch = chunks_of(g.word_bits(r))
            hit = (region == r) & host_in_range[r] & ~engaged
            m.d.comb += [
                host_wr[r].eq(bus_w_en & hit & (host_chunk[r] == nch - 1)),
                host_rd[r].eq(bus_r_en & hit),
            ]
        mem_region = (region >= Region.PROG) & (region <= Region.LABEL)
        with m.If((bus_w_en | bus_r_en) & mem_region):
            bad = engaged
            for r in self.words:
                bad = bad | ((region == r) & ~host_in_range[r])
            with m.If(bad):
                m.d.sync += access_error.eq(1)

        # The memories' host ports are driven from registers: the decoded strobes, the offset
        # (each region's word address is a slice of it) and the data (staged chunks and the
        # last one).  Register accesses are not delayed; a memory write still lands before
        # a START written in the next bus cycle can fetch.
        offset_q = Signal.like(offset, name="host_offset_q", reset_less=True)
        stage_q = Signal.like(stage, name="host_stage_q", reset_less=True)
        w_data_q = Signal.like(bus_w_data, name="host_w_data_q", reset_less=True)
        host_wr_q = {r: Signal(name=f"host_wr_q_{r.name.lower()}") for r in self.words}
        host_rd_q = {r: Signal(name=f"host_rd_q_{r.name.lower()}") for r in self.words}
        host_rd_qq = {r: Signal(name=f"host_rd_qq_{r.name.lower()}") for r in self.words}
        m.d.sync += [offset_q.eq(offset), stage_q.eq(stage), w_data_q.eq(bus_w_data)]
        m.d.sync += [host_wr_q[r].eq(host_wr[r]) for r in self.words]
        m.d.sync += [host_rd_q[r].eq(host_rd[r]) for r in self.words]
        m.d.sync += [host_rd_qq[r].eq(host_rd_q[r]) for r in self.words]
        host_word_q = {r: offset_q[chunk_bits_of(g.word_bits(r)):] for r in self.words}

        def host_word_data(r):
            nch = chunks_of(g.word_bits(r))
            return Cat(stage_q[:32 * (nch - 1)], w_data_q)[:g.word_bits(r)]

        # register writes
        m.d.sync += [start.eq(0), clear.eq(0)]
        with m.If(bus_w_en & (region == Region.REGS)):
            with m.Switch(offset):
                with m.Case(Reg.CONTROL):
                    m.d.sync += [start.eq(bus_w_data[0] & ~engaged), clear.eq(bus_w_data[1])]
                with m.Case(Reg.PROG_START):
                    m.d.sync += prog_start.eq(bus_w_data)

        # register reads: the values sampled in the bus cycle after the read, selected in two
        # steps (below)
        errors = Cat(op_error, access_error, collision, tile_lost, row_lost)   # sticky
        overflow = Cat(ovf_mac, ovf_backerr, lanes.sgd_overflow)                # sticky
        m.d.comb += self.overflow.eq(overflow)
        # the sticky flags read as cleared from the bus cycle after the CONTROL write, in
        # which the clear flip-flop clears them
        status = Cat(engaged, done_flag, errors & ~clear.replicate(len(errors)))
        reg_table = {Reg.ID: MAGIC, Reg.STATUS: status,
                     Reg.OVERFLOW: overflow & ~clear.replicate(len(overflow)),
                     Reg.CYCLES: cycles, Reg.RETIRED: retired, Reg.PROG_START: prog_start,
                     **g.registers()}
        # Two steps: as the read is registered, the registers below 8 (the live ones) and the
        # geometry constants (8 and up) are each selected by the offset's low bits into a
        # register, with which of them (or none) the offset names; one cycle later, that
        # choice.  (All of the offset against every address in one cycle was 13 ns on an
        # 8 x 8 board build.)
        assert all(int(addr) < 32 for addr in reg_table)
        reg_low, reg_high = Signal(32), Signal(32)
        with m.Switch(offset[:3]):
            for addr, value in reg_table.items():
                if addr < 8:
                    with m.Case(int(addr)):
                        m.d.comb += reg_low.eq(value)
        with m.Switch(offset[:5]):
            for addr, value in reg_table.items():
                if addr >= 8:
                    with m.Case(int(addr)):
                        m.d.comb += reg_high.eq(value)
        # Read latency READ_LATENCY = 10: the bus inputs are registered (above), then the
        # memories' host strobes, then once more (the blocks read a cycle after the strobe:
        # each bank's read enable is a register beside it); the words out of the block RAMs
        # are registered as they are (no logic behind a block RAM's slow output: the block's
        # own output register on the ECP5), the bank is selected in two steps into registers
        # (within groups of BANK_GROUP banks, then among the groups: WGT's 6 banks in one
        # step were 10.60 ns on the MNIST-memory board build); then each region selects the
        # chunk read in two steps, each into registers of its own beside its banks (within
        # groups of READ_GROUP chunks, then among the groups: PROG's 12 chunks through one
        # 12-to-1 multiplexer were 5 LUTs, the 8 x 8 board build's critical path), and the
        # region is selected from those into the register that drives bus.r_data (the host
        # link's logic starts from it).  So 32 bits per region, not every region's whole
        # word, travel to the r_data register.
        rd_region = Signal(range(len(Region)))
        rd_chunk = Signal(max(1, ceil_log2(max_chunks)))
        rd_reg_low = Signal(32, reset_less=True)
        rd_reg_high = Signal(32, reset_less=True)
        rd_reg_which = Signal(2)            # 1: low, 2: high, 0: no register (reads 0)
        rd_ok = Signal()
        rd_pending = Signal()
        with m.If(bus_r_en):
            m.d.sync += [rd_region.eq(region), rd_ok.eq(0),
                         rd_reg_low.eq(reg_low), rd_reg_high.eq(reg_high),
                         rd_reg_which.eq(Mux(offset[5:] != 0, 0,
                                             Mux(offset[3:5] == 0, 1, 2)))]
            for r in self.words:
                with m.If(region == r):
                    m.d.sync += [rd_chunk.eq(host_chunk[r]), rd_ok.eq(host_rd[r])]
        rd_pending0, rd_pending1 = Signal(), Signal()
        m.d.sync += [rd_pending0.eq(bus_r_en), rd_pending1.eq(rd_pending0),
                     rd_pending.eq(rd_pending1)]
        # each region's bank registers load on a copy of rd_pending of their own (the block
        # RAMs are spread over the whole die)
        rd_pending_of = {r: replica(m, rd_pending1, f"rd_pending_{r.name.lower()}")
                         for r in self.words}
        # the bank selected in two steps (BANK_GROUP), so the word is a cycle later
        rd_raw = {r: mems[r].registered(m, rd_pending_of[r], f"rd_raw_{r.name.lower()}",
                                        group=self.BANK_GROUP)
                  for r in self.words}
        rd_pending_late = Signal()
        m.d.sync += rd_pending_late.eq(rd_pending)
        rd_words = {r: Signal(g.word_bits(r), name=f"rd_word_{r.name.lower()}", reset_less=True)
                    for r in self.words}
        for r in self.words:
            with m.If(replica(m, rd_pending_late, f"rd_pending2_{r.name.lower()}")):
                m.d.sync += rd_words[r].eq(rd_raw[r])
        # region, chunk, register value and "ok" travel beside the read to the output cycle
        # (the register value from the second stage on, when its choice is made)
        rd_meta = [(rd_region, rd_chunk, None, rd_ok)]
        for n in range(2, self.READ_LATENCY - 1):
            region_n, chunk_n, reg_n, ok_n = rd_meta[-1]
            later = (Signal.like(rd_region, name=f"rd_region{n}"),
                     Signal.like(rd_chunk, name=f"rd_chunk{n}"),
                     Signal(32, name=f"rd_reg{n}", reset_less=True),
                     Signal(name=f"rd_ok{n}"))
            if reg_n is None:
                reg_n = Mux(rd_reg_which == 1, rd_reg_low,
                            Mux(rd_reg_which == 2, rd_reg_high, 0))
            m.d.sync += [dst.eq(src) for dst, src in zip(later, (region_n, chunk_n, reg_n, ok_n))]
            rd_meta.append(later)
        # The chunk of each region's word, in two steps: each step reads the chunk number (and
        # "ok") from copies of its own per region (the regions' banks are spread over the die;
        # a copy of a register from its next value, hw/replica.py).  Zero when the read was
        # refused.
        group = self.READ_GROUP
        _, chunk_before_group, _, _ = rd_meta[-4]
        _, chunk_before_sel, _, ok_before_sel = rd_meta[-3]
        rd_sel = {}
        for r in self.words:
            name = r.name.lower()
            nch = chunks_of(g.word_bits(r))
            chunks = [rd_words[r][32 * k:32 * (k + 1)] for k in range(nch)]
            ngroups = (nch + group - 1) // group
            gbits = ceil_log2(min(nch, group))
            # copies of the chunk number only where a step selects (a one-chunk word needs
            # none, a one-group word none in the second step)
            chunk_g = replica(m, chunk_before_group, f"rd_chunk_group_{name}") if gbits else None
            rd_group = [Signal(32, name=f"rd_group_{name}{k}", reset_less=True)
                        for k in range(ngroups)]
            for k, reg in enumerate(rd_group):
                members = chunks[group * k:group * (k + 1)]
                if len(members) == 1:
                    m.d.sync += reg.eq(members[0])
                else:
                    members += [Const(0, 32)] * ((1 << gbits) - len(members))
                    m.d.sync += reg.eq(Cat(*members).word_select(chunk_g[:gbits], 32))
            ok_s = replica(m, ok_before_sel, f"rd_ok_sel_{name}")
            rd_sel[r] = Signal(32, name=f"rd_sel_{name}", reset_less=True)
            if ngroups == 1:
                chosen = rd_group[0]
            else:
                chunk_s = replica(m, chunk_before_sel, f"rd_chunk_sel_{name}")
                chosen = Cat(*rd_group, Const(0, 32 * ((1 << ceil_log2(ngroups)) - ngroups)))
                chosen = chosen.word_select(chunk_s[gbits:gbits + ceil_log2(ngroups)], 32)
            m.d.sync += rd_sel[r].eq(Mux(ok_s, chosen, 0))
        rd_region_last, _, rd_reg_last, _ = rd_meta[-1]
        r_data = Signal(32)
        with m.Switch(rd_region_last):
            with m.Case(Region.REGS):
                m.d.sync += r_data.eq(rd_reg_last)
            for r in self.words:
                with m.Case(r):
                    m.d.sync += r_data.eq(rd_sel[r])
        m.d.comb += bus.r_data.eq(r_data)

        # ---- sequencer ----------------------------------------------------------------------
        prog_rd = rd[Region.PROG]
        loading = Signal()                      # LOAD state
        fetched_raw = mems[Region.PROG].registered(m, loading, "fetched_raw")  # PROG[pc]
        fetched = Signal(self.instr_layout)     # ... registered once more
        with m.If(busy):
            m.d.sync += cycles.eq(cycles + 1)
        # busy's next value, so that copies of busy (hw/replica.py) can drive the memories'
        # port multiplexers below, one per region (their block RAMs are spread over the die)
        busy_next = Signal()
        m.d.comb += busy_next.eq(busy)
        m.d.sync += busy.eq(busy_next)
        # pc's next value: PROG's address register loads it (registered_ports), so that it
        # holds pc in FETCH
        pc_next = Signal.like(pc)
        m.d.comb += pc_next.eq(pc)
        m.d.sync += pc.eq(pc_next)
        with m.FSM(name="seq"):
            with m.State("IDLE"):
                with m.If(start):
                    m.d.comb += [busy_next.eq(1), pc_next.eq(prog_start)]
                    m.d.sync += [cycles.eq(0), retired.eq(0), done_flag.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += prog_rd.en.eq(1)
                m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += loading.eq(1)
                m.next = "LOAD2"
            with m.State("LOAD2"):
                m.d.sync += fetched.eq(fetched_raw)
                m.next = "DECODE"
            with m.State("DECODE"):
                m.d.sync += cur.eq(fetched)
                valid_op = ((fetched.op == Op.FORWARD) | (fetched.op == Op.LOSS) |
                            (fetched.op == Op.BACKWARD) | (fetched.op == Op.SGD))
                nonempty = ((fetched.k_len != 0) & (fetched.tiles_r != 0) &
                            (fetched.tiles_c != 0))
                with m.If(fetched.op == Op.END):
                    m.d.comb += busy_next.eq(0)
                    m.d.sync += done_flag.eq(1)
                    m.next = "IDLE"
                with m.Elif(valid_op & nonempty & (pc < g.prog_depth)):
                    m.next = "ISSUE"
                with m.Else():
                    m.d.comb += busy_next.eq(0)
                    m.d.sync += [done_flag.eq(1), op_error.eq(1)]
                    m.next = "IDLE"
            with m.State("ISSUE"):
                m.d.comb += [issue.eq(1), eng.instr.valid.eq(1)]
                with m.If(eng.instr.ready):
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(instr_done):
                    m.d.comb += pc_next.eq(pc + 1)
                    m.d.sync += retired.eq(retired + 1)
                    m.next = "FETCH"
        for name in eng.instr_layout.members:
            m.d.comb += eng.instr.payload[name].eq(cur[name])
        with m.If(clear):
            m.d.sync += [op_error.eq(0), access_error.eq(0), ovf_mac.eq(0), ovf_backerr.eq(0),
                         collision.eq(0), tile_lost.eq(0), row_lost.eq(0)]
        with m.Else():
            with m.If(eng.tile_lost):
                m.d.sync += tile_lost.eq(1)
            # the front spaces FORWARD, LOSS and SGD rows ``row_spacing`` cycles apart and
            # does not look at the lanes' ready; a row offered while it is low is dropped
            # (and the credits keep the FIFO from overflowing; a row written while it is full
            # would be lost too)
            with m.If((lanes.i.valid & ~lanes.i.ready) | fifo_overrun):
                m.d.sync += row_lost.eq(1)
        m.d.comb += lanes.clear.eq(clear)

        # ---- engine operand reads ----------------------------------------------------------
        # read latency 5, every stage advancing with the port's enable: the address is
        # registered in front of the block RAM (the memory's own register, below), the block
        # reads, its output is registered as it is (the shared bank registers, beside the
        # blocks), the bank is selected in two steps, within groups of BANK_GROUP banks into
        # registers and among the groups into act_q/wgt_q/err_q, and only then is the B
        # source selected
        act_q, wgt_q, err_q = (Signal(self.words[r], reset_less=True)
                               for r in (Region.ACT, Region.WGT, Region.ERR))
        # the bank registers are the memories' shared ones (their enables, copies, are driven
        # at the end); each group register (a copy per group) and each of act_q/wgt_q/err_q
        # loads on a copy of the port's enable of its own (hw/replica.py).  The enable is 1
        # after reset (the engine's stages are empty), and so are its copies.
        def operand(r, port, name):
            group_en = replicas(m, port.en_next, mems[r].groups(self.BANK_GROUP),
                                f"{name}_group_en", init=1)
            return mems[r].registered(m, port.en, name, group=self.BANK_GROUP,
                                      group_en=group_en)
        act_p = operand(Region.ACT, eng.a_rd, "act_p")
        wgt_p = operand(Region.WGT, eng.b_rd, "wgt_p")
        err_p = operand(Region.ERR, eng.b_rd, "err_p")
        act_q_en = replica(m, eng.a_rd.en_next, "act_q_en", init=1)
        wgt_q_en = replica(m, eng.b_rd.en_next, "wgt_q_en", init=1)
        err_q_en = replica(m, eng.b_rd.en_next, "err_q_en", init=1)
        with m.If(act_q_en):
            m.d.sync += act_q.eq(act_p)
        with m.If(wgt_q_en):
            m.d.sync += wgt_q.eq(wgt_p)
        with m.If(err_q_en):
            m.d.sync += err_q.eq(err_p)
        for j in range(S):
            m.d.comb += [
                eng.a_rd.data[j].eq(act_q[j]),
                eng.b_rd.data[j].eq(Mux(cur.b_src, err_q[j], wgt_q[j])),
            ]

        # ---- front: take a drained row, read its aux word (CODE or WGT) --------------------
        # Credit flow control: the lanes never stall (their output goes into a FIFO that
        # always has room), so no ready signal runs back through them.  ``credits`` counts
        # the FIFO words neither holding a row nor promised to a row inside the lanes; a row
        # leaves the engine only against a credit.
        # Stage F0 takes the row and loads its aux word's address into the memory's address
        # register; F1 reads the aux word (the block's read enable, a register beside each
        # bank, is valid1); F2 registers it out of the block RAM (its own output register on
        # the ECP5); F3 and F4 select the bank in two steps into registers (BANK_GROUP); the
        # row travels beside it (F1 to F4) and F5 hands both to the lanes.
        res = eng.results
        valid1, valid2, valid3, valid4, valid5 = (Signal(name=f"valid{n}") for n in range(1, 6))
        # data registers have no reset (the valid flags say what they hold): fewer loads on
        # the reset net
        row1 = Signal(data.ArrayLayout(signed(g.acc_width), S), reset_less=True)
        row2, row3, row4, row5 = (Signal.like(row1, name=f"row{n}") for n in range(2, 6))
        wgt5 = Signal(self.words[Region.WGT], reset_less=True)
        code5 = Signal(self.words[Region.CODE], reset_less=True)
        take_f = Signal()
        credits = Signal(range(self.fifo_depth + 1), init=self.fifo_depth)
        # FORWARD, LOSS and SGD rows leave the engine at most one every ``row_cycles`` cycles:
        # the lanes hand each to their units in that many chunks (hw/post_lanes.py)
        k = self.row_spacing
        spaced = Signal(init=1)         # row_wait == 0, registered
        spaced_next = Signal()
        m.d.comb += spaced_next.eq(spaced)
        m.d.sync += spaced.eq(spaced_next)
        if k > 1:
            row_wait = Signal(range(k))
            with m.If(take_f & (op != Op.BACKWARD)):
                m.d.sync += row_wait.eq(k - 1)
                m.d.comb += spaced_next.eq(0)
            with m.Elif(row_wait != 0):
                m.d.sync += row_wait.eq(row_wait - 1)
                m.d.comb += spaced_next.eq(row_wait == 1)
        # The engine's ready is a flip-flop of its own (run, a credit and the spacing, from
        # their next values): it drives the MAC array's result bank, whose registers
        # are spread over every DSP column, so no logic may sit in front of that net.
        has_credit_next = Signal()
        front_ready = Signal()
        m.d.sync += front_ready.eq(run_next & has_credit_next & spaced_next)
        m.d.comb += [
            res.ready.eq(front_ready),
            take_f.eq(res.valid & res.ready),
        ]
        # the front's aux address (CODE or WGT word of the row taken) is a register of the
        # walker, front.addr; the memory's address register loads it as the row is taken
        front = _RowWalk(m, "front", S, cur, issue, take_f,
                         base=Mux(op == Op.SGD, cur.row_base, cur.aux_base))
        m.d.sync += [valid1.eq(take_f), row1.eq(res.payload.row), valid2.eq(valid1),
                     valid3.eq(valid2), valid4.eq(valid3), valid5.eq(valid4)]
        # F1 to F4's registers load on copies of valid1 to valid4 (hw/replica.py), one per
        # bank and row register (far apart); the bank select's group registers on its en_q
        with m.If(replica(m, take_f, "row2_en")):
            m.d.sync += row2.eq(row1)
        with m.If(replica(m, valid1, "row3_en")):
            m.d.sync += row3.eq(row2)
        with m.If(replica(m, valid2, "row4_en")):
            m.d.sync += row4.eq(row3)
        # the shared bank registers, selected in F3 (groups) and F4
        wgt4 = mems[Region.WGT].registered(m, valid2, "wgt4", group=self.BANK_GROUP)
        code4 = mems[Region.CODE].registered(m, valid2, "code4", group=self.BANK_GROUP)
        for reg, src, name in ((row5, row4, "row5"), (wgt5, wgt4, "wgt5"),
                               (code5, code4, "code5")):
            with m.If(replica(m, valid3, f"{name}_en")):
                m.d.sync += reg.eq(src)
        with m.If(take_f & res.payload.overflow):
            m.d.sync += ovf_mac.eq(1)
        with m.If(lanes.backerr):
            m.d.sync += ovf_backerr.eq(1)
        m.d.comb += [
            lanes.i.valid.eq(valid5),
            lanes.i.payload.acc.eq(row5),
            lanes.op.eq(op),
            lanes.divisor.eq(cur.divisor),
            lanes.inv_slope.eq(cur.inv_slope),
            lanes.d_g.eq(cur.d_g),
            lanes.d_w.eq(cur.d_w),
        ]
        for j in range(S):
            m.d.comb += [lanes.i.payload.wgt[j].eq(wgt5[j]),
                         lanes.i.payload.code[j].eq(code5[j])]

        # ---- lanes -> FIFO -> writer ------------------------------------------------------------
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=lanes.out_layout.size,
                                                    depth=self.fifo_depth)
        m.d.comb += [
            lanes.o.ready.eq(1),
            fifo.w_en.eq(lanes.o.valid),
            fifo.w_data.eq(lanes.o.payload),
            fifo_overrun.eq(fifo.w_en & ~fifo.w_rdy),
        ]

        # ---- writer: row writes, LOSS target, transposer -------------------------------------
        # Four stages: W0 takes a row from the FIFO, steps the walker and reads LABEL[m]; W0R
        # registers the row while the label is registered out of the block RAM; W1 adds the
        # bases and compares the masks and, from the label's register, which lane is the
        # label's class (and whether the row is padding); W2 applies the LOSS target and the
        # masks from those flags, and writes.  A row that completes
        # a tile to be transposed holds further takes until the transposer has emitted it.
        emitting = Signal()
        hold = Signal()
        emit_c = Signal(max(1, ceil_log2(S)))
        emit_addr = Signal(16)
        emit_final = Signal()
        take_w = Signal()
        m.d.comb += [take_w.eq(fifo.r_rdy & ~hold & run), fifo.r_en.eq(take_w)]
        with m.If(issue):
            m.d.sync += credits.eq(self.fifo_depth)
        with m.Elif(take_f & ~take_w):
            m.d.sync += credits.eq(credits - 1)
        with m.Elif(take_w & ~take_f):
            m.d.sync += credits.eq(credits + 1)
        # a credit in the next cycle: the credits left after this cycle's take and return
        # are not 0.  Decoded from flags of the credits register (no adder between take_f
        # and front_ready: ``credits - take_f + take_w != 0``, a carry chain behind the take,
        # was the path back into front_ready of an MNIST-memory 8 x 8 board build, 10.05 ns)
        credits_any, credits_many = credits != 0, credits > 1
        m.d.comb += has_credit_next.eq(issue | Mux(take_f == take_w, credits_any,
                                                   Mux(take_w, 1, credits_many)))
        walk = _RowWalk(m, "writer", S, cur, issue, take_w)
        label_rd = rd[Region.LABEL]
        with m.If(take_w & walk.at_i_last & cur.col_en):
            m.d.sync += hold.eq(1)

        # W0R: the row taken, registered while LABEL is read; W1: the label registered as it
        # leaves the block RAM
        vw = lanes.value_width

        def row_regs(name):
            return (Signal(name=f"{name}_valid"),
                    Signal(lanes.out_layout, name=name, reset_less=True),
                    Signal.like(walk.i, name=f"{name}_i"), Signal(name=f"{name}_ilast"),
                    Signal(name=f"{name}_final"),
                    *(Signal(16, name=f"{name}_{n}") for n in ("off", "m", "tc_cls", "col_tr_off")))

        w0r = row_regs("w0r")
        w1_regs = row_regs("w1")
        w1_valid, w1, w1_i, w1_ilast, w1_final, w1_off, w1_m, w1_tc_cls, w1_col_tr_off = w1_regs
        # W0R's data registers load in every cycle (W1 reads them only after a take, as
        # w0r_valid says): the take drives the FIFO, the walker and w0r_valid, not these
        m.d.sync += w0r[0].eq(take_w)
        m.d.sync += [reg.eq(src) for reg, src in zip(w0r[1:], (
            fifo.r_data, walk.i, walk.at_i_last, walk.final, walk.off, walk.m, walk.tc_cls,
            walk.col_tr_off))]
        m.d.sync += w1_valid.eq(w0r[0])
        w1_label = mems[Region.LABEL].registered(m, w0r[0], "w1_label")
        # each lane's class (tc_cls + j), added as W1 loads: W2 then only compares it with the
        # label and the column length (adder and compare in one cycle were the critical path
        # of an 8 x 8 board build, 9.7 ns)
        w1_cls = [Signal(17, name=f"w1_cls{j}") for j in range(S)]
        with m.If(w0r[0]):
            m.d.sync += [reg.eq(src) for reg, src in zip(w1_regs[1:], w0r[1:])]
            m.d.sync += [w1_cls[j].eq(w0r[7] + j) for j in range(S)]

        # W2
        w2_valid, w2_ilast, w2_final, w2_row_in = Signal(), Signal(), Signal(), Signal()
        w2_i = Signal.like(walk.i)
        w2_padded = Signal()    # LOSS on a padding row (label PAD_LABEL): writes zeros
        w2_row_addr, w2_code_addr, w2_col_addr = (Signal(16, name=f"w2_{n}") for n in
                                                  ("row_addr", "code_addr", "col_addr"))
        w2_value = [Signal(signed(vw), name=f"w2_value{j}", reset_less=True) for j in range(S)]
        w2_target = [Signal(signed(vw), name=f"w2_target{j}", reset_less=True)  # value - 32
                     for j in range(S)]
        w2_code = [Signal(CODE_WIDTH, name=f"w2_code{j}") for j in range(S)]
        w2_lane_in = [Signal(name=f"w2_lane_in{j}") for j in range(S)]
        w2_hit = [Signal(name=f"w2_hit{j}") for j in range(S)]   # lane j is the label's class
        m.d.sync += w2_valid.eq(w1_valid)
        with m.If(w1_valid):
            m.d.sync += [
                w2_i.eq(w1_i), w2_ilast.eq(w1_ilast), w2_final.eq(w1_final),
                w2_padded.eq((op == Op.LOSS) & (w1_label == PAD_LABEL)),
                w2_row_in.eq(w1_m < cur.row_len),
                w2_row_addr.eq(cur.row_base + w1_off),
                w2_code_addr.eq(cur.aux_base + w1_off),
                w2_col_addr.eq(cur.col_base + w1_col_tr_off + w1_tc_cls),
            ]
            for j in range(S):
                m.d.sync += [
                    w2_value[j].eq(w1.value[j]),
                    w2_target[j].eq(w1.value[j] - ONE_HOT_VALUE),
                    w2_code[j].eq(w1.code[j]),
                    w2_lane_in[j].eq(w1_cls[j] < cur.col_len),
                    w2_hit[j].eq(w1_cls[j] == w1_label),
                ]
        values = [Signal(signed(vw), name=f"wb_value{j}") for j in range(S)]
        codes = [Signal(CODE_WIDTH, name=f"wb_code{j}") for j in range(S)]
        row_on = Signal()
        m.d.comb += row_on.eq(w2_row_in & ~w2_padded)
        for j in range(S):
            lane_on = row_on & w2_lane_in[j]
            hit = w2_hit[j]
            with m.If(~lane_on):
                m.d.comb += [values[j].eq(0), codes[j].eq(ReluCode.ZERO)]
            with m.Elif(op == Op.LOSS):
                m.d.comb += values[j].eq(Mux(hit, w2_target[j], w2_value[j]))
            with m.Else():
                m.d.comb += [values[j].eq(w2_value[j]), codes[j].eq(w2_code[j])]
        tw = max(g.act_width, g.wgt_width)
        tbuf = [[Signal(signed(tw), name=f"tbuf{i}_{c}", reset_less=True) for c in range(S)]
                for i in range(S)]
        # each row of the buffer shifts on a copy of `emitting` of its own
        emit_start, emit_end, emitting_next = Signal(), Signal(), Signal()
        m.d.comb += [emit_start.eq(w2_valid & w2_ilast & cur.col_en),
                     emit_end.eq(emit_c == S - 1),
                     emitting_next.eq(Mux(emitting, ~emit_end, emit_start))]
        m.d.sync += emitting.eq(emitting_next)
        emitting_row = replicas(m, emitting_next, S, "emitting_row")
        with m.If(w2_valid):
            for i in range(S):
                with m.If(w2_i == i):
                    m.d.sync += [tbuf[i][c].eq(values[c]) for c in range(S)]
            with m.If(emit_start):
                m.d.sync += [emit_c.eq(0), emit_final.eq(w2_final), emit_addr.eq(w2_col_addr)]
            with m.Elif(w2_final):
                m.d.comb += instr_done.eq(1)
        for i in range(S):
            with m.If(emitting_row[i]):
                m.d.sync += [tbuf[i][c].eq(tbuf[i][c + 1]) for c in range(S - 1)]
        with m.If(emitting):
            m.d.sync += [emit_c.eq(emit_c + 1), emit_addr.eq(emit_addr + 1)]
            with m.If(emit_end):
                m.d.sync += hold.eq(0)
                with m.If(emit_final):
                    m.d.comb += instr_done.eq(1)
        column = [tbuf[i][0] for i in range(S)]

        # LABEL[m] of the row taken (W0), registered in W1 and W2
        # (read at walk.m in every busy cycle: the port's code is below, with the other
        # regions')

        # ---- memory port multiplexing ---------------------------------------------------------
        def host_ports(r):
            m.d.comb += [wr[r].addr.eq(host_word_q[r]), wr[r].data.eq(host_word_data(r)),
                         wr[r].en.eq(host_wr_q[r])]

        def lanes_word(r, vals):
            return Cat(*(v.as_signed()[:self.words[r].elem_shape.width] for v in vals))

        for r in (Region.PROG, Region.LABEL):
            host_ports(r)
        # The datapath's writes are registered (dp_wr) before the port multiplexer: the row
        # values, masks and the transposer's column select end at a flip-flop, and the block
        # RAMs' write ports see only that register and the busy/host multiplexer.  A write
        # lands one cycle later (two: the memory registers it again, registered_ports); the
        # next instruction's first read is at least five cycles after the last write of this
        # one (FETCH, LOAD, LOAD2, DECODE, ISSUE, then the read address register).
        dp_regions = (Region.ACT, Region.WGT, Region.ERR, Region.CODE)
        dp_wr = {r: SimpleNamespace(
                     addr=Signal.like(wr[r].addr, name=f"dp_wr_{r.name.lower()}_addr",
                                      reset_less=True),
                     data=Signal(self.words[r], name=f"dp_wr_{r.name.lower()}_data",
                                 reset_less=True),
                     en=Signal(name=f"dp_wr_{r.name.lower()}_en"))
                 for r in dp_regions}
        m.d.sync += [dp_wr[r].en.eq(0) for r in dp_regions]

        def dp_write(r, addr, word):
            m.d.sync += [dp_wr[r].addr.eq(addr), dp_wr[r].data.eq(word), dp_wr[r].en.eq(1)]

        with m.If(busy):
            # ACT: FORWARD rows (h) and FORWARD/LOSS columns
            with m.If(w2_valid & (op == Op.FORWARD)):
                dp_write(Region.ACT, w2_row_addr, lanes_word(Region.ACT, values))
            with m.Elif(emitting & ((op == Op.FORWARD) | (op == Op.LOSS))):
                dp_write(Region.ACT, emit_addr, lanes_word(Region.ACT, column))
            # WGT: SGD rows and columns
            with m.If(w2_valid & (op == Op.SGD)):
                dp_write(Region.WGT, w2_row_addr, lanes_word(Region.WGT, values))
            with m.Elif(emitting & (op == Op.SGD)):
                dp_write(Region.WGT, emit_addr, lanes_word(Region.WGT, column))
            # ERR: LOSS and BACKWARD rows
            with m.If(w2_valid & ((op == Op.LOSS) | (op == Op.BACKWARD))):
                dp_write(Region.ERR, w2_row_addr, lanes_word(Region.ERR, values))
            # CODE: FORWARD rows
            with m.If(w2_valid & (op == Op.FORWARD)):
                dp_write(Region.CODE, w2_code_addr, Cat(*codes))
        # each region's ports are switched by a copy of busy of its own
        busy_of = {r: replica(m, busy_next, f"busy_{r.name.lower()}") for r in self.words}
        for r in dp_regions:
            with m.If(busy_of[r]):
                m.d.comb += [wr[r].addr.eq(dp_wr[r].addr), wr[r].data.eq(dp_wr[r].data),
                             wr[r].en.eq(dp_wr[r].en)]
            with m.Else():
                host_ports(r)

        # Read ports: the datapath while busy, the host while idle.  The memories read the
        # address their own register holds (registered_ports), so each source offers the
        # value that register is to hold next; ACT, WGT, ERR and CODE register their read
        # enables too, a copy per bank (registered_read_enable): their sources offer the
        # enable's next value, or read a cycle later.
        # * the engine's port, with its stages (load on eng.*_rd.en, read on its next value
        #   en_next: the address register is the first of its read_latency = 5 stages;
        #   ``valid`` travels beside it, and the block RAM reads only a beat's word);
        # * the front's walker: the register loads ``front.addr`` as a row is taken (F0) and
        #   the block reads it in F1 (valid1);
        # * the writer's walker, whose next row index makes LABEL's register hold ``walk.m``
        #   (LABEL reads in every cycle: in the cycle after a take its word is that row's
        #   label, which W1 registers; the host writes LABEL only while idle);
        # * the sequencer's next pc, from the START on (``engaged``), so that PROG's
        #   register holds pc in FETCH (the FSM reads it there);
        # * the host's word address (registered, host_word_q), read a cycle after its strobe
        #   host_rd_q: the strobe is the registered enables' next value, and PROG and LABEL
        #   read on its register host_rd_qq.
        for r in self.words:
            with m.If(~busy_of[r]):
                m.d.comb += [rd[r].addr.eq(host_word_q[r]), rd[r].load.eq(1),
                             rd[r].en.eq(host_rd_qq[r])]
        with m.If(engaged):
            m.d.comb += [prog_rd.addr.eq(pc_next), prog_rd.load.eq(1)]
        with m.If(busy_of[Region.LABEL]):
            m.d.comb += [label_rd.addr.eq(walk.m_next), label_rd.load.eq(1),
                         label_rd.en.eq(1)]

        def engine_reads(r, port, used):
            # ``used``: the instruction takes its operand from this memory (WGT and ERR share
            # the engine's B port; the other one reads nothing, rather than words at the
            # operand's addresses that the writer may be writing).  Returns the read enable's
            # next value (0 while idle: no beat is issued).
            beat = Signal(name=f"{r.name.lower()}_rd_beat")     # the address register's valid
            beat_next = Signal(name=f"{r.name.lower()}_rd_beat_next")
            m.d.comb += beat_next.eq(Mux(port.en, port.valid & used, beat))
            m.d.sync += beat.eq(beat_next)
            with m.If(busy_of[r]):
                m.d.comb += [rd[r].addr.eq(port.addr), rd[r].load.eq(port.en)]
            return port.en_next & beat_next

        def front_reads(r):
            with m.If(busy_of[r]):
                m.d.comb += [rd[r].addr.eq(front.addr), rd[r].load.eq(take_f)]

        sgd = op == Op.SGD
        engine_reads_wgt = engine_reads(Region.WGT, eng.b_rd, used=~cur.b_src & ~sgd)
        # each shared region's read enable, one cycle ahead: the datapath's (0 while idle)
        # or the host's (0 while busy, host_rd being refused while engaged)
        read_en_next = {
            Region.ACT: engine_reads(Region.ACT, eng.a_rd, used=1),
            Region.ERR: engine_reads(Region.ERR, eng.b_rd, used=cur.b_src),
            # NitroReluBackward's codes
            Region.CODE: take_f & (op == Op.BACKWARD),
            Region.WGT: Mux(sgd, take_f, engine_reads_wgt),
        }
        front_reads(Region.CODE)
        with m.If(sgd):
            front_reads(Region.WGT)
        for r in self.SHARED_REGIONS:
            m.d.comb += rd[r].en.eq(read_en_next[r] | host_rd_q[r])

        # The shared bank registers' enables (on the ECP5 the blocks' OCEB): copies (one per
        # bank) of the next value of the enable of the reader that has the port -- the
        # engine's stage enable (its en_next: 1 while the engine is idle, so that the
        # registers also take the host's words), for WGT in SGD and for CODE the front's
        # (valid2, whose next value is valid1) and the host's (host_rd_qq delayed once more;
        # the choice by op changes only between instructions, when no read is in flight).
        # No term needs busy's next value: each reader's enable is 0 while it is idle.
        shared_en_next = {
            Region.ACT: eng.a_rd.en_next,
            Region.ERR: eng.b_rd.en_next,
            Region.WGT: Mux(sgd, valid1, eng.b_rd.en_next) | host_rd_qq[Region.WGT],
            Region.CODE: valid1 | host_rd_qq[Region.CODE],
        }
        for r, bank_en in shared_en.items():
            copies = replicas(m, shared_en_next[r], len(bank_en), f"{r.name.lower()}_shared_en")
            m.d.comb += [en.eq(c) for en, c in zip(bank_en, copies)]
        return m
