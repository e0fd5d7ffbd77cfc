"""A TileEngine with operand memories of its own, for the engine's tests: the engine reads
memories its parent owns (hw/array/tile_engine.py); this parent gives them write ports for the
bench and read ports of ``read_latency`` cycles like the Trainer's (the block RAM's output
registered ``read_latency - 1`` more times on the port's enable, a register of ``en_next``;
with latency 4 or 5 one of those stages is an address register in front of the RAM)."""

from __future__ import annotations

from amaranth import Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.array.tile_engine import TileEngine

__all__ = ["EngineWithMemories"]


def _write_port_signature(addr_width, word):
    return wiring.Signature({"addr": Out(unsigned(addr_width)), "data": Out(word), "en": Out(1)})


class EngineWithMemories(wiring.Component):
    """``TileEngine(**cfg, read_latency=read_latency, mac_options=mac_options)`` (``.engine``)
    with memories A and B (``a_depth``, ``b_depth`` words) and their write ports ``a_wr``,
    ``b_wr``; the engine's other ports are this component's."""

    def __init__(self, cfg: dict, *, read_latency: int = 1, mac_options=None):
        self.cfg = dict(cfg)
        self.engine = e = TileEngine(**cfg, read_latency=read_latency, mac_options=mac_options)
        self.read_latency = read_latency
        self.instr_layout, self.result_layout = e.instr_layout, e.result_layout
        self.mac, self.fetch_latency, self.fixed_cycles = e.mac, e.fetch_latency, e.fixed_cycles
        members = {name: member for name, member in e.signature.members.items()
                   if name not in ("a_rd", "b_rd")}
        super().__init__({
            **members,
            "a_wr": In(_write_port_signature(e.a_addr_width, e.a_word)),
            "b_wr": In(_write_port_signature(e.b_addr_width, e.b_word)),
        })

    def instruction_cycles(self, tiles, k_len):
        return self.engine.instruction_cycles(tiles, k_len)

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = e = self.engine
        wiring.connect(m, wiring.flipped(self.instr), e.instr)
        wiring.connect(m, e.results, wiring.flipped(self.results))
        m.d.comb += [getattr(self, name).eq(getattr(e, name))
                     for name in ("busy", "done", "overflow", "tile_lost", "cycles")]
        for side, port, depth, shape, wr in (
                ("a", e.a_rd, self.cfg["a_depth"], e.a_word, self.a_wr),
                ("b", e.b_rd, self.cfg["b_depth"], e.b_word, self.b_wr)):
            mem = Memory(shape=shape, depth=depth, init=[])
            m.submodules[f"mem_{side}"] = mem
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(wr.addr), wp.data.eq(wr.data), wp.en.eq(wr.en)]
            rd = mem.read_port(transparent_for=())
            data_out = rd.data
            # the stages load on a register of en_next (as the Trainer's copies do): it must
            # equal en in every cycle, including the first after reset
            en_copy = Signal(name=f"{side}_en_copy", init=1)
            m.d.sync += en_copy.eq(port.en_next)
            m.d.comb += rd.en.eq(port.en)
            if self.read_latency >= 4:
                addr_q = Signal.like(port.addr, name=f"{side}_addr_q")
                with m.If(en_copy):
                    m.d.sync += addr_q.eq(port.addr)
                m.d.comb += rd.addr.eq(addr_q)
            else:
                m.d.comb += rd.addr.eq(port.addr)
            for stage in range(self.read_latency - 1 - (self.read_latency >= 4)):
                q = Signal(shape, name=f"{side}_q{stage}")
                with m.If(en_copy):
                    m.d.sync += q.eq(data_out)
                data_out = q
            m.d.comb += port.data.eq(data_out)
        return m
