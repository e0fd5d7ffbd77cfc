"""The engine's operand reads: A from ACT, B from WGT or ERR, through five register stages.

Read latency 5 (``TileEngine(read_latency=5)``), every stage advancing with the engine's
port enable: the address is registered in front of the block RAM (the memory's own
register), the block reads, its output is registered as it leaves the RAM (the shared bank
registers, beside the blocks), the bank is selected in two steps, within groups of
``bank_group`` banks into registers and among the groups into the operand registers, and only
then is the B source selected.  Each group register and operand register loads on a copy of
the port's enable of its own (hw/replica.py): they are spread over the die beside their banks.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.contract import ADDRESS_WIDTH, Region
from hw.replica import replica, replicas

__all__ = ["OperandFetch", "memory_read_signature", "READ_LATENCY"]

#: the engine's read latency through these stages
READ_LATENCY = 5


def memory_read_signature(addr_width: int = ADDRESS_WIDTH) -> wiring.Signature:
    """A reader's request to a memory's registered read port (hw/memory/banked_memory.py):
    the address register loads ``addr`` on ``load``; ``en_next`` is the next value of the
    registered read enable."""
    return wiring.Signature({"addr": Out(addr_width), "load": Out(1), "en_next": Out(1)})


class OperandFetch(wiring.Component):
    """Parameters: ``memories`` -- ``{Region: BankedMemory}`` (ACT, WGT, ERR: their words are
    registered here); ``engine`` -- the TileEngine (its port layouts); ``bank_group``.

    Ports
    -----
    a_rd, b_rd : In(read_port_signature) -- the engine's read ports
    b_src : In(1) -- B from ERR (1) or WGT (0)
    sgd : In(1) -- the instruction is an SGD (WGT's port is the front's then)
    act, wgt, err : Out(memory_read_signature) -- the reads of each memory
    """

    def __init__(self, memories: dict, engine, *, bank_group: int):
        self._mems = memories
        self.bank_group = bank_group
        a_rd = engine.signature.members["a_rd"].signature
        b_rd = engine.signature.members["b_rd"].signature
        self._a_word, self._b_word = engine.a_word, engine.b_word
        super().__init__({
            "a_rd": In(a_rd), "b_rd": In(b_rd), "b_src": In(1), "sgd": In(1),
            "act": Out(memory_read_signature()), "wgt": Out(memory_read_signature()),
            "err": Out(memory_read_signature()),
        })

    def elaborate(self, platform):
        m = Module()
        mems = self._mems
        a_rd, b_rd = self.a_rd, self.b_rd

        def reads(region, port, request, used):
            # ``used``: the instruction takes its operand from this memory (WGT and ERR share
            # the engine's B port; the other one reads nothing, rather than words at the
            # operand's addresses that the writer may be writing).  The read enable's next
            # value is 0 while idle: no beat is issued.
            name = region.name.lower()
            beat = Signal(name=f"{name}_rd_beat")           # the address register's valid
            beat_next = Signal(name=f"{name}_rd_beat_next")
            m.d.comb += beat_next.eq(Mux(port.en, port.valid & used, beat))
            m.d.sync += beat.eq(beat_next)
            m.d.comb += [request.addr.eq(port.addr), request.load.eq(port.en),
                         request.en_next.eq(port.en_next & beat_next)]

        reads(Region.ACT, a_rd, self.act, 1)
        reads(Region.WGT, b_rd, self.wgt, ~self.b_src & ~self.sgd)
        reads(Region.ERR, b_rd, self.err, self.b_src)

        def operand(region, port, name):
            # the bank registers are the memory's shared ones; each group register (a copy
            # of the enable per group) and the operand register load on copies of the port's
            # enable.  The enable is 1 after reset (the engine's stages are empty), and so are
            # its copies.
            group_en = replicas(m, port.en_next, mems[region].groups(self.bank_group),
                                f"{name}_group_en", init=1)
            selected = mems[region].registered(m, port.en, name, group=self.bank_group,
                                               group_en=group_en)
            q = Signal(mems[region].shape, name=f"{name[:3]}_q", reset_less=True)
            with m.If(replica(m, port.en_next, f"{name[:3]}_q_en", init=1)):
                m.d.sync += q.eq(selected)
            return q

        act_q = operand(Region.ACT, a_rd, "act_p")
        wgt_q = operand(Region.WGT, b_rd, "wgt_p")
        err_q = operand(Region.ERR, b_rd, "err_p")
        for j in range(self._a_word.length):
            m.d.comb += a_rd.data[j].eq(act_q[j])
        for j in range(self._b_word.length):
            m.d.comb += b_rd.data[j].eq(Mux(self.b_src, err_q[j], wgt_q[j]))
        return m
