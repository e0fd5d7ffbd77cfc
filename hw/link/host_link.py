"""Host link: framed, CRC-protected commands from a byte stream to a memory-mapped bus.

:class:`HostLink` sits between the UART (:mod:`hw.link.uart`) and the design's
register/memory bus.  The host loads memories and registers with WRITE bursts, reads results
with READ bursts and polls with PING; the frames are the contract's (:mod:`hw.contract.link`),
``nitrod/link.py`` is the host side.  The CRC is ``amaranth.lib.crc``'s CRC-16/CCITT-FALSE
processor, one byte a cycle.

Behaviour
---------
* Bytes are skipped until a sync byte; a sync byte starts a frame whatever
  came before, so garbage between frames is harmless.
* A WRITE's payload is collected in a buffer (a ``lib.memory.Memory`` of
  ``max_burst`` words) and committed to the bus only after the CRC and the
  other checks passed.  A request answered with ERROR changes nothing on the
  bus.  A WRITE whose COUNT exceeds ``max_burst`` is still received to its end
  (nothing is buffered) so that its CRC is checked, then answered with ERROR.
* Inter-byte timeout: inside a frame, ``timeout`` cycles without a byte end
  the frame; it is answered with ERROR ``ERR_TIMEOUT`` and the parser looks for a sync
  byte again.  The link therefore never stays stuck in a frame.
* Retries: the link remembers the last request it executed, if it was a WRITE (its SEQ and
  the two CRC bytes); a WRITE with the same SEQ and CRC is answered with the same ACK and
  not committed again.  A READ or PING executed forgets it; an ERROR answer does not.  Every
  response carries the SEQ register (the last SEQ byte received).
* Every request gets exactly one response, in order.  While the link answers (and
  commits a WRITE or reads a burst) ``rx.ready`` is low; the UART receiver's FIFO in front
  (hw/link/uart.py, sized by LinkedCore) holds what arrives meanwhile, so a host may send
  WRITE frames back to back (protocol 3's groups); it waits for the response to a READ or
  PING before sending more.

Timing: the checks take 2 cycles after the last CRC byte; a WRITE commit
takes 2 cycles per word (one to latch the buffered word into the register that
drives ``bus.w_data``, one with ``w_en`` high); a READ issues one bus read per
word, latches ``bus.r_data`` ``read_latency`` cycles later (1 by default; see
:class:`BusSignature`) and sends its 4 bytes before the next read.  ``idle`` is 1
only while looking for a sync byte.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import C, Cat, Module, Signal, signed
from amaranth.utils import bits_for
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from amaranth.lib.crc.catalog import CRC16_CCITT_FALSE

from hw.host_bus import DATA_WIDTH, BusSignature
from hw.contract.link import (CMD_PING, CMD_READ, CMD_WRITE, CRC_INIT, CRC_POLY, ERR_ADDRESS,
                              ERR_COMMAND, ERR_CRC, ERR_LENGTH, ERR_TIMEOUT, PING_WORDS,
                              PROTOCOL_VERSION, REQ_CMD, REQ_COUNT, REQ_SEQ,
                              REQUEST_HEADER_BYTES, RESPONSE_HEADER_BYTES, RSP_ACK, RSP_COUNT,
                              RSP_DATA, RSP_ERROR, RSP_INFO, RSP_KIND, RSP_SEQ, SYNC)

__all__ = ["HostLink"]

#: the link's CRC, the contract's CRC-16/CCITT-FALSE, one byte a cycle
LINK_CRC = CRC16_CCITT_FALSE(data_width=8)
assert (LINK_CRC.algorithm.polynomial, LINK_CRC.algorithm.initial_crc) == (CRC_POLY, CRC_INIT)


class _SplitWrite:
    """One write port (addr, data, en) over the 16-bit halves of the WRITE buffer."""

    def __init__(self, m, ports):
        self.addr = Signal.like(ports[0].addr, name="buf_w_addr")
        self.data = Signal(DATA_WIDTH, name="buf_w_data")
        self.en = Signal(name="buf_w_en")
        half = DATA_WIDTH // 2
        for i, port in enumerate(ports):
            m.d.comb += [port.addr.eq(self.addr), port.data.eq(self.data[i * half:(i + 1) * half]),
                         port.en.eq(self.en)]


class _SplitRead:
    """One synchronous read port (addr -> data next cycle) over the halves."""

    def __init__(self, m, ports):
        self.addr = Signal.like(ports[0].addr, name="buf_r_addr")
        self.data = Signal(DATA_WIDTH, name="buf_r_data")
        for port in ports:
            m.d.comb += port.addr.eq(self.addr)
        m.d.comb += self.data.eq(Cat(*(port.data for port in ports)))


class HostLink(wiring.Component):
    """Frame parser and bus master for the host link (format in the module docstring).

    Parameters
    ----------
    addr_width : int
        Bus address width in words (1..32).  Bursts must stay below ``2**addr_width``.
    max_burst : int
        Largest COUNT of a READ or WRITE (1..255); also the depth of the
        WRITE buffer (``max_burst`` x 32 bits, stored as two 16-bit halves; on an
        iCE40 any depth up to 256 takes two 4-kbit EBRs side by side; on an ECP5
        a depth up to 64 goes to distributed RAM).
    timeout : int
        Inter-byte timeout in clock cycles (>= 2).  Choose a few byte times:
        at 12 MHz and 115200 baud a byte takes 1042 cycles; 12000 cycles (1 ms)
        leaves room for a host that writes a frame in several pieces.
    read_latency : int
        The bus target's read latency (>= 1, see :class:`BusSignature`): a READ samples
        ``bus.r_data`` that many cycles after the cycle with ``r_en`` high (1 = the next
        cycle).  Each extra cycle adds one wait cycle per READ word.

    Ports
    -----
    rx : In(stream.Signature(8))      request bytes (from :class:`hw.link.uart.UartRx`)
    tx : Out(stream.Signature(8))     response bytes (to :class:`hw.link.uart.UartTx`)
    bus : Out(BusSignature(addr_width, read_latency))
    status : In(32)                   returned by PING (e.g. the accelerator's busy/done flags)
    idle : Out(1)                     looking for a sync byte (not inside a frame, not answering)
    error_count : Out(16)             ERROR responses sent since reset (wrapping)
    """

    def __init__(self, *, addr_width: int = 16, max_burst: int = 64, timeout: int = 4096,
                 read_latency: int = 1):
        if not 1 <= max_burst <= 255:
            raise ValueError("max_burst must be in 1..255 (the COUNT field is one byte)")
        if timeout < 2:
            raise ValueError("timeout must be >= 2 cycles")
        self.addr_width = int(addr_width)
        self.max_burst = int(max_burst)
        self.timeout = int(timeout)
        bus_signature = BusSignature(self.addr_width, read_latency)
        self.read_latency = bus_signature.read_latency
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "bus": Out(bus_signature),
            "status": In(32),
            "idle": Out(1),
            "error_count": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        r = self._registers(m)
        self._datapath(m, r)
        with m.FSM(name="link"):
            self._receive_request(m, r)
            self._decide(m, r)
            self._commit_write(m, r)
            self._send_response(m, r)
        return m

    def _registers(self, m) -> SimpleNamespace:
        """The CRC units, the WRITE buffer's ports and the link's registers."""
        r = SimpleNamespace()
        m.submodules.rx_crc = r.rx_crc = LINK_CRC.create()
        m.submodules.tx_crc = r.tx_crc = LINK_CRC.create()
        # The WRITE buffer, as two 16-bit halves side by side (one address): on an
        # iCE40 each half is one EBR (as the 32-bit memory was two), on an ECP5 a
        # 16-bit half of up to 64 words costs Yosys less in distributed RAM than in
        # a DP16KD, whose output (no output register is ever inferred) is slow.
        halves = [Memory(shape=DATA_WIDTH // 2, depth=self.max_burst, init=[]) for _ in range(2)]
        m.submodules.buffer_lo, m.submodules.buffer_hi = halves
        r.buf_w = _SplitWrite(m, [half.write_port() for half in halves])
        r.buf_r = _SplitRead(m, [half.read_port() for half in halves])

        # Request fields.
        r.cmd = Signal(8)
        r.seq = Signal(8)                    # the SEQ register, echoed in every response
        r.req_crc = Signal(16)               # the request's CRC bytes
        r.count = Signal(8)
        r.addr = Signal(32)
        r.hdr_idx = Signal(range(REQUEST_HEADER_BYTES))
        r.byte_idx = Signal(2)               # byte within a word (payload in and out)
        r.word_idx = Signal(8)               # word within a burst
        r.word = Signal(DATA_WIDTH)          # payload assembly / response word
        r.crc_idx = Signal()
        # cycles left before the inter-byte timeout, minus one: it counts down in a frame
        # and its sign bit says the timeout has come, so the FSM tests one flip-flop (an
        # equality compare of the count there was a long path on the boards)
        r.idle_reload = self.timeout - 2
        r.idle_left = Signal(signed(bits_for(r.idle_reload) + 1), init=r.idle_reload)
        r.cur_addr = Signal(self.addr_width)
        r.w_data = Signal(DATA_WIDTH)        # the word being committed (registered buffer output)
        r.commit_last = Signal()             # the word in ``w_data`` is the burst's last
        r.count_last = Signal(8)             # COUNT - 1: index of a burst's last word

        # The checks, registered in CHECK and acted on in DECIDE.
        r.end = Signal(33)                   # ADDR + COUNT
        r.crc_ok = Signal()
        r.count_ok = Signal()
        r.addr_ok = Signal()
        # The last request executed, if a WRITE: a WRITE repeating it is not committed again.
        r.last_valid = Signal()
        r.last_seq = Signal(8)
        r.last_crc = Signal(16)
        r.repeat = Signal()                  # registered in CHECK: this request repeats it

        # Response fields.
        r.rsp_kind = Signal(8)
        r.rsp_info = Signal(8)
        r.rsp_count = Signal(8)
        r.rsp_last = Signal(8)               # rsp_count - 1
        r.rsp_idx = Signal(range(RESPONSE_HEADER_BYTES + 1))
        r.accept = Signal()
        return r

    def _datapath(self, m, r):
        """What holds in every state: the CRC units' inputs, the bus address and write data,
        the WRITE buffer's addresses and data."""
        m.d.comb += [
            r.accept.eq(self.rx.valid & self.rx.ready),
            r.rx_crc.data.eq(self.rx.payload),
            r.tx_crc.data.eq(self.tx.payload),
            self.bus.addr.eq(r.cur_addr),
            r.buf_r.addr.eq(r.word_idx),
            self.bus.w_data.eq(r.w_data),
            # the WRITE buffer's address and data whatever the state (only its enable is
            # PAYLOAD's): no state decode in front of the distributed RAM's write address,
            # which was the 4 x 4 board build's critical path
            r.buf_w.addr.eq(r.word_idx),
            r.buf_w.data.eq(Cat(r.word[8:], self.rx.payload)),
        ]
        # ``w_data`` loads every cycle (no enable: nothing between the buffer's
        # output and the register).  In COMMIT_WRITE it holds the word read at the
        # end of the cycle before COMMIT_LATCH, as word_idx only moves in COMMIT_LATCH.
        # ``end`` is registered: ADDR and COUNT stay unchanged during the two CRC bytes.
        m.d.sync += [r.w_data.eq(r.buf_r.data), r.end.eq(r.addr + r.count)]

    def _fail(self, m, r, code):
        m.d.sync += [r.rsp_kind.eq(RSP_ERROR), r.rsp_info.eq(code), r.rsp_count.eq(0),
                     r.rsp_last.eq(0), r.rsp_idx.eq(0),
                     self.error_count.eq(self.error_count + 1)]
        m.next = "RESP_HEAD"

    def _respond(self, m, r, kind, info, n, last):
        m.d.sync += [r.rsp_kind.eq(kind), r.rsp_info.eq(info), r.rsp_count.eq(n),
                     r.rsp_last.eq(last), r.rsp_idx.eq(0)]
        m.next = "RESP_HEAD"

    def _count_timeout(self, m, r):
        with m.If(r.accept):
            m.d.sync += r.idle_left.eq(r.idle_reload)
        with m.Elif(r.idle_left[-1]):
            m.d.sync += r.idle_left.eq(r.idle_reload)
            self._fail(m, r, ERR_TIMEOUT)
        with m.Else():
            m.d.sync += r.idle_left.eq(r.idle_left - 1)

    def _receive_request(self, m, r):
        """HUNT, HEADER, PAYLOAD (into the WRITE buffer) and CRC."""
        with m.State("HUNT"):
            m.d.comb += [self.rx.ready.eq(1), self.idle.eq(1), r.rx_crc.start.eq(1)]
            m.d.sync += [r.hdr_idx.eq(0), r.idle_left.eq(r.idle_reload)]
            with m.If(r.accept & (self.rx.payload == SYNC)):
                m.next = "HEADER"

        with m.State("HEADER"):
            m.d.comb += [self.rx.ready.eq(1), r.rx_crc.valid.eq(r.accept)]
            with m.If(r.accept):
                m.d.sync += r.hdr_idx.eq(r.hdr_idx + 1)
                with m.Switch(r.hdr_idx):
                    with m.Case(REQ_CMD):
                        m.d.sync += r.cmd.eq(self.rx.payload)
                    with m.Case(REQ_SEQ):
                        m.d.sync += r.seq.eq(self.rx.payload)
                    with m.Case(REQ_COUNT):
                        m.d.sync += [r.count.eq(self.rx.payload),
                                     r.count_last.eq(self.rx.payload - 1)]
                    with m.Default():
                        m.d.sync += r.addr.eq(Cat(r.addr[8:], self.rx.payload))
                with m.If(r.hdr_idx == REQUEST_HEADER_BYTES - 1):
                    m.d.sync += [r.word_idx.eq(0), r.byte_idx.eq(0), r.crc_idx.eq(0)]
                    with m.If((r.cmd == CMD_WRITE) & (r.count != 0)):
                        m.next = "PAYLOAD"
                    with m.Else():
                        m.next = "CRC"
            self._count_timeout(m, r)

        with m.State("PAYLOAD"):
            m.d.comb += [self.rx.ready.eq(1), r.rx_crc.valid.eq(r.accept)]
            m.d.comb += r.buf_w.en.eq(r.accept & (r.byte_idx == 3)
                                      & (r.word_idx < self.max_burst))
            with m.If(r.accept):
                m.d.sync += [r.word.eq(Cat(r.word[8:], self.rx.payload)),
                             r.byte_idx.eq(r.byte_idx + 1)]
                with m.If(r.byte_idx == 3):
                    m.d.sync += r.word_idx.eq(r.word_idx + 1)
                    with m.If(r.word_idx == r.count_last):
                        m.next = "CRC"
            self._count_timeout(m, r)

        with m.State("CRC"):
            m.d.comb += [self.rx.ready.eq(1), r.rx_crc.valid.eq(r.accept)]
            with m.If(r.accept):
                m.d.sync += [r.crc_idx.eq(1), r.req_crc.eq(Cat(self.rx.payload, r.req_crc[:8]))]
                with m.If(r.crc_idx):
                    m.next = "CHECK"
            self._count_timeout(m, r)

    def _decide(self, m, r):
        """CHECK registers the checks, DECIDE answers or goes on to commit a WRITE."""
        aw = self.addr_width
        end = r.end
        end_in_range = (end[aw + 1:] == 0) & (~end[aw] | (end[:aw] == 0))   # end <= 2**aw
        with m.State("CHECK"):
            m.d.sync += [
                r.crc_ok.eq(r.rx_crc.match_detected),
                r.count_ok.eq((r.count != 0) & (r.count <= self.max_burst)),
                r.addr_ok.eq(end_in_range),
                r.repeat.eq(r.last_valid & (r.seq == r.last_seq) & (r.req_crc == r.last_crc)),
                r.word_idx.eq(0), r.byte_idx.eq(0), r.cur_addr.eq(r.addr[:aw]),
            ]
            m.next = "DECIDE"
        with m.State("DECIDE"):
            with m.If(~r.crc_ok):
                self._fail(m, r, ERR_CRC)
            with m.Elif(r.cmd == CMD_PING):
                m.d.sync += r.last_valid.eq(0)
                self._respond(m, r, RSP_DATA, CMD_PING, PING_WORDS, PING_WORDS - 1)
            with m.Elif((r.cmd != CMD_WRITE) & (r.cmd != CMD_READ)):
                self._fail(m, r, ERR_COMMAND)
            with m.Elif(~r.count_ok):
                self._fail(m, r, ERR_LENGTH)
            with m.Elif(~r.addr_ok):
                self._fail(m, r, ERR_ADDRESS)
            with m.Elif((r.cmd == CMD_WRITE) & r.repeat):    # a retry: answered, not written
                self._respond(m, r, RSP_ACK, CMD_WRITE, r.count, 0)
            with m.Elif(r.cmd == CMD_WRITE):
                m.d.sync += [r.last_valid.eq(1), r.last_seq.eq(r.seq), r.last_crc.eq(r.req_crc)]
                m.next = "COMMIT_LATCH"
            with m.Else():
                m.d.sync += r.last_valid.eq(0)
                self._respond(m, r, RSP_DATA, CMD_READ, r.count, r.count_last)

    def _commit_write(self, m, r):
        """The WRITE buffer to the bus, two cycles a word.

        The buffer's read port reads word ``word_idx`` at every clock edge, so buffer word 0
        (word_idx = 0 since CHECK) is on buf_r.data in the first COMMIT_LATCH cycle.  The
        buffer output goes through the ``w_data`` register (not straight to the bus port);
        word_idx steps in COMMIT_LATCH so that the next word is read at the end of
        COMMIT_WRITE."""
        with m.State("COMMIT_LATCH"):               # buf_r.data (word word_idx) -> w_data
            m.d.sync += [r.word_idx.eq(r.word_idx + 1),
                         r.commit_last.eq(r.word_idx == r.count_last)]
            m.next = "COMMIT_WRITE"
        with m.State("COMMIT_WRITE"):
            m.d.comb += self.bus.w_en.eq(1)
            m.d.sync += r.cur_addr.eq(r.cur_addr + 1)
            with m.If(r.commit_last):
                self._respond(m, r, RSP_ACK, CMD_WRITE, r.count, 0)
            with m.Else():
                m.next = "COMMIT_LATCH"

    def _send_response(self, m, r):
        """The response's header, its words (PING: the link word and ``status``; READ: bus
        reads) and its CRC."""
        link_word = Cat(C(PROTOCOL_VERSION, 8), C(self.max_burst, 8), self.error_count)
        with m.State("RESP_HEAD"):
            m.d.comb += self.tx.valid.eq(1)
            with m.Switch(r.rsp_idx):
                with m.Case(0):
                    m.d.comb += self.tx.payload.eq(SYNC)
                with m.Case(1 + RSP_KIND):
                    m.d.comb += self.tx.payload.eq(r.rsp_kind)
                with m.Case(1 + RSP_INFO):
                    m.d.comb += self.tx.payload.eq(r.rsp_info)
                with m.Case(1 + RSP_SEQ):
                    m.d.comb += self.tx.payload.eq(r.seq)
                with m.Case(1 + RSP_COUNT):
                    m.d.comb += self.tx.payload.eq(r.rsp_count)
            m.d.comb += [r.tx_crc.start.eq(r.rsp_idx == 0),
                         r.tx_crc.valid.eq(self.tx.ready & (r.rsp_idx != 0))]
            with m.If(self.tx.ready):
                m.d.sync += r.rsp_idx.eq(r.rsp_idx + 1)
                with m.If(r.rsp_idx == RESPONSE_HEADER_BYTES):
                    m.d.sync += [r.word_idx.eq(0), r.byte_idx.eq(0), r.crc_idx.eq(0)]
                    with m.If((r.rsp_kind == RSP_DATA) & (r.rsp_count != 0)):
                        m.next = "RESP_FETCH"
                    with m.Else():
                        m.next = "RESP_CRC"

        with m.State("RESP_FETCH"):
            with m.If(r.rsp_info == CMD_PING):
                m.d.sync += r.word.eq(self.status)
                with m.If(r.word_idx == 0):
                    m.d.sync += r.word.eq(link_word)
                m.next = "RESP_WORD"
            with m.Else():
                m.d.comb += self.bus.r_en.eq(1)
                m.next = "RESP_WAIT_1" if self.read_latency > 1 else "RESP_LATCH"
        # read_latency - 1 wait cycles (none for latency 1); cur_addr stays put.
        for i in range(1, self.read_latency):
            with m.State(f"RESP_WAIT_{i}"):
                m.next = f"RESP_WAIT_{i + 1}" if i + 1 < self.read_latency else "RESP_LATCH"
        with m.State("RESP_LATCH"):                 # the cycle read_latency after r_en
            m.d.sync += r.word.eq(self.bus.r_data)
            m.next = "RESP_WORD"

        with m.State("RESP_WORD"):
            m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(r.word[:8]),
                         r.tx_crc.valid.eq(self.tx.ready)]
            with m.If(self.tx.ready):
                m.d.sync += [r.word.eq(r.word >> 8), r.byte_idx.eq(r.byte_idx + 1)]
                with m.If(r.byte_idx == 3):
                    m.d.sync += [r.word_idx.eq(r.word_idx + 1), r.cur_addr.eq(r.cur_addr + 1)]
                    with m.If(r.word_idx == r.rsp_last):
                        m.next = "RESP_CRC"
                    with m.Else():
                        m.next = "RESP_FETCH"

        with m.State("RESP_CRC"):
            m.d.comb += self.tx.valid.eq(1)
            with m.If(r.crc_idx):
                m.d.comb += self.tx.payload.eq(r.tx_crc.crc[:8])
            with m.Else():
                m.d.comb += self.tx.payload.eq(r.tx_crc.crc[8:])
            with m.If(self.tx.ready):
                m.d.sync += r.crc_idx.eq(1)
                with m.If(r.crc_idx):
                    m.next = "HUNT"
