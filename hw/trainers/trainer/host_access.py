"""The host's access to the Trainer's memories: its strobes registered, and its reads
returned through a pipeline of registers (``Trainer.READ_LATENCY`` = 10).

The memories' host ports are driven from registers (the decoded strobes, the word address and
the data), so the port multiplexers see flip-flops.  A read: the strobe is registered (1) and
once more (the read enable a register beside each bank, the address in the memory's address
register: 1), the block RAM reads (1), its words are registered as they leave the RAM (1), the
bank is selected in two steps, within groups of ``bank_group`` banks (1) and among the groups
(1), then each region selects the chunk in two steps, within groups of ``read_group`` chunks
(1) and among the groups (1), then the region is selected into the register that drives
``r_data`` (1); with the bus registered at the core's edge (1), 10 cycles.  So 32 bits per
region, not every region's whole word, travel to the ``r_data`` register, and each step's
registers sit beside their region's banks (their controls are copies of their own,
hw/replica.py).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hw.contract import REGION_SHIFT, Region, chunk_bits_of, chunks_of
from hw.host_bus import DATA_WIDTH
from hw.replica import replica

from hw.trainers.host_port import host_access_signature, memory_access

__all__ = ["HostAccess", "host_memory_signature", "READ_LATENCY"]

#: cycles from the bus's ``r_en`` to ``r_data`` (module docstring)
READ_LATENCY = 10


def host_memory_signature(word_bits: int, depth: int) -> wiring.Signature:
    """The host's registered access to one memory: write ``data`` at ``addr`` on ``wr_en``;
    read ``addr`` on ``rd_en`` (the read enable's register loads ``rd_en_next``)."""
    return wiring.Signature({
        "addr": Out(max(1, REGION_SHIFT - chunk_bits_of(word_bits))),
        "data": Out(word_bits), "wr_en": Out(1), "rd_en": Out(1), "rd_en_next": Out(1),
    })


class HostAccess(wiring.Component):
    """Parameters: ``memories`` -- ``{Region: BankedMemory}`` (their words are registered
    here); ``host`` -- the core's :class:`hw.trainers.host_port.HostPort`; ``bank_group``,
    ``read_group``.

    Ports
    -----
    port : In(host_access_signature) -- the host port's registered access
    <region> : Out(host_memory_signature) -- per memory
    r_data : Out(32) -- the word read
    """

    def __init__(self, memories: dict, host, *, bank_group: int, read_group: int):
        self._mems = memories
        self.bank_group, self.read_group = bank_group, read_group
        self.memories = dict(host.memories)
        self.max_chunks = host.max_chunks
        super().__init__({
            "port": In(host_access_signature(host.memories)),
            **{r.name.lower(): Out(host_memory_signature(w, d))
               for r, (w, d) in self.memories.items()},
            "r_data": Out(DATA_WIDTH),
        })

    def access(self, region: Region):
        return getattr(self, Region(region).name.lower())

    def elaborate(self, platform):
        m = Module()
        port = self.port
        offset_q = Signal.like(port.offset, name="host_offset_q", reset_less=True)
        stage_q = Signal.like(port.stage, name="host_stage_q", reset_less=True)
        w_data_q = Signal.like(port.w_data, name="host_w_data_q", reset_less=True)
        m.d.sync += [offset_q.eq(port.offset), stage_q.eq(port.stage), w_data_q.eq(port.w_data)]
        for r, (word_bits, _) in self.memories.items():
            mine, access = self.access(r), memory_access(port, r)
            nch = chunks_of(word_bits)
            rd_q = Signal(name=f"host_rd_q_{r.name.lower()}")
            m.d.sync += [mine.wr_en.eq(access.wr_en), rd_q.eq(access.rd_en),
                         mine.rd_en.eq(rd_q)]
            m.d.comb += [
                mine.addr.eq(offset_q[chunk_bits_of(word_bits):]),
                mine.data.eq(Cat(stage_q[:DATA_WIDTH * (nch - 1)], w_data_q)[:word_bits]),
                mine.rd_en_next.eq(rd_q),
            ]
        self._reads(m)
        return m

    def _reads(self, m):
        port = self.port
        max_chunks = self.max_chunks
        rd_region = Signal(range(len(Region)))
        rd_chunk = Signal(max(1, ceil_log2(max_chunks)))
        rd_ok = Signal()
        with m.If(port.r_en):
            m.d.sync += [rd_region.eq(port.region), rd_ok.eq(0)]
            for r in self.memories:
                with m.If(port.region == r):
                    m.d.sync += [rd_chunk.eq(memory_access(port, r).chunk),
                                 rd_ok.eq(memory_access(port, r).rd_en)]
        rd_pending0, rd_pending1, rd_pending, rd_pending_late = (
            Signal(name=n) for n in ("rd_pending0", "rd_pending1", "rd_pending",
                                     "rd_pending_late"))
        m.d.sync += [rd_pending0.eq(port.r_en), rd_pending1.eq(rd_pending0),
                     rd_pending.eq(rd_pending1), rd_pending_late.eq(rd_pending)]
        # each region's bank registers load on a copy of rd_pending of their own (the block
        # RAMs are spread over the whole die); the bank is selected in two steps
        rd_words = {}
        for r, (word_bits, _) in self.memories.items():
            name = r.name.lower()
            raw = self._mems[r].registered(m, replica(m, rd_pending1, f"rd_pending_{name}"),
                                           f"rd_raw_{name}", group=self.bank_group)
            rd_words[r] = Signal(word_bits, name=f"rd_word_{name}", reset_less=True)
            with m.If(replica(m, rd_pending_late, f"rd_pending2_{name}")):
                m.d.sync += rd_words[r].eq(raw)
        # region, chunk, register value and "ok" travel beside the read to the output cycle
        # (the register value from the second stage on, when the host port has chosen it)
        rd_meta = [(rd_region, rd_chunk, None, rd_ok)]
        for n in range(2, READ_LATENCY - 1):
            region_n, chunk_n, reg_n, ok_n = rd_meta[-1]
            later = (Signal.like(rd_region, name=f"rd_region{n}"),
                     Signal.like(rd_chunk, name=f"rd_chunk{n}"),
                     Signal(DATA_WIDTH, name=f"rd_reg{n}", reset_less=True),
                     Signal(name=f"rd_ok{n}"))
            if reg_n is None:
                reg_n = port.reg_read
            m.d.sync += [dst.eq(src) for dst, src in zip(later, (region_n, chunk_n, reg_n, ok_n))]
            rd_meta.append(later)
        rd_sel = self._chunk_select(m, rd_words, rd_meta)
        rd_region_last, _, rd_reg_last, _ = rd_meta[-1]
        with m.Switch(rd_region_last):
            with m.Case(Region.REGS):
                m.d.sync += self.r_data.eq(rd_reg_last)
            for r in self.memories:
                with m.Case(r):
                    m.d.sync += self.r_data.eq(rd_sel[r])

    def _chunk_select(self, m, rd_words, rd_meta):
        """The chunk of each region's word, in two steps: each step reads the chunk number
        (and "ok") from copies of its own per region.  Zero when the read was refused."""
        group = self.read_group
        _, chunk_before_group, _, _ = rd_meta[-4]
        _, chunk_before_sel, _, ok_before_sel = rd_meta[-3]
        rd_sel = {}
        for r, (word_bits, _) in self.memories.items():
            name = r.name.lower()
            nch = chunks_of(word_bits)
            chunks = [rd_words[r][DATA_WIDTH * k:DATA_WIDTH * (k + 1)] for k in range(nch)]
            ngroups = (nch + group - 1) // group
            gbits = ceil_log2(min(nch, group))
            # copies of the chunk number only where a step selects (a one-chunk word needs
            # none, a one-group word none in the second step)
            chunk_g = replica(m, chunk_before_group, f"rd_chunk_group_{name}") if gbits else None
            rd_group = [Signal(DATA_WIDTH, name=f"rd_group_{name}{k}", reset_less=True)
                        for k in range(ngroups)]
            for k, reg in enumerate(rd_group):
                members = chunks[group * k:group * (k + 1)]
                if len(members) == 1:
                    m.d.sync += reg.eq(members[0])
                else:
                    members += [Const(0, DATA_WIDTH)] * ((1 << gbits) - len(members))
                    m.d.sync += reg.eq(Cat(*members).word_select(chunk_g[:gbits], DATA_WIDTH))
            ok_s = replica(m, ok_before_sel, f"rd_ok_sel_{name}")
            rd_sel[r] = Signal(DATA_WIDTH, name=f"rd_sel_{name}", reset_less=True)
            if ngroups == 1:
                chosen = rd_group[0]
            else:
                chunk_s = replica(m, chunk_before_sel, f"rd_chunk_sel_{name}")
                chosen = Cat(*rd_group, Const(0, DATA_WIDTH * ((1 << ceil_log2(ngroups))
                                                               - ngroups)))
                chosen = chosen.word_select(chunk_s[gbits:gbits + ceil_log2(ngroups)],
                                            DATA_WIDTH)
            m.d.sync += rd_sel[r].eq(Mux(ok_s, chosen, 0))
        return rd_sel
