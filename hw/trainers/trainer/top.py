"""The Trainer: whole NITRO-D training steps on an S x S MAC array, run by a program.

::

    host bus --> HostPort (registers, decode) --> HostAccess (registered strobes, reads)
    Sequencer: PROG[pc] --> instruction ``cur`` --> TileEngine (S x S MacArray)
    OperandFetch: A operands from ACT, B operands from WGT or ERR --> TileEngine
    TileEngine result rows --> Front (reads each row's aux word: CODE or WGT)
        --> PostLanes (S lanes: Scaler/NitroRelu, Scaler, NitroReluBackward or SgdUpdate)
        --> FIFO --> Writer (row writes, LOSS target, masks, transposer) --> ACT/ERR/WGT/CODE

One instruction at a time: the sequencer fetches an instruction, hands its product to the
engine and waits until the writer has written the instruction's last row (and, with
``col_en``, its last transposed column) before fetching the next, so an instruction sees every
write of the ones before it.  Sizes are run-time data: one bitstream trains any network whose
memory map (nitrod/compiler.py) fits the geometry.

Every memory has one write port and one read port (hw/memory/banked_memory.py), registered in
front of its blocks; this module switches them between the host (while idle) and the datapath
(while busy), each region on a copy of ``busy`` of its own (the regions' block RAMs are
spread over the die).  The host reads and writes memories only while idle (hw/contract/).

Overflow (register OVERFLOW, sticky until Control.CLEAR): ``mac`` (an accumulator left
``acc_width``: the MacArray's per-tile flag), ``backerr`` (a BACKWARD accumulator did not fit
the ERR lane; saturated), ``sgd`` (an updated weight left the WGT lane; saturated).
"""

from __future__ import annotations

import math

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFOBuffered

from hw.array.post_lanes import PostLanes
from hw.array.tile_engine import TileEngine
from hw.contract import (ADDRESS_WIDTH, CODE_WIDTH, INSTRUCTION_BITS, LABEL_WIDTH, Geometry, Op,
                         Region)
from hw.memory.banked_memory import BLOCKS, BankedMemory
from hw.replica import replica, replicas
from hw.trainers.core import TrainerCore
from hw.trainers.host_port import CoreFlags, HostPort

from .front import Front
from .host_access import READ_LATENCY, HostAccess
from .operand_fetch import READ_LATENCY as ENGINE_READ_LATENCY
from .operand_fetch import OperandFetch
from .pool import PoolUnit
from .sequencer import Sequencer
from .writer import Writer

__all__ = ["Trainer", "default_row_cycles"]

#: cycles per FORWARD, LOSS or SGD row in the post-processing lanes (hw/array/post_lanes.py):
#: the Trainer has ``side / ROW_CYCLES`` Scaler, NitroRelu and SgdUpdate units
ROW_CYCLES = 4


def default_row_cycles(side: int) -> int:
    """``ROW_CYCLES``, or the largest divisor of it that divides ``side``."""
    return math.gcd(side, ROW_CYCLES)


class Trainer(TrainerCore):
    """Runs NITRO-D training programs (module docstring and hw/contract/isa.py).

    Parameters
    ----------
    geometry : hw.contract.Geometry -- array side, memory depths and lane widths.
    mac_options : further keyword arguments of the MacArray (default ``multiplier="dsp"``:
        hard multipliers mapped by Yosys).  The ECP5 boards pass ``"ecp5_dsp"`` (each
        MULT18X18D with its own registers, array latency 8 instead of 6; Verilator runs the
        block's model, sim/harness.py): the same results, two cycles later per tile.
    bank_depth : words per memory bank (a power of two; hw/memory/banked_memory.py): 2048,
        one DP16KD of 9-bit lanes on the ECP5, so that no depth multiplexer follows a block RAM.
    memory_block : what the banks of ACT, WGT, ERR and CODE are made of
        (``hw.memory.banked_memory.BLOCKS``): ``"memory"`` (default; any simulator, any
        device) or ``"dp16kd"`` (the ECP5 boards: block RAM instantiated by hand, whose own
        output registers are the shared bank registers; Verilator runs the block's model).
    row_cycles : cycles each FORWARD, LOSS or SGD row takes to enter the post-processing
        lanes, which then have ``side / row_cycles`` Scaler, NitroRelu and SgdUpdate units;
        default ``default_row_cycles(side)``.
    fifo_depth : rows the FIFO between the lanes and the writer holds (default 64; 1 or at
        least 3); a row leaves the engine only against a credit for one, so a small FIFO
        slows the program and loses nothing (``STATUS.row_lost`` watches it).

    Ports: :class:`hw.trainers.core.TrainerCore`'s.
    """

    #: cycles from ``bus.r_en`` to ``bus.r_data`` (hw/trainers/trainer/host_access.py)
    READ_LATENCY = READ_LATENCY
    #: every op and loop of the contract (the spatial levels, POOL, POOL_CODE, SCALE)
    RUNS_CNN = True
    #: banks per group in the first step of the bank select of the host's, the engine's and
    #: the front's reads (``BankedMemory.registered``'s ``group``): a select of every bank in
    #: one step, from blocks spread over the die, is too long a path at 100 MHz on the ECP5
    BANK_GROUP = 4
    #: chunks per group in the first step of the host read's chunk select (a 4-to-1
    #: multiplexer per bit, one slice)
    READ_GROUP = 4
    #: every memory's read never meets a write of the same word in the same cycle (host
    #: accesses only while idle; an instruction's read and written words are disjoint, or,
    #: for SGD's WGT, each row is written well after its only read); STATUS.collision checks
    collision_free_memories = ("mem_*",)
    #: PROG at most this deep goes to distributed RAM on the ECP5: its 508-bit words in block
    #: RAM are 15 DP16KD whose slow outputs feed the sequencer from across the die
    DISTRIBUTED_PROG_DEPTH = 64
    #: the memories whose readers share one register per bank (with
    #: ``memory_block="dp16kd"`` those are the blocks' own output registers)
    SHARED_REGIONS = (Region.ACT, Region.WGT, Region.ERR, Region.CODE)

    @classmethod
    def mac_elements(cls, geometry: Geometry) -> int:
        return geometry.side ** 2

    @classmethod
    def distributed_regions(cls, geometry) -> tuple:
        """PROG when at most :attr:`DISTRIBUTED_PROG_DEPTH` deep, and LABEL (at most 256 x 8
        bits: a DP16KD's slow output would feed the writer's label register)."""
        prog = (Region.PROG,) if geometry.prog_depth <= cls.DISTRIBUTED_PROG_DEPTH else ()
        return (*prog, Region.LABEL)

    @property
    def distributed_memories(self) -> tuple:
        """The :meth:`distributed_regions`' memories, and the row FIFO between the lanes and
        the writer (its block RAM's output would feed the writer's first registers)."""
        regions = self.distributed_regions(self.geometry)
        return (*(f"mem_{r.name.lower()}" for r in regions), "fifo")

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
            self._MustUse__silence = True
            raise ValueError(f"bank_depth must be a power of two, got {bank_depth}")
        if memory_block not in BLOCKS:
            self._MustUse__silence = True
            raise ValueError(f"memory_block must be one of {BLOCKS}, not {memory_block!r}")
        self.bank_depth, self.memory_block, self.fifo_depth = bank_depth, memory_block, fifo_depth
        S = g.side
        self.engine = TileEngine(S, S, a_width=g.act_width, b_width=max(g.err_width, g.wgt_width),
                                 acc_width=g.acc_width, a_depth=g.act_depth,
                                 b_depth=max(g.wgt_depth, g.err_depth),
                                 count_width=ADDRESS_WIDTH, cycle_width=32,
                                 mac_options={"multiplier": "dsp", **(mac_options or {})},
                                 read_latency=ENGINE_READ_LATENCY)
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
            self._MustUse__silence = True
            raise ValueError("d_g_width does not match the SgdUpdate")
        self.words = {
            Region.ACT: data.ArrayLayout(signed(g.act_width), S),
            Region.WGT: data.ArrayLayout(signed(g.wgt_width), S),
            Region.ERR: data.ArrayLayout(signed(g.err_width), S),
            Region.CODE: data.ArrayLayout(unsigned(CODE_WIDTH), S),
            Region.LABEL: unsigned(LABEL_WIDTH),
            Region.PROG: unsigned(INSTRUCTION_BITS),
        }
        super().__init__(g)

    def _memories(self, m):
        """The memories, and a sticky flag set when one of them met a collision."""
        mems = {}
        collision = Signal()
        for region, shape in self.words.items():
            shared = region in self.SHARED_REGIONS
            mem = BankedMemory(shape, self.geometry.depth(region), bank_depth=self.bank_depth,
                               registered_ports=True,
                               block=self.memory_block if shared else "memory",
                               registered_read_enable=shared)
            m.submodules[f"mem_{region.name.lower()}"] = mems[region] = mem
            with m.If(mem.collision):
                m.d.sync += collision.eq(1)
        return mems, collision

    def elaborate(self, platform):
        m = Module()
        g, S = self.geometry, self.geometry.side
        m.submodules.engine = eng = self.engine
        m.submodules.lanes = lanes = self.lanes
        mems, collision = self._memories(m)
        # ACT, WGT, ERR and CODE keep one register per bank that all their readers share (a
        # block's output then drives one flip-flop, not one per reader): their enables (a copy
        # per bank) are driven below, from the reader that has the port
        shared_en = {r: mems[r].share_registers(m, f"{r.name.lower()}_shared")
                     for r in self.SHARED_REGIONS}

        m.submodules.host = host = HostPort(self.region_memories(g), self.constant_registers(),
                                            read_latency=self.READ_LATENCY)
        wiring.connect(m, wiring.flipped(self.bus), host.bus)
        m.submodules.host_access = hacc = HostAccess(mems, host, bank_group=self.BANK_GROUP,
                                                     read_group=self.READ_GROUP)
        wiring.connect(m, host.access, hacc.port)
        m.d.comb += host.r_data.eq(hacc.r_data)

        m.submodules.sequencer = seq = Sequencer(mems[Region.PROG], g)
        cur = seq.cur
        m.submodules.fetch = fetch = OperandFetch(mems, eng, bank_group=self.BANK_GROUP)
        m.submodules.front = front = Front(mems, eng, lanes, side=S, fifo_depth=self.fifo_depth,
                                           row_spacing=self.row_spacing,
                                           bank_group=self.BANK_GROUP)
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=lanes.out_layout.size,
                                                    depth=self.fifo_depth)
        m.submodules.writer = writer = Writer(mems, lanes, side=S)
        m.submodules.pool = pool = PoolUnit(mems, side=S, bank_group=self.BANK_GROUP)
        m.d.comb += [seq.start.eq(host.start), seq.prog_start.eq(host.prog_start),
                     seq.clear.eq(host.clear), seq.engine_ready.eq(eng.instr.ready),
                     seq.instr_done.eq(writer.instr_done | pool.done), self.busy.eq(seq.busy),
                     eng.instr.valid.eq(seq.issue_engine),
                     pool.cur.eq(cur), pool.start.eq(seq.issue_pool),
                     pool.a_y_tile.eq(seq.a_y_tile), pool.a_x_tile.eq(seq.a_x_tile)]
        # the engine's instruction: the contract's fields, the beats' steps of the spatial
        # levels, and the tile steps the sequencer derived (windows, tile_b)
        for name in eng.instr_layout.members:
            if name in ("a_y_beat", "a_x_beat", "b_y_beat", "b_x_beat"):
                src = cur[f"{name[2]}_{'b_' if name[0] == 'b' else ''}stride"]
            elif name in ("a_y_tile", "a_x_tile", "b_y_tile", "b_x_tile"):
                src = getattr(seq, name)
            else:
                src = cur[name]
            m.d.comb += eng.instr.payload[name].eq(src)
        # ACT's operand path serves the engine and the pool unit (one instruction at a time):
        # each one's address is 0 while the other runs, so they are ORed
        m.d.comb += [fetch.a_rd.addr.eq(eng.a_rd.addr | pool.act_addr),
                     fetch.a_rd.valid.eq(eng.a_rd.valid | pool.act_valid),
                     fetch.a_rd.en.eq(eng.a_rd.en), fetch.a_rd.en_next.eq(eng.a_rd.en_next),
                     eng.a_rd.data.eq(fetch.a_rd.data), pool.act_data.eq(fetch.a_rd.data)]
        wiring.connect(m, eng.b_rd, fetch.b_rd)
        m.d.comb += [fetch.b_src.eq(cur.b_src), fetch.sgd.eq(cur.op == Op.SGD)]
        wiring.connect(m, eng.results, front.results)
        m.d.comb += [front.cur.eq(cur), front.issue.eq(seq.issue),
                     front.run_next.eq(seq.run_next), front.returned.eq(writer.take)]
        # the front spaces rows for the lanes and does not look at their ready (a row
        # offered while it is low is lost: STATUS.row_lost)
        wiring.connect(m, front.rows, lanes.i)
        m.d.comb += [lanes.op.eq(cur.op), lanes.divisor.eq(cur.divisor),
                     lanes.inv_slope.eq(cur.inv_slope), lanes.d_g.eq(cur.d_g),
                     lanes.d_w.eq(cur.d_w), lanes.clear.eq(host.clear)]
        # lanes -> FIFO -> writer: the lanes never stall (the front's credits keep room)
        fifo_overrun = Signal()
        m.d.comb += [lanes.o.ready.eq(1), fifo.w_en.eq(lanes.o.valid),
                     fifo.w_data.eq(lanes.o.payload), fifo_overrun.eq(fifo.w_en & ~fifo.w_rdy),
                     writer.rows.valid.eq(fifo.r_rdy), writer.rows.payload.eq(fifo.r_data),
                     fifo.r_en.eq(writer.take)]
        m.d.comb += [writer.cur.eq(cur), writer.issue.eq(seq.issue), writer.run.eq(seq.run),
                     writer.busy.eq(seq.busy)]
        self._status(m, host, seq, eng, lanes, front, collision, fifo_overrun)
        # each region's ports are switched by a copy of busy of its own
        busy_of = {r: replica(m, seq.busy_next, f"busy_{r.name.lower()}") for r in self.words}
        self._write_ports(m, mems, busy_of, hacc, writer, pool)
        self._read_ports(m, mems, busy_of, hacc, seq, fetch, front, writer, host, shared_en, pool)
        return m

    def _status(self, m, host, seq, eng, lanes, front, collision, fifo_overrun):
        """The sticky flags (cleared by Control.CLEAR) and what the host port reports."""
        tile_lost, row_lost, ovf_mac, ovf_backerr = (Signal(name=n) for n in (
            "tile_lost", "row_lost", "ovf_mac", "ovf_backerr"))
        with m.If(host.clear):
            m.d.sync += [ovf_mac.eq(0), ovf_backerr.eq(0), collision.eq(0), tile_lost.eq(0),
                         row_lost.eq(0)]
        with m.Else():
            with m.If(eng.tile_lost):
                m.d.sync += tile_lost.eq(1)
            with m.If((lanes.i.valid & ~lanes.i.ready) | fifo_overrun):
                m.d.sync += row_lost.eq(1)
        # an overflow in the cycle of a clear is kept
        with m.If(front.mac_overflow):
            m.d.sync += ovf_mac.eq(1)
        with m.If(lanes.backerr):
            m.d.sync += ovf_backerr.eq(1)
        m.d.comb += self.overflow.eq(Cat(ovf_mac, ovf_backerr, lanes.sgd_overflow))
        flags = Signal(CoreFlags)
        m.d.comb += [flags.done.eq(seq.done), flags.op_error.eq(seq.op_error),
                     flags.collision.eq(collision), flags.tile_lost.eq(tile_lost),
                     flags.row_lost.eq(row_lost),
                     host.flags.eq(flags), host.busy.eq(seq.busy),
                     host.overflow.eq(self.overflow), host.cycles.eq(seq.cycles),
                     host.retired.eq(seq.retired)]

    def _write_ports(self, m, mems, busy_of, hacc, writer, pool):
        """Each memory's write port: the datapath's while busy, else the host's.  (PROG and
        LABEL only the host writes.)  The datapath's is the writer's, and for ACT and CODE
        also the pool unit's, ORed: both hold address and data at 0 but in a write, and one
        instruction runs at a time."""
        for r, mem in mems.items():
            host_write = hacc.access(r)
            dp = getattr(writer, r.name.lower(), None)
            if dp is None:
                m.d.comb += [mem.wr.addr.eq(host_write.addr), mem.wr.data.eq(host_write.data),
                             mem.wr.en.eq(host_write.wr_en)]
                continue
            addr, wdata, en = dp.addr, dp.data.as_value(), dp.en
            pool_wr = {Region.ACT: pool.act_wr, Region.CODE: pool.code_wr}.get(r)
            if pool_wr is not None:
                addr = addr | pool_wr.addr
                wdata = wdata | pool_wr.data.as_value()
                en = en | pool_wr.en
            with m.If(busy_of[r]):
                m.d.comb += [mem.wr.addr.eq(addr), mem.wr.data.eq(wdata), mem.wr.en.eq(en)]
            with m.Else():
                m.d.comb += [mem.wr.addr.eq(host_write.addr), mem.wr.data.eq(host_write.data),
                             mem.wr.en.eq(host_write.wr_en)]

    def _read_ports(self, m, mems, busy_of, hacc, seq, fetch, front, writer, host, shared_en,
                    pool):
        """Each memory's read port: the datapath's while busy, the host's while idle.  The
        memories read the address their own register holds, so each source offers the value
        that register is to hold next; ACT, WGT, ERR and CODE register their read enables too,
        a copy per bank: their sources offer the enable's next value.

        * the engine's ports (OperandFetch): their address registers are the first of the
          engine's five read stages (ACT: also the pool unit's reads, ORed in);
        * the front (F0 loads the aux word's address, F1 reads it: ``valid1``), and in a
          POOL_CODE the pool unit's CODE reads (P0, P1), ORed in: the front's address is 0
          then (its walker's base);
        * the writer's walker, whose next row index makes LABEL's register hold the row's
          ``m`` (LABEL reads in every busy cycle);
        * the sequencer's next pc, from the START on, so that PROG's register holds pc in
          FETCH, where it reads;
        * the host's word address, read a cycle after its strobe (``rd_en_next``: the
          registered enables' next value; PROG and LABEL read on ``rd_en``)."""
        rd = {r: mem.rd for r, mem in mems.items()}
        for r in self.words:
            host_read = hacc.access(r)
            with m.If(~busy_of[r]):
                m.d.comb += [rd[r].addr.eq(host_read.addr), rd[r].load.eq(1),
                             rd[r].en.eq(host_read.rd_en)]
        prog_rd = rd[Region.PROG]
        with m.If(host.engaged):
            m.d.comb += [prog_rd.addr.eq(seq.pc_next), prog_rd.load.eq(1)]
        with m.If(busy_of[Region.PROG]):
            m.d.comb += prog_rd.en.eq(seq.prog_read)
        with m.If(busy_of[Region.LABEL]):
            m.d.comb += [rd[Region.LABEL].addr.eq(writer.label_addr),
                         rd[Region.LABEL].load.eq(1), rd[Region.LABEL].en.eq(1)]
        engine = {Region.ACT: fetch.act, Region.WGT: fetch.wgt, Region.ERR: fetch.err}
        for r, request in engine.items():
            with m.If(busy_of[r]):
                m.d.comb += [rd[r].addr.eq(request.addr), rd[r].load.eq(request.load)]
        sgd = seq.cur.op == Op.SGD
        with m.If(busy_of[Region.CODE]):
            m.d.comb += [rd[Region.CODE].addr.eq(front.aux_addr | pool.code_addr),
                         rd[Region.CODE].load.eq(front.take | pool.code_en)]
        with m.If(busy_of[Region.WGT] & sgd):
            m.d.comb += [rd[Region.WGT].addr.eq(front.aux_addr),
                         rd[Region.WGT].load.eq(front.take)]
        # each shared region's read enable, one cycle ahead: the datapath's (0 while idle)
        # or the host's (0 while busy, the host's reads being refused while engaged)
        read_en_next = {
            Region.ACT: fetch.act.en_next,
            Region.ERR: fetch.err.en_next,
            Region.CODE: (front.take & (seq.cur.op == Op.BACKWARD))   # NitroReluBackward's
                         | pool.code_en,                                # POOL_CODE's
            Region.WGT: Mux(sgd, front.take, fetch.wgt.en_next),
        }
        for r in self.SHARED_REGIONS:
            m.d.comb += rd[r].en.eq(read_en_next[r] | hacc.access(r).rd_en_next)
        # The shared bank registers' enables (on the ECP5 the blocks' OCEB): copies (one per
        # bank) of the next value of the enable of the reader that has the port -- the
        # engine's stage enable (1 while the engine is idle, so that the registers also take
        # the host's words), for WGT in SGD and for CODE the front's (valid2, whose next value
        # is valid1) and the host's (its read enable delayed once more); the choice by op
        # changes only between instructions, when no read is in flight
        shared_en_next = {
            Region.ACT: self.engine.a_rd.en_next,
            Region.ERR: self.engine.b_rd.en_next,
            Region.WGT: (Mux(sgd, front.valid1, self.engine.b_rd.en_next)
                         | hacc.access(Region.WGT).rd_en),
            Region.CODE: front.valid1 | pool.code_valid1 | hacc.access(Region.CODE).rd_en,
        }
        for r, bank_en in shared_en.items():
            copies = replicas(m, shared_en_next[r], len(bank_en), f"{r.name.lower()}_shared_en")
            m.d.comb += [en.eq(c) for en, c in zip(bank_en, copies)]
