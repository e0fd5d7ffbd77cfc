"""The SerialTrainer: the Trainer's programs, one multiply-accumulate at a time (iCE40UP5K).

The same program format, memory map, registers and host bus as :class:`hw.trainer.Trainer`
(nitrod/isa.py), so the same compiler, backends and host link drive it, with the results of
the same golden arithmetic.  It is built to fit the iCE40UP5K (5,280 logic cells, 8 SB_MAC16,
30 EBR, 4 SPRAM), where one post-processing lane of the Trainer alone does not fit::

    host bus --> registers, memories (PROG, ACT, WGT, ERR, CODE, LABEL), one port each
    sequencer: PROG[pc], 32 bits a cycle --> instruction register
    per tile (tr, tc), per element (i, j) of the S x S tile:
        aux read (LABEL, CODE or WGT)
        k loop: ACT word lane i, B word (WGT or ERR) lane j --> one multiplier --> accumulator
        handoff --> SerialPost (one serial divider) --> tile buffer, beside the next element
    per tile: S row words (and FORWARD's CODE words), with col_en S column words

An element's products take ``k_len`` cycles (plus 3 to drain the read, operand and product
registers); its post-processing (:meth:`SerialPost.cycles`) runs while the next element's
products are computed; the tile's writes take two cycles per word, after its last result.
The sequence does not depend on the data: :meth:`program_cycles` is exact.  Instructions run
one after the other, so each sees every write of the ones before it; within an instruction, a
tile's words are written after all of its elements are computed (SGD reads each old weight
before its tile writes it).

Memories have one port each (the UP5K's SPRAM has one; ``hw/ice40_spram.py``): the host owns
them while the SerialTrainer is idle, the sequencer while it runs.  With
``memory_block="spram"`` ACT and WGT are SB_SPRAM256KA blocks; the other memories are
``lib.memory`` (EBR on the iCE40).  PROG holds each instruction as its 32-bit host chunks
(``nitrod.isa.chunks_of(INSTRUCTION_BITS)`` = 12, in slots of 16): a PROG chunk is written
as it arrives (no staging register for the 362-bit word), which only differs from the
Trainer for a host that writes part of an instruction.  The other wide words (ERR's) are
staged like the Trainer's: chunks ``0..n-2`` to a staging register, chunk ``n-1`` writes.

Errors (``STATUS``): as the Trainer, ``op_error`` also for an instruction the SerialTrainer
cannot execute exactly: a FORWARD or LOSS ``divisor`` of 0 or above ``divisor_max``, an SGD
``d_g`` of 0 or wider than ``d_g_width``, a ``d_w`` wider than ``d_w_width``.  ``collision``,
``tile_lost`` and ``row_lost`` watch the Trainer's pipelines and are always 0 here.
Overflow (``OVERFLOW``) as the Trainer: ``mac`` (a partial sum left ``acc_width``: the
accumulator wraps), ``backerr`` and ``sgd`` (saturated values; hw/serial_post.py).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hw.host_link import BusSignature
from hw.ice40_spram import SinglePortMemory
from hw.post_lanes import CODE_WIDTH
from hw.serial_post import SerialPost
from hw.trainer import instruction_layout
from nitrod.isa import (BUS_ADDR_WIDTH, INSTRUCTION_BITS, MAGIC, PAD_LABEL, REGION_SHIFT,
                        Geometry, Op, Reg, Region, check_geometry, chunk_bits_of,
                        chunks_of)
from nitrod.isa_model import lane_width

__all__ = ["SerialTrainer"]

#: bits of the program's counters and addresses (the instruction fields)
COUNT_WIDTH = 16


class SerialTrainer(wiring.Component):
    """Runs NITRO-D training programs (nitrod/isa.py) on one multiplier and one divider.

    Parameters
    ----------
    geometry : nitrod.isa.Geometry -- array side ``S`` (the tile and word size of the
        programs: the SerialTrainer computes a tile's ``S * S`` values one by one), memory
        depths and lane widths.
    memory_block : ``"memory"`` (default; any simulator or device) or ``"spram"`` (ACT and WGT
        on iCE40 SB_SPRAM256KA, hw/ice40_spram.py; Verilator runs the block's model).

    Ports
    -----
    bus : In(BusSignature(BUS_ADDR_WIDTH, READ_LATENCY)) -- host access
    busy : Out(1) -- a program is running
    overflow : Out(3) -- the OVERFLOW register (mac, backerr, sgd)
    """

    #: cycles from ``bus.r_en`` to the word on ``bus.r_data``: the bus inputs are registered
    #: (1), the memory reads (1), the register value or the chunk of the word is registered
    #: into ``r_data`` (1)
    READ_LATENCY = 3
    #: the memories (module paths below the core) whose read never meets a write of the same
    #: word in the same cycle: a SinglePortMemory reads only in cycles that do not write.
    #: boards/build.py tells Yosys, which otherwise emulates the old word on a collision with
    #: logic behind each EBR (the sequencer's state -> CODE's port -> that logic was the
    #: iCE40 build's critical path, 32.4 ns)
    collision_free_memories = ("mem_*",)
    #: the regions that go to SPRAM with ``memory_block="spram"``
    SPRAM_REGIONS = (Region.ACT, Region.WGT)
    #: the instruction's 32-bit chunks in PROG, and the slots per instruction (a power of two)
    PROG_CHUNKS = chunks_of(INSTRUCTION_BITS)
    PROG_SLOT_BITS = chunk_bits_of(INSTRUCTION_BITS)
    #: cycles a product's value takes through the read, operand and product registers
    MAC_DRAIN = 3
    #: multiply-accumulates per cycle (the Trainer has ``side ** 2``)
    MAC_ELEMENTS = 1

    def __init__(self, geometry: Geometry = Geometry(side=2), *, memory_block: str = "memory"):
        g = geometry
        if memory_block not in ("memory", "spram"):
            raise ValueError(f"memory_block must be 'memory' or 'spram', not {memory_block!r}")
        check_geometry(g, count_width=COUNT_WIDTH)
        self.geometry = g
        self.memory_block = memory_block
        self.instr_layout = instruction_layout()
        super().__init__({
            "bus": In(BusSignature(BUS_ADDR_WIDTH, read_latency=self.READ_LATENCY)),
            "busy": Out(1),
            "overflow": Out(3),
        })

    @classmethod
    def region_memories(cls, geometry: Geometry) -> dict:
        """``{region: (width, depth)}`` of the memories (PROG in its 32-bit chunk slots); the
        boards' fit check reads it (boards/build.py)."""
        g = geometry
        shapes = {r: (g.word_bits(r), g.depth(r))
                  for r in (Region.ACT, Region.WGT, Region.ERR, Region.CODE, Region.LABEL)}
        shapes[Region.PROG] = (32, g.prog_depth << cls.PROG_SLOT_BITS)
        return shapes

    @staticmethod
    def post_unit(geometry: Geometry) -> SerialPost:
        """The post-processing unit of ``geometry`` (a new one)."""
        g = geometry
        return SerialPost(acc_width=g.acc_width, act_width=g.act_width, wgt_width=g.wgt_width,
                          err_width=g.err_width, fan_in_width=g.divisor_max.bit_length(),
                          d_g_width=g.d_g_width, d_w_width=g.d_w_width)

    @classmethod
    def instruction_cycles(cls, geometry: Geometry, ins: dict) -> int:
        """Cycles the instruction ``ins`` (nitrod.isa field dict) takes, exactly: its fetch
        (:attr:`PROG_CHUNKS` + 1), decode (1) and dispatch (1), then per tile: an element
        reaches its handoff ``k_len + 7`` cycles after it starts (ELEMENT, AUX_ADDR, AUX_READ,
        ``k_len`` products, 4 of drain); the handoff takes a cycle and waits for the previous
        element's result, which comes ``SerialPost.cycles + 2`` cycles after that element's
        handoff (its start the cycle after, the result stored at ``done``); so the elements
        after the first are ``max(k_len + 8, SerialPost.cycles + 2)`` apart, and the tile's
        last result is stored ``SerialPost.cycles + 2`` cycles after its handoff; then 2
        cycles per row word and, with ``col_en``, per column word, and 1 to step to the next
        tile.  ``END`` is its fetch, decode and dispatch.  (An instruction that stops with
        ``op_error`` is not modelled.)"""
        S = geometry.side
        fetch = cls.PROG_CHUNKS + 3
        op = ins["op"]
        if op == Op.END:
            return fetch
        post = cls.post_unit(geometry)
        post._MustUse__silence = True                  # only asked for its cycles: never
        post._divider._MustUse__silence = True         # elaborated, no "unused" warning
        post_cycles = post.cycles(op, d_w_nonzero=ins["d_w"] != 0) + 2
        k = ins["k_len"]
        elements = (k + 4 + cls.MAC_DRAIN + 1) + (S * S - 1) * max(k + 8, post_cycles)
        cols = 2 * S if ins["col_en"] and op != Op.BACKWARD else 0
        per_tile = elements + post_cycles + 2 * S + cols + 1
        return fetch + ins["tiles_r"] * ins["tiles_c"] * per_tile

    @classmethod
    def program_cycles(cls, geometry: Geometry, program) -> int:
        """Cycles a run of ``program`` (instruction dicts from PROG_START on, up to its
        ``END``) takes: what ``Reg.CYCLES`` reads after it."""
        total = 0
        for ins in program:
            total += cls.instruction_cycles(geometry, ins)
            if ins["op"] == Op.END:
                return total
        raise ValueError("the program has no END")

    def memories(self) -> dict:
        """``{region: SinglePortMemory}`` of this geometry (:meth:`region_memories`)."""
        return {r: SinglePortMemory(width, depth, block=(self.memory_block
                                                         if r in self.SPRAM_REGIONS
                                                         else "memory"))
                for r, (width, depth) in self.region_memories(self.geometry).items()}

    def elaborate(self, platform):
        m = Module()
        g = self.geometry
        S = g.side
        bus = self.bus

        mems = self.memories()
        for r, mem in mems.items():
            m.submodules[f"mem_{r.name.lower()}"] = mem
        data_regions = [r for r in mems if r != Region.PROG]

        # ---- state -------------------------------------------------------------------------
        busy = Signal()
        m.d.comb += self.busy.eq(busy)
        start = Signal()                  # a START written in the last bus cycle
        clear = Signal()                  # a CONTROL clear written in the last bus cycle
        engaged = Signal()                # busy, or about to be: refuses memory accesses
        m.d.comb += engaged.eq(busy | start)
        prog_start = Signal(COUNT_WIDTH)
        pc = Signal(COUNT_WIDTH)
        cycles = Signal(32)
        retired = Signal(16)
        done_flag = Signal()
        op_error = Signal()
        access_error = Signal()
        ovf_mac = Signal()
        ovf_backerr = Signal()
        ovf_sgd = Signal()
        overflow = Cat(ovf_mac, ovf_backerr, ovf_sgd)
        m.d.comb += self.overflow.eq(overflow)

        # the sequencer's side of each memory port (the host's while idle)
        seq_addr = {r: Signal(COUNT_WIDTH, name=f"seq_addr_{r.name.lower()}") for r in mems}
        seq_w_en = {r: Signal(name=f"seq_w_en_{r.name.lower()}") for r in mems}
        seq_w_data = {r: Signal(mems[r].width, name=f"seq_w_data_{r.name.lower()}")
                      for r in mems}

        # ---- host bus ----------------------------------------------------------------------
        addr_q = Signal(BUS_ADDR_WIDTH)
        w_data_q = Signal(32)
        w_en_q = Signal()
        r_en_q = Signal()
        m.d.sync += [addr_q.eq(bus.addr), w_data_q.eq(bus.w_data), w_en_q.eq(bus.w_en),
                     r_en_q.eq(bus.r_en)]
        region = addr_q[REGION_SHIFT:]
        offset = addr_q[:REGION_SHIFT]

        host_chunk, host_word, host_in_range = {}, {}, {}
        for r in data_regions:
            cb = chunk_bits_of(g.word_bits(r))
            host_chunk[r] = offset[:cb] if cb else Const(0, 1)
            host_word[r] = offset[cb:]
            host_in_range[r] = offset[cb:] < g.depth(r)
        # PROG: the chunk slot is the memory word
        pb = self.PROG_SLOT_BITS
        host_chunk[Region.PROG] = offset[:pb]
        host_word[Region.PROG] = offset
        host_in_range[Region.PROG] = offset[pb:] < g.prog_depth

        max_chunks = max(chunks_of(g.word_bits(r)) for r in data_regions)
        stage = Signal(32 * max(1, max_chunks - 1))
        host_wr = {r: Signal(name=f"host_wr_{r.name.lower()}") for r in mems}
        host_data = {}
        for r in mems:
            hit = (region == r) & host_in_range[r] & ~engaged
            if r == Region.PROG:
                last = host_chunk[r] < self.PROG_CHUNKS
                host_data[r] = w_data_q
            else:
                nch = chunks_of(g.word_bits(r))
                last = host_chunk[r] == nch - 1
                host_data[r] = Cat(stage[:32 * (nch - 1)], w_data_q)[:g.word_bits(r)]
                for k in range(nch - 1):
                    with m.If(w_en_q & (region == r) & (host_chunk[r] == k)):
                        m.d.sync += stage.word_select(k, 32).eq(w_data_q)
            m.d.comb += host_wr[r].eq(w_en_q & hit & last)
        mem_region = (region >= Region.PROG) & (region <= Region.LABEL)
        with m.If((w_en_q | r_en_q) & mem_region):
            bad = engaged
            for r in mems:
                bad = bad | ((region == r) & ~host_in_range[r])
            with m.If(bad):
                m.d.sync += access_error.eq(1)

        # each memory's one port: the sequencer's while busy, else the host's
        for r, mem in mems.items():
            with m.If(busy):
                m.d.comb += [mem.addr.eq(seq_addr[r]), mem.w_en.eq(seq_w_en[r]),
                             mem.w_data.eq(seq_w_data[r])]
            with m.Else():
                m.d.comb += [mem.addr.eq(host_word[r]), mem.w_en.eq(host_wr[r]),
                             mem.w_data.eq(host_data[r])]

        # register writes
        m.d.sync += [start.eq(0), clear.eq(0)]
        with m.If(w_en_q & (region == Region.REGS)):
            with m.Switch(offset):
                with m.Case(Reg.CONTROL):
                    m.d.sync += [start.eq(w_data_q[0] & ~engaged), clear.eq(w_data_q[1])]
                with m.Case(Reg.PROG_START):
                    m.d.sync += prog_start.eq(w_data_q)

        # reads: the register value, or which memory and chunk, registered as the memory
        # reads; then the value or the chunk into r_data
        errors = Cat(op_error, access_error, Const(0, 3))     # collision, tile/row_lost: 0
        status = Cat(engaged, done_flag, errors & ~clear.replicate(len(errors)))
        reg_table = {Reg.ID: MAGIC, Reg.STATUS: status,
                     Reg.OVERFLOW: overflow & ~clear.replicate(len(overflow)),
                     Reg.CYCLES: cycles, Reg.RETIRED: retired, Reg.PROG_START: prog_start,
                     **g.registers()}
        reg_value = Signal(32)
        with m.Switch(offset):
            for addr, value in reg_table.items():
                with m.Case(int(addr)):
                    m.d.comb += reg_value.eq(value)
        rd_reg = Signal(32)
        rd_region = Signal(range(len(Region)))
        max_cb = max(chunk_bits_of(g.word_bits(r)) for r in data_regions)
        rd_chunk = Signal(max(1, max_cb))
        rd_ok = Signal()
        with m.If(r_en_q):
            m.d.sync += [rd_reg.eq(reg_value), rd_region.eq(region), rd_ok.eq(0),
                         rd_chunk.eq(offset[:len(rd_chunk)])]
            for r in mems:
                with m.If(region == r):
                    m.d.sync += rd_ok.eq(host_in_range[r] & ~engaged)
        r_data = Signal(32)
        with m.Switch(rd_region):
            with m.Case(Region.REGS):
                m.d.sync += r_data.eq(rd_reg)
            for r, mem in mems.items():
                with m.Case(r):
                    if r == Region.PROG:
                        chunk = mem.r_data
                    else:
                        nch = chunks_of(g.word_bits(r))
                        word = Cat(mem.r_data, Const(0, 32 * (1 << max(0, ceil_log2(nch)))))
                        cb = chunk_bits_of(g.word_bits(r))
                        chunk = word.word_select(rd_chunk[:cb], 32) if cb else word[:32]
                    m.d.sync += r_data.eq(Mux(rd_ok, chunk, 0))
            with m.Default():
                m.d.sync += r_data.eq(0)
        m.d.comb += bus.r_data.eq(r_data)

        # ---- the instruction ---------------------------------------------------------------
        cur_bits = Signal(32 * self.PROG_CHUNKS)
        cur = data.View(self.instr_layout, cur_bits[:INSTRUCTION_BITS])
        op = cur.op
        fetch_n = Signal(range(self.PROG_CHUNKS + 1))
        is_end, executable = Signal(), Signal()       # the decoded instruction's checks

        # ---- counters and addresses --------------------------------------------------------
        W = COUNT_WIDTH
        # tiles and beats left after the current one: down-counters, so that "last" is a
        # compare with zero (``tc == tiles_c - 1``, a subtraction and a compare into the next
        # state, was a 36 ns path on the iCE40)
        tr_left, tc_left, k_left = Signal(W), Signal(W), Signal(W)
        i, j = Signal(range(S)), Signal(range(S))
        tr_s, tc_s = Signal(W), Signal(W)                 # tr * S, tc * S
        tc_off = Signal(W)                                # tc * tc_stride
        a_tile, b_tile = Signal(W), Signal(W)             # the tile's k = 0 words
        col_tr = Signal(W)                                # col_base + tr * col_tr_stride
        a_addr, b_addr = Signal(W), Signal(W)
        row_off = Signal(W)                               # tr*S + i + tc*tc_stride
        row_idx, col_idx = Signal(W), Signal(W)           # tr*S + i, tc*S + j
        tile_off = Signal(W)                              # tr*S + tc*tc_stride
        wr_addr, code_addr = Signal(W), Signal(W)         # the tile's row or column writes
        # the element's aux read addresses (CODE for BACKWARD, WGT for SGD), registered in
        # AUX_ADDR a cycle before the reads (an adder between the sequencer and a block RAM's
        # address was the iCE40 build's critical path, 29.9 ns)
        aux_code_addr, aux_wgt_addr = Signal(W), Signal(W)

        # ---- the multiply-accumulate -------------------------------------------------------
        b_width = max(g.err_width, g.wgt_width)
        issuing = Signal()
        issued = Signal()                                 # the words read show this cycle
        ops_valid, prod_valid = Signal(), Signal()
        a_op = Signal(signed(g.act_width))
        b_op = Signal(signed(b_width))
        prod = Signal(signed(g.act_width + b_width))
        acc = Signal(signed(g.acc_width))
        acc_sum = Signal(signed(g.acc_width + 1))
        acc_clear = Signal()
        act_word = mems[Region.ACT].r_data
        wgt_word = mems[Region.WGT].r_data
        err_word = mems[Region.ERR].r_data
        m.d.sync += [issued.eq(issuing), ops_valid.eq(issued), prod_valid.eq(ops_valid)]
        m.d.sync += [
            a_op.eq(act_word.word_select(i, g.act_width).as_signed()),
            b_op.eq(Mux(cur.b_src, err_word.word_select(j, g.err_width).as_signed(),
                        wgt_word.word_select(j, g.wgt_width).as_signed())),
            prod.eq(a_op * b_op),
        ]
        m.d.comb += acc_sum.eq(acc + prod)
        with m.If(acc_clear):
            m.d.sync += acc.eq(0)
        with m.Elif(prod_valid):
            m.d.sync += acc.eq(acc_sum[:g.acc_width])
            with m.If(acc_sum[-1] != acc_sum[-2]):
                m.d.sync += ovf_mac.eq(1)
        draining = Signal()
        m.d.comb += draining.eq(issued | ops_valid | prod_valid)

        # ---- post-processing ---------------------------------------------------------------
        # An element's post-processing runs while the next element's products are computed:
        # the element's aux values (read before its products) wait in ``aux_*``, and at its
        # handoff the accumulator and those values move to ``post_*``, the SerialPost's inputs,
        # held until its ``done`` stores the result in the tile buffer at (post_i, post_j)
        m.submodules.post = post = self.post_unit(g)
        aux_code = Signal(CODE_WIDTH)
        aux_w_old = Signal(signed(g.wgt_width))
        aux_zero, aux_target = Signal(), Signal()
        aux_shown = Signal()                  # the aux reads show on the ports this cycle
        post_acc = Signal(signed(g.acc_width))
        post_code = Signal(CODE_WIDTH)
        post_w_old = Signal(signed(g.wgt_width))
        post_zero, post_target = Signal(), Signal()
        post_i, post_j = Signal(range(S)), Signal(range(S))
        post_busy = Signal()                  # handed off, its result not stored yet
        post_start = Signal()                 # the cycle after the handoff
        m.d.comb += [post.op.eq(op), post.acc.eq(post_acc), post.divisor.eq(cur.divisor),
                     post.inv_slope.eq(cur.inv_slope), post.code.eq(post_code),
                     post.w_old.eq(post_w_old), post.d_g.eq(cur.d_g), post.d_w.eq(cur.d_w),
                     post.target.eq(post_target), post.zero.eq(post_zero),
                     post.start.eq(post_start)]
        m.d.sync += [post_start.eq(0), aux_shown.eq(0)]
        value_width = len(post.value)
        vals = [[Signal(signed(value_width), name=f"val_{ii}_{jj}") for jj in range(S)]
                for ii in range(S)]
        codes = [[Signal(CODE_WIDTH, name=f"code_{ii}_{jj}") for jj in range(S)]
                 for ii in range(S)]
        with m.If(post.done):
            for ii in range(S):
                for jj in range(S):
                    with m.If((post_i == ii) & (post_j == jj)):
                        m.d.sync += [vals[ii][jj].eq(post.value),
                                     codes[ii][jj].eq(post.code_out)]
            m.d.sync += post_busy.eq(0)
            with m.If(post.backerr):
                m.d.sync += ovf_backerr.eq(1)
            with m.If(post.sgd_overflow):
                m.d.sync += ovf_sgd.eq(1)
        # the aux values, from the reads of AUX_READ (WGT's word changes once the products
        # read it)
        with m.If(aux_shown):
            label = mems[Region.LABEL].r_data
            in_range = (row_idx < cur.row_len) & (col_idx < cur.col_len)
            pad = (op == Op.LOSS) & (label == PAD_LABEL)
            m.d.sync += [
                aux_code.eq(mems[Region.CODE].r_data.word_select(j, CODE_WIDTH)),
                aux_w_old.eq(wgt_word.word_select(j, g.wgt_width).as_signed()),
                aux_zero.eq(~in_range | pad),
                aux_target.eq(col_idx == label),
            ]

        def row_word(r, ii):
            return Cat(v[:lane_width(g, r)] for v in vals[ii])

        def col_word(r, c):
            return Cat(vals[ii][c][:lane_width(g, r)] for ii in range(S))

        def write_tile_word(dests, index, word, addr):
            """Write ``word(region, index)`` at ``addr`` of the memory ``dests[op]``."""
            with m.Switch(op):
                for o, r in dests.items():
                    with m.Case(o):
                        with m.Switch(index):
                            for x in range(S):
                                with m.Case(x):
                                    m.d.comb += seq_w_data[r].eq(word(r, x))
                        m.d.comb += [seq_addr[r].eq(addr), seq_w_en[r].eq(1)]

        # ---- sequencer ---------------------------------------------------------------------
        with m.If(busy):
            m.d.sync += cycles.eq(cycles + 1)
        dest = {Op.FORWARD: Region.ACT, Op.LOSS: Region.ERR, Op.BACKWARD: Region.ERR,
                Op.SGD: Region.WGT}
        col_dest = {Op.FORWARD: Region.ACT, Op.LOSS: Region.ACT, Op.SGD: Region.WGT}
        last_tc = tc_left == 0
        last_tr = tr_left == 0

        with m.FSM(name="seq"):
            with m.State("IDLE"):
                with m.If(start):
                    m.d.sync += [busy.eq(1), pc.eq(prog_start), cycles.eq(0), retired.eq(0),
                                 done_flag.eq(0), fetch_n.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                # chunk n read while fetch_n == n, shown while fetch_n == n + 1
                m.d.comb += seq_addr[Region.PROG].eq(Cat(fetch_n[:pb], pc))
                m.d.sync += fetch_n.eq(fetch_n + 1)
                for n in range(self.PROG_CHUNKS):
                    with m.If(fetch_n == n + 1):
                        m.d.sync += cur_bits.word_select(n, 32).eq(mems[Region.PROG].r_data)
                with m.If(fetch_n == self.PROG_CHUNKS):
                    m.d.sync += fetch_n.eq(0)
                    m.next = "DECODE"
            with m.State("DECODE"):
                valid_op = ((op == Op.FORWARD) | (op == Op.LOSS) | (op == Op.BACKWARD) |
                            (op == Op.SGD))
                nonempty = (cur.k_len != 0) & (cur.tiles_r != 0) & (cur.tiles_c != 0)
                scales = (op == Op.FORWARD) | (op == Op.LOSS)
                divisor_ok = (cur.divisor != 0) & (cur.divisor <= g.divisor_max)
                sgd_ok = ((cur.d_g != 0) & (cur.d_g[g.d_g_width:] == 0) &
                          (cur.d_w[g.d_w_width:] == 0))
                exact = (~scales | divisor_ok) & ((op != Op.SGD) | sgd_ok)
                m.d.sync += [tr_left.eq(cur.tiles_r - 1), tc_left.eq(cur.tiles_c - 1),
                             i.eq(0), j.eq(0), tr_s.eq(0), tc_s.eq(0),
                             tc_off.eq(0), a_tile.eq(cur.a_base), b_tile.eq(cur.b_base),
                             col_tr.eq(cur.col_base)]
                # the checks registered, acted on in DISPATCH (the instruction register ->
                # the checks -> busy's enable was the iCE40 build's critical path, 30.4 ns)
                m.d.sync += [is_end.eq(op == Op.END),
                             executable.eq(valid_op & nonempty & exact & (pc < g.prog_depth))]
                m.next = "DISPATCH"
            with m.State("DISPATCH"):
                with m.If(is_end):
                    m.d.sync += [busy.eq(0), done_flag.eq(1)]
                    m.next = "IDLE"
                with m.Elif(executable):
                    m.next = "ELEMENT"
                with m.Else():
                    m.d.sync += [busy.eq(0), done_flag.eq(1), op_error.eq(1)]
                    m.next = "IDLE"
            with m.State("ELEMENT"):
                m.d.comb += acc_clear.eq(1)
                m.d.sync += [a_addr.eq(a_tile), b_addr.eq(b_tile), k_left.eq(cur.k_len - 1),
                             row_idx.eq(tr_s + i), col_idx.eq(tc_s + j),
                             tile_off.eq(tr_s + tc_off), row_off.eq(tr_s + tc_off + i)]
                m.next = "AUX_ADDR"
            with m.State("AUX_ADDR"):
                m.d.sync += [aux_code_addr.eq(cur.aux_base + row_off),
                             aux_wgt_addr.eq(cur.row_base + row_off)]
                m.next = "AUX_READ"
            with m.State("AUX_READ"):
                # the aux reads: LOSS's label, BACKWARD's code, SGD's old weight
                m.d.comb += [seq_addr[Region.LABEL].eq(row_idx),
                             seq_addr[Region.CODE].eq(aux_code_addr),
                             seq_addr[Region.WGT].eq(aux_wgt_addr)]
                m.d.sync += aux_shown.eq(1)
                m.next = "MAC"
            with m.State("MAC"):
                m.d.comb += [issuing.eq(1), seq_addr[Region.ACT].eq(a_addr),
                             seq_addr[Region.WGT].eq(b_addr), seq_addr[Region.ERR].eq(b_addr)]
                m.d.sync += [a_addr.eq(a_addr + cur.a_k_stride),
                             b_addr.eq(b_addr + cur.b_k_stride), k_left.eq(k_left - 1)]
                with m.If(k_left == 0):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(~draining):
                    m.next = "HANDOFF"
            with m.State("HANDOFF"):
                # once the previous element's result is stored, this one's post-processing
                # starts (in the next cycle) and the next element's products begin
                with m.If(~post_busy):
                    m.d.sync += [post_acc.eq(acc), post_code.eq(aux_code),
                                 post_w_old.eq(aux_w_old), post_zero.eq(aux_zero),
                                 post_target.eq(aux_target), post_i.eq(i), post_j.eq(j),
                                 post_busy.eq(1), post_start.eq(1)]
                    with m.If(j != S - 1):
                        m.d.sync += j.eq(j + 1)
                        m.next = "ELEMENT"
                    with m.Elif(i != S - 1):
                        m.d.sync += [i.eq(i + 1), j.eq(0)]
                        m.next = "ELEMENT"
                    with m.Else():
                        m.d.sync += [i.eq(0), j.eq(0)]
                        m.next = "TILE_WAIT"
            with m.State("TILE_WAIT"):
                # the tile's last result stored
                with m.If(~post_busy):
                    m.next = "ROW_ADDR"
            # the tile's writes: row i (reusing i), then with col_en column j (reusing j)
            with m.State("ROW_ADDR"):
                m.d.sync += [wr_addr.eq(cur.row_base + tile_off + i),
                             code_addr.eq(cur.aux_base + tile_off + i)]
                m.next = "ROW_WRITE"
            with m.State("ROW_WRITE"):
                write_tile_word(dest, i, row_word, wr_addr)
                with m.If(op == Op.FORWARD):
                    write_tile_word({Op.FORWARD: Region.CODE}, i,
                                    lambda r, ii: Cat(codes[ii]), code_addr)
                with m.If(i != S - 1):
                    m.d.sync += i.eq(i + 1)
                    m.next = "ROW_ADDR"
                with m.Else():
                    m.d.sync += i.eq(0)
                    with m.If(cur.col_en & (op != Op.BACKWARD)):
                        m.next = "COL_ADDR"
                    with m.Else():
                        m.next = "NEXT_TILE"
            with m.State("COL_ADDR"):
                m.d.sync += wr_addr.eq(col_tr + tc_s + j)
                m.next = "COL_WRITE"
            with m.State("COL_WRITE"):
                write_tile_word(col_dest, j, col_word, wr_addr)
                with m.If(j != S - 1):
                    m.d.sync += j.eq(j + 1)
                    m.next = "COL_ADDR"
                with m.Else():
                    m.d.sync += j.eq(0)
                    m.next = "NEXT_TILE"
            with m.State("NEXT_TILE"):
                with m.If(~last_tc):
                    m.d.sync += [tc_left.eq(tc_left - 1), tc_s.eq(tc_s + S),
                                 tc_off.eq(tc_off + cur.tc_stride),
                                 b_tile.eq(b_tile + cur.b_tile_stride)]
                    m.next = "ELEMENT"
                with m.Else():
                    m.d.sync += [tc_left.eq(cur.tiles_c - 1), tc_s.eq(0), tc_off.eq(0),
                                 b_tile.eq(cur.b_base), tr_left.eq(tr_left - 1),
                                 tr_s.eq(tr_s + S),
                                 a_tile.eq(a_tile + cur.a_tile_stride),
                                 col_tr.eq(col_tr + cur.col_tr_stride)]
                    with m.If(~last_tr):
                        m.next = "ELEMENT"
                    with m.Else():
                        m.d.sync += [pc.eq(pc + 1), retired.eq(retired + 1)]
                        m.next = "FETCH"

        with m.If(clear):
            m.d.sync += [op_error.eq(0), access_error.eq(0), ovf_mac.eq(0),
                         ovf_backerr.eq(0), ovf_sgd.eq(0)]
        return m
