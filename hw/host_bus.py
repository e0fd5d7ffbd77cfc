"""The host bus: how the host link (or the simulator) reads and writes a core's registers
and memories, 32 bits a word, at the addresses of the contract's memory map
(:mod:`hw.contract.memory_map`)."""

from __future__ import annotations

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.contract.link import WORD_BYTES

__all__ = ["BusSignature", "DATA_WIDTH"]

#: bits of a bus word
DATA_WIDTH = 8 * WORD_BYTES


class BusSignature(wiring.Signature):
    """The link's bus, seen from the master (the link).  32-bit data words.

    Members
    -------
    addr : Out(addr_width)   word address; meaningful when ``w_en`` or ``r_en`` is 1
    w_data : Out(32)         data to write
    w_en : Out(1)            write ``w_data`` to ``addr`` at this clock edge
    r_en : Out(1)            read ``addr``: the target shows the word on ``r_data``
                             during the cycle ``read_latency`` cycles later (see below);
                             ``r_data`` is ignored otherwise
    r_data : In(32)          the word read

    ``read_latency`` (int >= 1, default 1) is the cycle after the one with ``r_en`` high
    in which ``r_data`` shows the word: 1 = the *next* cycle (like a synchronous block
    RAM), 2 = the cycle after that (a target that registers its read data, e.g. for
    timing), and so on.  The master samples ``r_data`` in exactly that cycle: the target
    need not keep it steady before or after.  Reads may be pipelined (``r_en`` high in
    consecutive cycles); each word comes ``read_latency`` cycles after its ``r_en``.
    Signatures with different ``read_latency`` are unequal; note that
    ``wiring.connect`` (Amaranth 0.5) compares members, not signatures, so code that
    connects a master to a target should check ``master.signature ==
    target.signature.flip()`` itself (:class:`hw.link.linked.LinkedCore` derives the link's
    latency from the core's).

    ``w_en`` and ``r_en`` are never high together.  There is no wait state: a
    slow target must buffer.  A target should answer unmapped reads with 0.
    """

    def __init__(self, addr_width: int, read_latency: int = 1):
        if not 1 <= addr_width <= 32:
            raise ValueError("addr_width must be in 1..32")
        if isinstance(read_latency, bool) or int(read_latency) != read_latency or read_latency < 1:
            raise ValueError("read_latency must be an integer >= 1")
        self.addr_width = addr_width
        self.read_latency = int(read_latency)
        super().__init__({
            "addr": Out(addr_width),
            "w_data": Out(DATA_WIDTH),
            "w_en": Out(1),
            "r_en": Out(1),
            "r_data": In(DATA_WIDTH),
        })

    def __eq__(self, other):
        return (isinstance(other, BusSignature) and other.addr_width == self.addr_width
                and other.read_latency == self.read_latency)

    def __repr__(self):
        if self.read_latency == 1:
            return f"BusSignature({self.addr_width})"
        return f"BusSignature({self.addr_width}, read_latency={self.read_latency})"
