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
* Every request gets exactly one response.  While the link answers (and
  commits a WRITE or reads a burst) ``rx.ready`` is low: the protocol is half
  duplex, the host waits for the response before its next request.

Timing: the checks take 2 cycles after the last CRC byte; a WRITE commit
takes 2 cycles per word (one to latch the buffered word into the register that
drives ``bus.w_data``, one with ``w_en`` high); a READ issues one bus read per
word, latches ``bus.r_data`` ``read_latency`` cycles later (1 by default; see
:class:`BusSignature`) and sends its 4 bytes before the next read.  ``idle`` is 1
only while looking for a sync byte.
"""

from __future__ import annotations

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
        aw = self.addr_width

        m.submodules.rx_crc = rx_crc = LINK_CRC.create()
        m.submodules.tx_crc = tx_crc = LINK_CRC.create()
        # The WRITE buffer, as two 16-bit halves side by side (one address): on an
        # iCE40 each half is one EBR (as the 32-bit memory was two), on an ECP5 a
        # 16-bit half of up to 64 words costs Yosys less in distributed RAM than in
        # a DP16KD, whose output (no output register is ever inferred) is slow.
        halves = [Memory(shape=DATA_WIDTH // 2, depth=self.max_burst, init=[]) for _ in range(2)]
        m.submodules.buffer_lo, m.submodules.buffer_hi = halves
        buf_w_ports = [half.write_port() for half in halves]
        buf_r_ports = [half.read_port() for half in halves]
        buf_w = _SplitWrite(m, buf_w_ports)
        buf_r = _SplitRead(m, buf_r_ports)

        # Request fields.
        cmd = Signal(8)
        seq = Signal(8)                      # the SEQ register, echoed in every response
        req_crc = Signal(16)                 # the request's CRC bytes
        count = Signal(8)
        addr = Signal(32)
        hdr_idx = Signal(range(REQUEST_HEADER_BYTES))
        byte_idx = Signal(2)                 # byte within a word (payload in and out)
        word_idx = Signal(8)                 # word within a burst
        word = Signal(DATA_WIDTH)            # payload assembly / response word
        crc_idx = Signal()
        # cycles left before the inter-byte timeout, minus one: it counts down in a frame
        # and its sign bit says the timeout has come, so the FSM tests one flip-flop (an
        # equality compare of the count there was a long path on the boards)
        idle_reload = self.timeout - 2
        idle_left = Signal(signed(bits_for(idle_reload) + 1), init=idle_reload)
        cur_addr = Signal(aw)
        w_data = Signal(DATA_WIDTH)          # the word being committed (registered buffer output)
        commit_last = Signal()               # the word in ``w_data`` is the burst's last

        # The last request executed, if a WRITE: a WRITE repeating it is not committed again.
        last_valid = Signal()
        last_seq = Signal(8)
        last_crc = Signal(16)
        repeat = Signal()                    # registered in CHECK: this request repeats it

        # Response fields.
        rsp_kind = Signal(8)
        rsp_info = Signal(8)
        rsp_count = Signal(8)
        rsp_idx = Signal(range(RESPONSE_HEADER_BYTES + 1))

        accept = Signal()
        m.d.comb += accept.eq(self.rx.valid & self.rx.ready)
        m.d.comb += [
            rx_crc.data.eq(self.rx.payload),
            tx_crc.data.eq(self.tx.payload),
            self.bus.addr.eq(cur_addr),
            buf_r.addr.eq(word_idx),
            self.bus.w_data.eq(w_data),
            # the WRITE buffer's address and data whatever the state (only its enable is
            # PAYLOAD's): no state decode in front of the distributed RAM's write address,
            # which was the 4 x 4 board build's critical path
            buf_w.addr.eq(word_idx),
            buf_w.data.eq(Cat(word[8:], self.rx.payload)),
        ]

        # The checks are registered in CHECK and acted on in DECIDE.  ``end`` is
        # registered too: ADDR and COUNT stay unchanged during the two CRC bytes.
        end = Signal(33)
        # ``w_data`` loads every cycle (no enable: nothing between the buffer's
        # output and the register).  In COMMIT_WRITE it holds the word read at the
        # end of the cycle before COMMIT_LATCH, as word_idx only moves in COMMIT_LATCH.
        m.d.sync += w_data.eq(buf_r.data)
        m.d.sync += end.eq(addr + count)
        end_in_range = (end[aw + 1:] == 0) & (~end[aw] | (end[:aw] == 0))   # end <= 2**aw
        crc_ok = Signal()
        count_ok = Signal()
        addr_ok = Signal()
        count_last = Signal(8)               # COUNT - 1: index of a burst's last word
        rsp_last = Signal(8)                 # rsp_count - 1
        link_word = Cat(C(PROTOCOL_VERSION, 8), C(self.max_burst, 8), self.error_count)

        def fail(code):
            m.d.sync += [rsp_kind.eq(RSP_ERROR), rsp_info.eq(code), rsp_count.eq(0),
                         rsp_last.eq(0), rsp_idx.eq(0),
                         self.error_count.eq(self.error_count + 1)]
            m.next = "RESP_HEAD"

        def respond(kind, info, n, last):
            m.d.sync += [rsp_kind.eq(kind), rsp_info.eq(info), rsp_count.eq(n),
                         rsp_last.eq(last), rsp_idx.eq(0)]
            m.next = "RESP_HEAD"

        def count_timeout():
            with m.If(accept):
                m.d.sync += idle_left.eq(idle_reload)
            with m.Elif(idle_left[-1]):
                m.d.sync += idle_left.eq(idle_reload)
                fail(ERR_TIMEOUT)
            with m.Else():
                m.d.sync += idle_left.eq(idle_left - 1)

        with m.FSM(name="link"):
            # ---------------------------------------------------------------- request
            with m.State("HUNT"):
                m.d.comb += [self.rx.ready.eq(1), self.idle.eq(1), rx_crc.start.eq(1)]
                m.d.sync += [hdr_idx.eq(0), idle_left.eq(idle_reload)]
                with m.If(accept & (self.rx.payload == SYNC)):
                    m.next = "HEADER"

            with m.State("HEADER"):
                m.d.comb += [self.rx.ready.eq(1), rx_crc.valid.eq(accept)]
                with m.If(accept):
                    m.d.sync += hdr_idx.eq(hdr_idx + 1)
                    with m.Switch(hdr_idx):
                        with m.Case(REQ_CMD):
                            m.d.sync += cmd.eq(self.rx.payload)
                        with m.Case(REQ_SEQ):
                            m.d.sync += seq.eq(self.rx.payload)
                        with m.Case(REQ_COUNT):
                            m.d.sync += [count.eq(self.rx.payload),
                                         count_last.eq(self.rx.payload - 1)]
                        with m.Default():
                            m.d.sync += addr.eq(Cat(addr[8:], self.rx.payload))
                    with m.If(hdr_idx == REQUEST_HEADER_BYTES - 1):
                        m.d.sync += [word_idx.eq(0), byte_idx.eq(0), crc_idx.eq(0)]
                        with m.If((cmd == CMD_WRITE) & (count != 0)):
                            m.next = "PAYLOAD"
                        with m.Else():
                            m.next = "CRC"
                count_timeout()

            with m.State("PAYLOAD"):
                m.d.comb += [self.rx.ready.eq(1), rx_crc.valid.eq(accept)]
                m.d.comb += buf_w.en.eq(accept & (byte_idx == 3) & (word_idx < self.max_burst))
                with m.If(accept):
                    m.d.sync += [word.eq(Cat(word[8:], self.rx.payload)), byte_idx.eq(byte_idx + 1)]
                    with m.If(byte_idx == 3):
                        m.d.sync += word_idx.eq(word_idx + 1)
                        with m.If(word_idx == count_last):
                            m.next = "CRC"
                count_timeout()

            with m.State("CRC"):
                m.d.comb += [self.rx.ready.eq(1), rx_crc.valid.eq(accept)]
                with m.If(accept):
                    m.d.sync += [crc_idx.eq(1), req_crc.eq(Cat(self.rx.payload, req_crc[:8]))]
                    with m.If(crc_idx):
                        m.next = "CHECK"
                count_timeout()

            with m.State("CHECK"):
                m.d.sync += [
                    crc_ok.eq(rx_crc.match_detected),
                    count_ok.eq((count != 0) & (count <= self.max_burst)),
                    addr_ok.eq(end_in_range),
                    repeat.eq(last_valid & (seq == last_seq) & (req_crc == last_crc)),
                    word_idx.eq(0), byte_idx.eq(0), cur_addr.eq(addr[:aw]),
                ]
                m.next = "DECIDE"
            with m.State("DECIDE"):
                with m.If(~crc_ok):
                    fail(ERR_CRC)
                with m.Elif(cmd == CMD_PING):
                    m.d.sync += last_valid.eq(0)
                    respond(RSP_DATA, CMD_PING, PING_WORDS, PING_WORDS - 1)
                with m.Elif((cmd != CMD_WRITE) & (cmd != CMD_READ)):
                    fail(ERR_COMMAND)
                with m.Elif(~count_ok):
                    fail(ERR_LENGTH)
                with m.Elif(~addr_ok):
                    fail(ERR_ADDRESS)
                with m.Elif((cmd == CMD_WRITE) & repeat):      # a retry: answered, not written
                    respond(RSP_ACK, CMD_WRITE, count, 0)
                with m.Elif(cmd == CMD_WRITE):
                    m.d.sync += [last_valid.eq(1), last_seq.eq(seq), last_crc.eq(req_crc)]
                    m.next = "COMMIT_LATCH"
                with m.Else():
                    m.d.sync += last_valid.eq(0)
                    respond(RSP_DATA, CMD_READ, count, count_last)

            # ---------------------------------------------------------------- WRITE commit
            # The buffer's read port reads word ``word_idx`` at every clock edge, so
            # buffer word 0 (word_idx = 0 since CHECK) is on buf_r.data in the first
            # COMMIT_LATCH cycle.  The buffer output goes through the ``w_data``
            # register (not straight to the bus port); word_idx steps in
            # COMMIT_LATCH so that the next word is read at the end of COMMIT_WRITE.
            with m.State("COMMIT_LATCH"):           # buf_r.data (word word_idx) -> w_data
                m.d.sync += [word_idx.eq(word_idx + 1), commit_last.eq(word_idx == count_last)]
                m.next = "COMMIT_WRITE"
            with m.State("COMMIT_WRITE"):
                m.d.comb += self.bus.w_en.eq(1)
                m.d.sync += cur_addr.eq(cur_addr + 1)
                with m.If(commit_last):
                    respond(RSP_ACK, CMD_WRITE, count, 0)
                with m.Else():
                    m.next = "COMMIT_LATCH"

            # ---------------------------------------------------------------- response
            with m.State("RESP_HEAD"):
                m.d.comb += self.tx.valid.eq(1)
                with m.Switch(rsp_idx):
                    with m.Case(0):
                        m.d.comb += self.tx.payload.eq(SYNC)
                    with m.Case(1 + RSP_KIND):
                        m.d.comb += self.tx.payload.eq(rsp_kind)
                    with m.Case(1 + RSP_INFO):
                        m.d.comb += self.tx.payload.eq(rsp_info)
                    with m.Case(1 + RSP_SEQ):
                        m.d.comb += self.tx.payload.eq(seq)
                    with m.Case(1 + RSP_COUNT):
                        m.d.comb += self.tx.payload.eq(rsp_count)
                m.d.comb += [tx_crc.start.eq(rsp_idx == 0),
                             tx_crc.valid.eq(self.tx.ready & (rsp_idx != 0))]
                with m.If(self.tx.ready):
                    m.d.sync += rsp_idx.eq(rsp_idx + 1)
                    with m.If(rsp_idx == RESPONSE_HEADER_BYTES):
                        m.d.sync += [word_idx.eq(0), byte_idx.eq(0), crc_idx.eq(0)]
                        with m.If((rsp_kind == RSP_DATA) & (rsp_count != 0)):
                            m.next = "RESP_FETCH"
                        with m.Else():
                            m.next = "RESP_CRC"

            with m.State("RESP_FETCH"):
                with m.If(rsp_info == CMD_PING):
                    m.d.sync += word.eq(self.status)
                    with m.If(word_idx == 0):
                        m.d.sync += word.eq(link_word)
                    m.next = "RESP_WORD"
                with m.Else():
                    m.d.comb += self.bus.r_en.eq(1)
                    m.next = "RESP_WAIT_1" if self.read_latency > 1 else "RESP_LATCH"
            # read_latency - 1 wait cycles (none for latency 1); cur_addr stays put.
            for i in range(1, self.read_latency):
                with m.State(f"RESP_WAIT_{i}"):
                    m.next = f"RESP_WAIT_{i + 1}" if i + 1 < self.read_latency else "RESP_LATCH"
            with m.State("RESP_LATCH"):             # the cycle read_latency after r_en
                m.d.sync += word.eq(self.bus.r_data)
                m.next = "RESP_WORD"

            with m.State("RESP_WORD"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(word[:8]),
                             tx_crc.valid.eq(self.tx.ready)]
                with m.If(self.tx.ready):
                    m.d.sync += [word.eq(word >> 8), byte_idx.eq(byte_idx + 1)]
                    with m.If(byte_idx == 3):
                        m.d.sync += [word_idx.eq(word_idx + 1), cur_addr.eq(cur_addr + 1)]
                        with m.If(word_idx == rsp_last):
                            m.next = "RESP_CRC"
                        with m.Else():
                            m.next = "RESP_FETCH"

            with m.State("RESP_CRC"):
                m.d.comb += self.tx.valid.eq(1)
                with m.If(crc_idx):
                    m.d.comb += self.tx.payload.eq(tx_crc.crc[:8])
                with m.Else():
                    m.d.comb += self.tx.payload.eq(tx_crc.crc[8:])
                with m.If(self.tx.ready):
                    m.d.sync += crc_idx.eq(1)
                    with m.If(crc_idx):
                        m.next = "HUNT"
        return m
