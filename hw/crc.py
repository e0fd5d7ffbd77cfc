"""CRC-16, one byte per clock cycle, for the host link's frames.

The default is CRC-16/CCITT-FALSE: polynomial ``x^16 + x^12 + x^5 + 1``
(0x1021), initial value 0xFFFF, bytes fed most significant bit first, no
reflection of the result and no final XOR.  Its check value (the CRC of the
ASCII bytes ``123456789``) is 0x29B1.  Because nothing is reflected or
XOR-ed at the end, a message followed by its own CRC sent high byte first
leaves the register at zero: the receiver checks a frame by running the CRC
over everything, CRC bytes included, and testing for zero.

The byte-wide next-state function is the bit-serial shift register unrolled
eight times at elaboration time; each of the 16 next-state bits comes out as an
XOR of a few state and data bits (at most 8 inputs for 0x1021), about 30 LUT4
on an iCE40 plus the 16 flip-flops.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Crc16", "crc16_reference", "CCITT_POLY", "CCITT_INIT"]

CCITT_POLY = 0x1021
CCITT_INIT = 0xFFFF


def crc16_reference(data, poly: int = CCITT_POLY, init: int = CCITT_INIT) -> int:
    """Bit-serial software model of :class:`Crc16` (slow, obviously right)."""
    crc = init
    for byte in data:
        for bit in range(7, -1, -1):
            feedback = ((crc >> 15) & 1) ^ ((byte >> bit) & 1)
            crc = (crc << 1) & 0xFFFF
            if feedback:
                crc ^= poly
    return crc


def _byte_update_terms(poly: int):
    """For each next-state bit, the sets of state bits and data bits XOR-ed into it.

    The symbolic CRC register holds, per bit, a pair (state-bit set, data-bit set);
    XOR of two terms is the symmetric difference of the sets.
    """
    reg = [(frozenset([i]), frozenset()) for i in range(16)]
    for bit in range(7, -1, -1):
        top_s, top_d = reg[15]
        feedback = (top_s, top_d ^ frozenset([bit]))
        shifted = [(frozenset(), frozenset())] + reg[:15]
        reg = [(s ^ feedback[0], d ^ feedback[1]) if (poly >> i) & 1 else (s, d)
               for i, (s, d) in enumerate(shifted)]
    return reg


class Crc16(wiring.Component):
    """Running CRC-16 over a byte stream.

    Parameters
    ----------
    poly : int
        Generator polynomial without the x^16 term (default 0x1021, CCITT).
    init : int
        Value loaded by ``clear`` and at reset (default 0xFFFF).

    Ports
    -----
    clear : In(1)   load ``init`` (takes priority over ``en``)
    en : In(1)      fold ``data`` into the CRC at this clock edge
    data : In(8)    the byte, most significant bit first in CRC order
    crc : Out(16)   the CRC of the bytes folded in since the last ``clear``
                    (registered: it includes a byte the cycle after its ``en``)
    zero : Out(1)   ``crc == 0``: a frame followed by its CRC (high byte first)
                    checked good
    """

    def __init__(self, poly: int = CCITT_POLY, init: int = CCITT_INIT):
        if not 0 <= poly <= 0xFFFF or not poly & 1:
            raise ValueError("poly must be a 16-bit polynomial with its x^0 term set")
        self.poly = poly
        self.init = init & 0xFFFF
        super().__init__({
            "clear": In(1),
            "en": In(1),
            "data": In(8),
            "crc": Out(16),
            "zero": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        state = Signal(16, init=self.init)
        terms = _byte_update_terms(self.poly)
        nxt = []
        for s_bits, d_bits in terms:
            value = 0
            for i in sorted(s_bits):
                value = value ^ state[i]
            for i in sorted(d_bits):
                value = value ^ self.data[i]
            nxt.append(value)
        with m.If(self.clear):
            m.d.sync += state.eq(self.init)
        with m.Elif(self.en):
            m.d.sync += state.eq(Cat(*nxt))
        m.d.comb += [self.crc.eq(state), self.zero.eq(state == 0)]
        return m
