"""The host's side of a trainer core: its bus registered and decoded, the registers.

Every trainer core answers the host the same way (hw/contract/memory_map.py,
hw/contract/registers.py); :class:`HostPort` is that part, shared by the cores:

* the bus inputs registered at the core's edge (the link's address and strobes come from far
  away, and everything they decode then starts at a flip-flop; writes and reads are delayed
  alike, so their order is kept);
* for each memory, the host's write and read strobes of the registered access (in range, and
  only while the core is idle), its word address, its chunk and the whole word to write: the
  chunks ``0 .. n-2`` of a wide word are staged, the last one writes the word;
* ``STATUS.access_error`` (an access while running or beyond a memory's depth: dropped);
* the registers: CONTROL (``start`` and ``clear`` pulse in the bus cycle after the write),
  PROG_START, and the read-only ones, whose value for a read is ready one cycle after the
  registered access (``reg_read``).

The core reads its memories for the host and returns the word on ``bus.r_data`` itself
(``r_data``, its own ``READ_LATENCY``).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hw.contract import (BUS_ADDR_WIDTH, MAGIC, OVERFLOW_BITS, REGION_SHIFT, STATUS_BITS, Control,
                         Reg, Region,
                         chunk_bits_of, chunks_of)
from hw.host_bus import DATA_WIDTH, BusSignature

__all__ = ["HostPort", "CoreFlags", "memory_access_signature", "host_access_signature",
           "memory_access", "chunk_select"]

#: the STATUS bits a core reports to its host port (the port adds ``busy`` and
#: ``access_error``); sticky errors until ``clear``
CoreFlags = data.StructLayout({name: 1 for name in STATUS_BITS
                               if name not in ("busy", "access_error")})


def memory_access_signature(word_bits: int, depth: int) -> wiring.Signature:
    """The host's access to one memory, as the port offers it: ``wr_en`` writes ``data`` at
    ``word``, ``rd_en`` reads ``word`` (the ``chunk`` of it), both for the registered access."""
    return wiring.Signature({
        "wr_en": Out(1),
        "rd_en": Out(1),
        "word": Out(max(1, REGION_SHIFT - chunk_bits_of(word_bits))),
        "chunk": Out(max(1, chunk_bits_of(word_bits))),
        "data": Out(word_bits),
    })


def host_access_signature(memories: dict) -> wiring.Signature:
    """The registered access as the host port offers it: the strobes, region, offset and
    data, the staged chunks (chunk k in bits ``32k .. 32k+31``), the register read a cycle
    after the access (``reg_read``) and ``mem.<region>`` (:func:`memory_access_signature`)
    per memory (``memories``: ``{Region: (word_bits, depth)}``)."""
    max_chunks = max(chunks_of(w) for w, _ in memories.values())
    mem = {Region(r).name.lower(): Out(memory_access_signature(w, d))
           for r, (w, d) in memories.items()}
    return wiring.Signature({
        "w_en": Out(1), "r_en": Out(1), "region": Out(range(len(Region))),
        "offset": Out(REGION_SHIFT), "w_data": Out(DATA_WIDTH),
        "stage": Out(DATA_WIDTH * max(1, max_chunks - 1)), "reg_read": Out(DATA_WIDTH),
        "mem": Out(wiring.Signature(mem)),
    })


def memory_access(access, region: Region):
    """The ``mem`` member of ``region`` in an interface of :func:`host_access_signature`."""
    return getattr(access.mem, Region(region).name.lower())


class HostPort(wiring.Component):
    """The bus decode and registers of a trainer core.

    Parameters
    ----------
    memories : ``{Region: (word_bits, depth)}`` -- the core's memories as the host sees them
        (``TrainerCore.region_memories``).
    constants : ``{Reg: value}`` -- the read-only registers (the geometry).
    read_latency : the core's ``READ_LATENCY`` (the bus signature's).

    Ports
    -----
    bus : In(BusSignature) -- the host bus (``r_data`` is the core's ``r_data``, passed on).
    r_data : In(32) -- the word the core returns for a read.
    busy, flags, overflow, cycles, retired : In -- what the registers show.
    start, clear : Out(1) -- CONTROL's bits, a pulse in the bus cycle after the write.
    engaged : Out(1) -- busy, or a START about to make it so: refuses memory accesses.
    prog_start : Out(16) -- the PROG_START register.
    access_error : Out(1) -- the sticky STATUS bit (cleared by ``clear``).
    access : Out(host_access_signature) -- the registered access.
    """

    def __init__(self, memories: dict, constants: dict, *, read_latency: int):
        self.memories = {Region(r): (int(w), int(d)) for r, (w, d) in memories.items()}
        self.constants = {Reg(r): int(v) for r, v in constants.items()}
        self.max_chunks = max(chunks_of(w) for w, _ in self.memories.values())
        super().__init__({
            "bus": In(BusSignature(BUS_ADDR_WIDTH, read_latency=read_latency)),
            "r_data": In(DATA_WIDTH),
            "busy": In(1),
            "flags": In(CoreFlags),
            "overflow": In(len(OVERFLOW_BITS)),
            "cycles": In(32),
            "retired": In(16),
            "start": Out(1),
            "clear": Out(1),
            "engaged": Out(1),
            "prog_start": Out(16),
            "access_error": Out(1),
            "access": Out(host_access_signature(self.memories)),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        m.d.comb += bus.r_data.eq(self.r_data)
        addr = Signal.like(bus.addr, reset_less=True)
        a = self.access
        m.d.sync += [addr.eq(bus.addr), a.w_data.eq(bus.w_data), a.w_en.eq(bus.w_en),
                     a.r_en.eq(bus.r_en)]
        region, offset = addr[REGION_SHIFT:], addr[:REGION_SHIFT]
        m.d.comb += [a.region.eq(region), a.offset.eq(offset),
                     self.engaged.eq(self.busy | self.start)]
        self._memory_accesses(m, region, offset)
        self._control(m, region, offset)
        self._register_reads(m, offset)
        return m

    def _memory_accesses(self, m, region, offset):
        bus, a = self.bus, self.access
        # Staging is not a memory write: only the last chunk, checked in full, writes the
        # word from it.  So a chunk is staged without the range and busy checks (a dropped
        # chunk still sets access_error below), and each staged word's enable is a flip-flop
        # decoded from the bus inputs as they are registered: each drives its word's 32
        # flip-flops, and no decode of the registered address drives all of them.
        n_stage = max(1, self.max_chunks - 1)
        stage_en = Signal(n_stage)
        stage_en_next = [Const(0, 1)] * n_stage
        for r, (word_bits, _) in self.memories.items():
            cb = chunk_bits_of(word_bits)
            for k in range(chunks_of(word_bits) - 1):
                stage_en_next[k] = stage_en_next[k] | (
                    bus.w_en & (bus.addr[REGION_SHIFT:] == r) & (bus.addr[:cb] == k))
        m.d.sync += stage_en.eq(Cat(*stage_en_next))
        for k in range(n_stage):
            with m.If(stage_en[k]):
                m.d.sync += a.stage.word_select(k, DATA_WIDTH).eq(a.w_data)
        bad = self.engaged
        for r, (word_bits, depth) in self.memories.items():
            cb = chunk_bits_of(word_bits)
            nch = chunks_of(word_bits)
            port = memory_access(a, r)
            chunk = offset[:cb] if cb else Const(0, 1)
            in_range = offset[cb:] < depth
            hit = (region == r) & in_range & ~self.engaged
            m.d.comb += [
                port.word.eq(offset[cb:]),
                port.chunk.eq(chunk),
                port.data.eq(Cat(a.stage[:DATA_WIDTH * (nch - 1)], a.w_data)[:word_bits]),
                port.wr_en.eq(a.w_en & hit & (chunk == nch - 1)),
                port.rd_en.eq(a.r_en & hit),
            ]
            bad = bad | ((region == r) & ~in_range)
        memory = (region != Region.REGS) & (region < len(Region))
        with m.If(self.clear):
            m.d.sync += self.access_error.eq(0)
        with m.Elif((a.w_en | a.r_en) & memory & bad):
            m.d.sync += self.access_error.eq(1)

    def _control(self, m, region, offset):
        # start and clear are flip-flops: the bus decode stays off the sequencer's next state
        # and the sticky flags' enables
        m.d.sync += [self.start.eq(0), self.clear.eq(0)]
        a = self.access
        with m.If(a.w_en & (region == Region.REGS)):
            with m.Switch(offset):
                with m.Case(Reg.CONTROL):
                    m.d.sync += [self.start.eq(a.w_data[Control.START.bit_length() - 1]
                                               & ~self.engaged),
                                 self.clear.eq(a.w_data[Control.CLEAR.bit_length() - 1])]
                with m.Case(Reg.PROG_START):
                    m.d.sync += self.prog_start.eq(a.w_data)

    def _status(self):
        """STATUS: the sticky errors read as cleared from the bus cycle after the CONTROL
        write, in which ``clear`` clears them."""
        bits = {"busy": self.engaged, "access_error": self.access_error,
                **{name: self.flags[name] for name in CoreFlags.members}}
        sticky = {name for name in STATUS_BITS if name not in ("busy", "done")}
        order = sorted(STATUS_BITS, key=STATUS_BITS.get)
        assert [STATUS_BITS[n] for n in order] == list(range(len(order)))
        return Cat(*(bits[n] & ~self.clear if n in sticky else bits[n] for n in order))

    def _register_reads(self, m, offset):
        table = {Reg.ID: MAGIC, Reg.STATUS: self._status(),
                 Reg.OVERFLOW: self.overflow & ~self.clear.replicate(len(self.overflow)),
                 Reg.CYCLES: self.cycles, Reg.RETIRED: self.retired,
                 Reg.PROG_START: self.prog_start, **self.constants}
        # Two steps: as the read is registered, the registers below 8 (the live ones) and the
        # constants (8 and up) are each selected by the offset's low bits into a register,
        # with which of them (or none) the offset names; then that choice (all of the offset
        # against every address in one step was a long path on the 8 x 8 board builds).
        assert all(int(a) < 32 for a in table)
        low, high = Signal(DATA_WIDTH), Signal(DATA_WIDTH)
        with m.Switch(offset[:3]):
            for address, value in table.items():
                if address < 8:
                    with m.Case(int(address)):
                        m.d.comb += low.eq(value)
        with m.Switch(offset[:5]):
            for address, value in table.items():
                if address >= 8:
                    with m.Case(int(address)):
                        m.d.comb += high.eq(value)
        low_q = Signal(DATA_WIDTH, reset_less=True)
        high_q = Signal(DATA_WIDTH, reset_less=True)
        which = Signal(2)            # 1: low, 2: high, 0: no register (reads 0)
        with m.If(self.access.r_en):
            m.d.sync += [low_q.eq(low), high_q.eq(high),
                         which.eq(Mux(offset[5:] != 0, 0, Mux(offset[3:5] == 0, 1, 2)))]
        m.d.comb += self.access.reg_read.eq(Mux(which == 1, low_q, Mux(which == 2, high_q, 0)))


def chunk_select(word, chunk, word_bits: int):
    """The 32-bit ``chunk`` of a ``word_bits`` wide ``word`` (0 beyond the word)."""
    nch = chunks_of(word_bits)
    padded = Cat(word, Const(0, DATA_WIDTH * (1 << max(0, ceil_log2(nch))) - word_bits))
    cb = chunk_bits_of(word_bits)
    return padded.word_select(chunk[:cb], DATA_WIDTH) if cb else padded[:DATA_WIDTH]
