"""The SerialTrainer: the Trainer's programs, one multiply-accumulate at a time (iCE40UP5K).

The same program format, memory map, registers and host bus as :class:`hw.trainers.trainer.Trainer`
(hw/contract/), so the same compiler, backends and host link drive it, with the results of
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

Memories have one port each (the UP5K's SPRAM has one; ``hw/vendor/ice40_spram.py``): the host owns
them while the SerialTrainer is idle, the sequencer while it runs.  With
``memory_block="spram"`` ACT and WGT are SB_SPRAM256KA blocks; the other memories are
``lib.memory`` (EBR on the iCE40).  PROG holds each instruction as its 32-bit host chunks
(``hw.contract.chunks_of(INSTRUCTION_BITS)`` = 16, in slots of 16): a PROG chunk is written
as it arrives (no staging register for the 508-bit word), which only differs from the
Trainer for a host that writes part of an instruction.  The other wide words (ERR's) are
staged like the Trainer's: chunks ``0..n-2`` to a staging register, chunk ``n-1`` writes.

Errors (``STATUS``): as the Trainer, ``op_error`` also for an instruction the SerialTrainer
cannot execute exactly: an op other than FORWARD, LOSS, BACKWARD and SGD (END aside), a
non-zero field of ``hw.contract.CNN_FIELDS`` (the spatial levels), a FORWARD or LOSS
``divisor`` of 0 or above ``divisor_max``, an SGD ``d_g`` of 0 or wider than ``d_g_width``, a
``d_w`` wider than ``d_w_width``.  ``collision``,
``tile_lost`` and ``row_lost`` watch the Trainer's pipelines and are always 0 here.
Overflow (``OVERFLOW``) as the Trainer: ``mac`` (a partial sum left ``acc_width``: the
accumulator wraps), ``backerr`` and ``sgd`` (saturated values; hw/units/serial_post.py).
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring

from hw.contract import (ADDRESS_WIDTH, CODE_WIDTH, INSTRUCTION_BITS, PAD_LABEL, Geometry, Op,
                         Region, chunk_bits_of, chunks_of, lane_width)
from hw.memory.single_port import SinglePortMemory
from hw.trainers.core import TrainerCore, instruction_layout, uses_cnn_fields
from hw.trainers.host_port import CoreFlags, HostPort, chunk_select, memory_access
from hw.units.serial_post import SerialPost

__all__ = ["SerialTrainer"]


class SerialTrainer(TrainerCore):
    """Runs NITRO-D training programs (hw/contract/isa.py) on one multiplier and one divider.

    Parameters
    ----------
    geometry : hw.contract.Geometry -- array side ``S`` (the tile and word size of the
        programs: the SerialTrainer computes a tile's ``S * S`` values one by one), memory
        depths and lane widths.
    memory_block : ``"memory"`` (default; any simulator or device) or ``"spram"`` (ACT and WGT
        on iCE40 SB_SPRAM256KA, hw/vendor/ice40_spram.py; Verilator runs the block's model).

    Ports: :class:`hw.trainers.core.TrainerCore`'s.
    """

    #: cycles from ``bus.r_en`` to the word on ``bus.r_data``: the bus inputs are registered
    #: (1), the memory reads (1), the register value or the chunk of the word is registered
    #: into ``r_data`` (1)
    READ_LATENCY = 3
    #: the memories (module paths below the core) whose read never meets a write of the same
    #: word in the same cycle: a SinglePortMemory reads only in cycles that do not write.
    #: boards/build.py tells Yosys, which otherwise emulates the old word on a collision with
    #: logic behind each EBR, in series with the sequencer's port multiplexer
    collision_free_memories = ("mem_*",)
    #: the regions that go to SPRAM with ``memory_block="spram"``
    SPRAM_REGIONS = (Region.ACT, Region.WGT)
    #: the instruction's 32-bit chunks in PROG, and the slots per instruction (a power of two)
    PROG_CHUNKS = chunks_of(INSTRUCTION_BITS)
    PROG_SLOT_BITS = chunk_bits_of(INSTRUCTION_BITS)
    #: cycles a product's value takes through the read, operand and product registers
    MAC_DRAIN = 3

    def __init__(self, geometry: Geometry = Geometry(side=2), *, memory_block: str = "memory"):
        if memory_block not in ("memory", "spram"):
            self._MustUse__silence = True       # never built: no "unused" warning
            raise ValueError(f"memory_block must be 'memory' or 'spram', not {memory_block!r}")
        self.memory_block = memory_block
        self.instr_layout = instruction_layout()
        super().__init__(geometry)

    @classmethod
    def mac_elements(cls, geometry: Geometry) -> int:
        """One multiplier."""
        return 1

    @classmethod
    def region_memories(cls, geometry: Geometry) -> dict:
        """The memories; PROG holds each instruction as its 32-bit host chunks, in slots of
        ``2**PROG_SLOT_BITS`` words (a PROG chunk is written as it arrives: no staging
        register for the 508-bit word)."""
        shapes = super().region_memories(geometry)
        shapes[Region.PROG] = (32, geometry.prog_depth << cls.PROG_SLOT_BITS)
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
        """Cycles the instruction ``ins`` (hw.contract field dict) takes, exactly: its fetch
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
        mems = self.memories()
        for r, mem in mems.items():
            m.submodules[f"mem_{r.name.lower()}"] = mem
        # the state the stages below share
        s = SimpleNamespace(
            busy=Signal(), pc=Signal(ADDRESS_WIDTH), cycles=Signal(32), retired=Signal(16),
            done=Signal(), op_error=Signal(),
            ovf_mac=Signal(), ovf_backerr=Signal(), ovf_sgd=Signal(),
            cur_bits=Signal(32 * self.PROG_CHUNKS),
            # the sequencer's side of each memory port (the host's while idle)
            seq_addr={r: Signal(ADDRESS_WIDTH, name=f"seq_addr_{r.name.lower()}")
                      for r in mems},
            seq_w_en={r: Signal(name=f"seq_w_en_{r.name.lower()}") for r in mems},
            seq_w_data={r: Signal(mems[r].width, name=f"seq_w_data_{r.name.lower()}")
                        for r in mems})
        s.cur = data.View(self.instr_layout, s.cur_bits[:INSTRUCTION_BITS])
        m.d.comb += [self.busy.eq(s.busy),
                     self.overflow.eq(Cat(s.ovf_mac, s.ovf_backerr, s.ovf_sgd))]
        host = self._host(m, mems, s)
        self._counters(s)
        self._multiply_accumulate(m, mems, s)
        self._post_processing(m, mems, s)
        with m.If(s.busy):
            m.d.sync += s.cycles.eq(s.cycles + 1)
        self._sequencer(m, mems, s, host)
        with m.If(host.clear):
            m.d.sync += [s.op_error.eq(0), s.ovf_mac.eq(0), s.ovf_backerr.eq(0),
                         s.ovf_sgd.eq(0)]
        return m

    def _host(self, m, mems, s):
        """The host port, each memory's one port (the sequencer's while busy, else the
        host's) and the host's reads: the register value, or which memory and chunk,
        registered as the memory reads; then the value or the chunk into ``r_data``."""
        g = self.geometry
        m.submodules.host = host = HostPort(self.region_memories(g), self.constant_registers(),
                                            read_latency=self.READ_LATENCY)
        wiring.connect(m, wiring.flipped(self.bus), host.bus)
        flags = Signal(CoreFlags)           # collision, tile_lost, row_lost: always 0 here
        m.d.comb += [flags.done.eq(s.done), flags.op_error.eq(s.op_error), host.flags.eq(flags),
                     host.busy.eq(s.busy), host.overflow.eq(self.overflow),
                     host.cycles.eq(s.cycles), host.retired.eq(s.retired)]
        access = host.access
        for r, mem in mems.items():
            port = memory_access(access, r)
            with m.If(s.busy):
                m.d.comb += [mem.addr.eq(s.seq_addr[r]), mem.w_en.eq(s.seq_w_en[r]),
                             mem.w_data.eq(s.seq_w_data[r])]
            with m.Else():
                m.d.comb += [mem.addr.eq(port.word), mem.w_en.eq(port.wr_en),
                             mem.w_data.eq(port.data)]
        rd_region = Signal.like(access.region)
        rd_chunk = Signal(max(1, max(chunk_bits_of(w) for w, _ in host.memories.values())))
        rd_ok = Signal()
        with m.If(access.r_en):
            m.d.sync += [rd_region.eq(access.region), rd_ok.eq(0),
                         rd_chunk.eq(access.offset[:len(rd_chunk)])]
            for r in mems:
                with m.If(access.region == r):
                    m.d.sync += rd_ok.eq(memory_access(access, r).rd_en)
        r_data = Signal(32)
        with m.Switch(rd_region):
            with m.Case(Region.REGS):
                m.d.sync += r_data.eq(access.reg_read)
            for r, mem in mems.items():
                with m.Case(r):
                    chunk = chunk_select(mem.r_data, rd_chunk, mem.width)
                    m.d.sync += r_data.eq(Mux(rd_ok, chunk, 0))
            with m.Default():
                m.d.sync += r_data.eq(0)
        m.d.comb += host.r_data.eq(r_data)
        return host

    def _counters(self, s):
        """The tile, element and beat counters and the addresses derived from them."""
        S, W = self.geometry.side, ADDRESS_WIDTH
        # tiles and beats left after the current one: down-counters, so that "last" is a
        # compare with zero, not a subtraction and a compare into the next state
        s.tr_left, s.tc_left, s.k_left = Signal(W), Signal(W), Signal(W)
        s.i, s.j = Signal(range(S)), Signal(range(S))
        s.tr_s, s.tc_s = Signal(W), Signal(W)               # tr * S, tc * S
        s.tc_off = Signal(W)                                # tc * tc_stride
        s.a_tile, s.b_tile = Signal(W), Signal(W)           # the tile's k = 0 words
        s.col_tr = Signal(W)                                # col_base + tr * col_tr_stride
        s.a_addr, s.b_addr = Signal(W), Signal(W)
        s.row_off = Signal(W)                               # tr*S + i + tc*tc_stride
        s.row_idx, s.col_idx = Signal(W), Signal(W)         # tr*S + i, tc*S + j
        s.tile_off = Signal(W)                              # tr*S + tc*tc_stride
        s.wr_addr, s.code_addr = Signal(W), Signal(W)       # the tile's row or column writes
        # the element's aux read addresses (CODE for BACKWARD, WGT for SGD), registered a
        # cycle before the reads, so that no adder sits between the sequencer and a block
        # RAM's address
        s.aux_code_addr, s.aux_wgt_addr = Signal(W), Signal(W)

    def _multiply_accumulate(self, m, mems, s):
        """The one multiplier: ACT lane i times B lane j, accumulated over the element's
        beats; a partial sum beyond ``acc_width`` raises OVERFLOW.mac (and wraps)."""
        g = self.geometry
        b_width = max(g.err_width, g.wgt_width)
        s.issuing = Signal()
        issued = Signal()                                 # the words read show this cycle
        ops_valid, prod_valid = Signal(), Signal()
        a_op = Signal(signed(g.act_width))
        b_op = Signal(signed(b_width))
        prod = Signal(signed(g.act_width + b_width))
        s.acc = Signal(signed(g.acc_width))
        acc_sum = Signal(signed(g.acc_width + 1))
        s.acc_clear = Signal()
        act_word = mems[Region.ACT].r_data
        wgt_word = mems[Region.WGT].r_data
        err_word = mems[Region.ERR].r_data
        m.d.sync += [issued.eq(s.issuing), ops_valid.eq(issued), prod_valid.eq(ops_valid)]
        m.d.sync += [
            a_op.eq(act_word.word_select(s.i, g.act_width).as_signed()),
            b_op.eq(Mux(s.cur.b_src, err_word.word_select(s.j, g.err_width).as_signed(),
                        wgt_word.word_select(s.j, g.wgt_width).as_signed())),
            prod.eq(a_op * b_op),
        ]
        m.d.comb += acc_sum.eq(s.acc + prod)
        with m.If(s.acc_clear):
            m.d.sync += s.acc.eq(0)
        with m.Elif(prod_valid):
            m.d.sync += s.acc.eq(acc_sum[:g.acc_width])
            with m.If(acc_sum[-1] != acc_sum[-2]):
                m.d.sync += s.ovf_mac.eq(1)
        s.draining = Signal()
        m.d.comb += s.draining.eq(issued | ops_valid | prod_valid)

    def _post_processing(self, m, mems, s):
        """One value's post-processing at a time, into the tile buffer.

        An element's post-processing runs while the next element's products are computed:
        the element's aux values (read before its products) wait in ``aux_*``, and at its
        handoff the accumulator and those values move to ``post_*``, the SerialPost's inputs,
        held until its ``done`` stores the result in the tile buffer at (post_i, post_j)."""
        g, S = self.geometry, self.geometry.side
        cur = s.cur
        m.submodules.post = post = self.post_unit(g)
        s.aux_code = Signal(CODE_WIDTH)
        s.aux_w_old = Signal(signed(g.wgt_width))
        s.aux_zero, s.aux_target = Signal(), Signal()
        s.aux_shown = Signal()                # the aux reads show on the ports this cycle
        s.post_acc = Signal(signed(g.acc_width))
        s.post_code = Signal(CODE_WIDTH)
        s.post_w_old = Signal(signed(g.wgt_width))
        s.post_zero, s.post_target = Signal(), Signal()
        s.post_i, s.post_j = Signal(range(S)), Signal(range(S))
        s.post_busy = Signal()                # handed off, its result not stored yet
        s.post_start = Signal()               # the cycle after the handoff
        m.d.comb += [post.op.eq(cur.op), post.acc.eq(s.post_acc), post.divisor.eq(cur.divisor),
                     post.inv_slope.eq(cur.inv_slope), post.code.eq(s.post_code),
                     post.w_old.eq(s.post_w_old), post.d_g.eq(cur.d_g), post.d_w.eq(cur.d_w),
                     post.target.eq(s.post_target), post.zero.eq(s.post_zero),
                     post.start.eq(s.post_start)]
        m.d.sync += [s.post_start.eq(0), s.aux_shown.eq(0)]
        value_width = len(post.value)
        s.vals = [[Signal(signed(value_width), name=f"val_{ii}_{jj}") for jj in range(S)]
                  for ii in range(S)]
        s.codes = [[Signal(CODE_WIDTH, name=f"code_{ii}_{jj}") for jj in range(S)]
                   for ii in range(S)]
        with m.If(post.done):
            for ii in range(S):
                for jj in range(S):
                    with m.If((s.post_i == ii) & (s.post_j == jj)):
                        m.d.sync += [s.vals[ii][jj].eq(post.value),
                                     s.codes[ii][jj].eq(post.code_out)]
            m.d.sync += s.post_busy.eq(0)
            with m.If(post.backerr):
                m.d.sync += s.ovf_backerr.eq(1)
            with m.If(post.sgd_overflow):
                m.d.sync += s.ovf_sgd.eq(1)
        # the aux values, from the reads of AUX_READ (WGT's word changes once the products
        # read it)
        with m.If(s.aux_shown):
            label = mems[Region.LABEL].r_data
            in_range = (s.row_idx < cur.row_len) & (s.col_idx < cur.col_len)
            pad = (cur.op == Op.LOSS) & (label == PAD_LABEL)
            m.d.sync += [
                s.aux_code.eq(mems[Region.CODE].r_data.word_select(s.j, CODE_WIDTH)),
                s.aux_w_old.eq(mems[Region.WGT].r_data.word_select(s.j, g.wgt_width)
                               .as_signed()),
                s.aux_zero.eq(~in_range | pad),
                s.aux_target.eq(s.col_idx == label),
            ]

    def _write_tile_word(self, m, s, dests, index, word, addr):
        """Write ``word(region, index)`` at ``addr`` of the memory ``dests[op]``."""
        with m.Switch(s.cur.op):
            for o, r in dests.items():
                with m.Case(o):
                    with m.Switch(index):
                        for x in range(self.geometry.side):
                            with m.Case(x):
                                m.d.comb += s.seq_w_data[r].eq(word(r, x))
                    m.d.comb += [s.seq_addr[r].eq(addr), s.seq_w_en[r].eq(1)]

    def _sequencer(self, m, mems, s, host):
        """Fetch, decode and dispatch each instruction, then run its tiles element by
        element, and write each tile after its last result."""
        fetch_n = Signal(range(self.PROG_CHUNKS + 1))
        pb = self.PROG_SLOT_BITS
        with m.FSM(name="seq"):
            with m.State("IDLE"):
                with m.If(host.start):
                    m.d.sync += [s.busy.eq(1), s.pc.eq(host.prog_start), s.cycles.eq(0),
                                 s.retired.eq(0), s.done.eq(0), fetch_n.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                # chunk n read while fetch_n == n, shown while fetch_n == n + 1
                m.d.comb += s.seq_addr[Region.PROG].eq(Cat(fetch_n[:pb], s.pc))
                m.d.sync += fetch_n.eq(fetch_n + 1)
                for n in range(self.PROG_CHUNKS):
                    with m.If(fetch_n == n + 1):
                        m.d.sync += s.cur_bits.word_select(n, 32).eq(mems[Region.PROG].r_data)
                with m.If(fetch_n == self.PROG_CHUNKS):
                    m.d.sync += fetch_n.eq(0)
                    m.next = "DECODE"
            self._decode_and_dispatch(m, s)
            self._element_states(m, s)
            self._tile_write_states(m, s)

    def _decode_and_dispatch(self, m, s):
        g, cur, op = self.geometry, s.cur, s.cur.op
        is_end, executable = Signal(), Signal()       # the decoded instruction's checks
        with m.State("DECODE"):
            valid_op = ((op == Op.FORWARD) | (op == Op.LOSS) | (op == Op.BACKWARD) |
                        (op == Op.SGD))
            nonempty = (cur.k_len != 0) & (cur.tiles_r != 0) & (cur.tiles_c != 0)
            scales = (op == Op.FORWARD) | (op == Op.LOSS)
            divisor_ok = (cur.divisor != 0) & (cur.divisor <= g.divisor_max)
            sgd_ok = ((cur.d_g != 0) & (cur.d_g[g.d_g_width:] == 0) &
                      (cur.d_w[g.d_w_width:] == 0))
            exact = (~scales | divisor_ok) & ((op != Op.SGD) | sgd_ok)
            m.d.sync += [s.tr_left.eq(cur.tiles_r - 1), s.tc_left.eq(cur.tiles_c - 1),
                         s.i.eq(0), s.j.eq(0), s.tr_s.eq(0), s.tc_s.eq(0),
                         s.tc_off.eq(0), s.a_tile.eq(cur.a_base), s.b_tile.eq(cur.b_base),
                         s.col_tr.eq(cur.col_base)]
            # the checks registered, acted on in DISPATCH: the instruction register, the
            # checks and busy's enable in one cycle were too long a path on the iCE40
            m.d.sync += [is_end.eq(op == Op.END),
                         executable.eq(valid_op & nonempty & exact & ~uses_cnn_fields(cur)
                                       & (s.pc < g.prog_depth))]
            m.next = "DISPATCH"
        with m.State("DISPATCH"):
            with m.If(is_end):
                m.d.sync += [s.busy.eq(0), s.done.eq(1)]
                m.next = "IDLE"
            with m.Elif(executable):
                m.next = "ELEMENT"
            with m.Else():
                m.d.sync += [s.busy.eq(0), s.done.eq(1), s.op_error.eq(1)]
                m.next = "IDLE"

    def _element_states(self, m, s):
        """One element of the tile: its aux reads, its ``k_len`` products, its handoff."""
        S, cur = self.geometry.side, s.cur
        with m.State("ELEMENT"):
            m.d.comb += s.acc_clear.eq(1)
            m.d.sync += [s.a_addr.eq(s.a_tile), s.b_addr.eq(s.b_tile),
                         s.k_left.eq(cur.k_len - 1),
                         s.row_idx.eq(s.tr_s + s.i), s.col_idx.eq(s.tc_s + s.j),
                         s.tile_off.eq(s.tr_s + s.tc_off), s.row_off.eq(s.tr_s + s.tc_off + s.i)]
            m.next = "AUX_ADDR"
        with m.State("AUX_ADDR"):
            m.d.sync += [s.aux_code_addr.eq(cur.aux_base + s.row_off),
                         s.aux_wgt_addr.eq(cur.row_base + s.row_off)]
            m.next = "AUX_READ"
        with m.State("AUX_READ"):
            # the aux reads: LOSS's label, BACKWARD's code, SGD's old weight
            m.d.comb += [s.seq_addr[Region.LABEL].eq(s.row_idx),
                         s.seq_addr[Region.CODE].eq(s.aux_code_addr),
                         s.seq_addr[Region.WGT].eq(s.aux_wgt_addr)]
            m.d.sync += s.aux_shown.eq(1)
            m.next = "MAC"
        with m.State("MAC"):
            m.d.comb += [s.issuing.eq(1), s.seq_addr[Region.ACT].eq(s.a_addr),
                         s.seq_addr[Region.WGT].eq(s.b_addr), s.seq_addr[Region.ERR].eq(s.b_addr)]
            m.d.sync += [s.a_addr.eq(s.a_addr + cur.a_k_stride),
                         s.b_addr.eq(s.b_addr + cur.b_k_stride), s.k_left.eq(s.k_left - 1)]
            with m.If(s.k_left == 0):
                m.next = "DRAIN"
        with m.State("DRAIN"):
            with m.If(~s.draining):
                m.next = "HANDOFF"
        with m.State("HANDOFF"):
            # once the previous element's result is stored, this one's post-processing
            # starts (in the next cycle) and the next element's products begin
            with m.If(~s.post_busy):
                m.d.sync += [s.post_acc.eq(s.acc), s.post_code.eq(s.aux_code),
                             s.post_w_old.eq(s.aux_w_old), s.post_zero.eq(s.aux_zero),
                             s.post_target.eq(s.aux_target), s.post_i.eq(s.i), s.post_j.eq(s.j),
                             s.post_busy.eq(1), s.post_start.eq(1)]
                with m.If(s.j != S - 1):
                    m.d.sync += s.j.eq(s.j + 1)
                    m.next = "ELEMENT"
                with m.Elif(s.i != S - 1):
                    m.d.sync += [s.i.eq(s.i + 1), s.j.eq(0)]
                    m.next = "ELEMENT"
                with m.Else():
                    m.d.sync += [s.i.eq(0), s.j.eq(0)]
                    m.next = "TILE_WAIT"
        with m.State("TILE_WAIT"):
            # the tile's last result stored
            with m.If(~s.post_busy):
                m.next = "ROW_ADDR"

    def _tile_write_states(self, m, s):
        """The tile's writes: row i (reusing i), then with col_en column j (reusing j); then
        the next tile, or the next instruction."""
        g, S, cur, op = self.geometry, self.geometry.side, s.cur, s.cur.op
        dest = {Op.FORWARD: Region.ACT, Op.LOSS: Region.ERR, Op.BACKWARD: Region.ERR,
                Op.SGD: Region.WGT}
        col_dest = {Op.FORWARD: Region.ACT, Op.LOSS: Region.ACT, Op.SGD: Region.WGT}

        def row_word(r, ii):
            return Cat(v[:lane_width(g, r)] for v in s.vals[ii])

        def col_word(r, c):
            return Cat(s.vals[ii][c][:lane_width(g, r)] for ii in range(S))

        with m.State("ROW_ADDR"):
            m.d.sync += [s.wr_addr.eq(cur.row_base + s.tile_off + s.i),
                         s.code_addr.eq(cur.aux_base + s.tile_off + s.i)]
            m.next = "ROW_WRITE"
        with m.State("ROW_WRITE"):
            self._write_tile_word(m, s, dest, s.i, row_word, s.wr_addr)
            with m.If(op == Op.FORWARD):
                self._write_tile_word(m, s, {Op.FORWARD: Region.CODE}, s.i,
                                      lambda r, ii: Cat(s.codes[ii]), s.code_addr)
            with m.If(s.i != S - 1):
                m.d.sync += s.i.eq(s.i + 1)
                m.next = "ROW_ADDR"
            with m.Else():
                m.d.sync += s.i.eq(0)
                with m.If(cur.col_en & (op != Op.BACKWARD)):
                    m.next = "COL_ADDR"
                with m.Else():
                    m.next = "NEXT_TILE"
        with m.State("COL_ADDR"):
            m.d.sync += s.wr_addr.eq(s.col_tr + s.tc_s + s.j)
            m.next = "COL_WRITE"
        with m.State("COL_WRITE"):
            self._write_tile_word(m, s, col_dest, s.j, col_word, s.wr_addr)
            with m.If(s.j != S - 1):
                m.d.sync += s.j.eq(s.j + 1)
                m.next = "COL_ADDR"
            with m.Else():
                m.d.sync += s.j.eq(0)
                m.next = "NEXT_TILE"
        with m.State("NEXT_TILE"):
            with m.If(s.tc_left != 0):
                m.d.sync += [s.tc_left.eq(s.tc_left - 1), s.tc_s.eq(s.tc_s + S),
                             s.tc_off.eq(s.tc_off + cur.tc_stride),
                             s.b_tile.eq(s.b_tile + cur.b_tile_stride)]
                m.next = "ELEMENT"
            with m.Else():
                m.d.sync += [s.tc_left.eq(cur.tiles_c - 1), s.tc_s.eq(0), s.tc_off.eq(0),
                             s.b_tile.eq(cur.b_base), s.tr_left.eq(s.tr_left - 1),
                             s.tr_s.eq(s.tr_s + S),
                             s.a_tile.eq(s.a_tile + cur.a_tile_stride),
                             s.col_tr.eq(s.col_tr + cur.col_tr_stride)]
                with m.If(s.tr_left != 0):
                    m.next = "ELEMENT"
                with m.Else():
                    m.d.sync += [s.pc.eq(s.pc + 1), s.retired.eq(s.retired + 1)]
                    m.next = "FETCH"
