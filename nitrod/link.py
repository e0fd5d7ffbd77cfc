"""Host side of the board link: frames, CRC checks and a blocking client.

This module talks to :class:`hw.link.host_link.HostLink` over any byte transport (the board's
USB serial port).  The frame format and its constants are the contract's
(:mod:`hw.contract.link`, pure Python), so a host with only Python (and pyserial, for a real
port) can drive a board.  A request cut short (no byte for the board's inter-byte timeout) is
answered with ``ERR_TIMEOUT`` when the timeout expires.  A request waits for the previous
one's response, except WRITE frames posted as a *group* (:meth:`LinkClient.post_words`,
protocol 3): they go back to back, and their ACKs are collected before the next request that
is not posted (hw/contract/link.py has the group's rules).

Every request carries a sequence number (SEQ) that its response echoes.  :class:`LinkClient`
gives each new request the next one and retries a request after a lost or corrupted frame with
the same bytes: the board answers a repeated WRITE without writing again (hw/contract/link.py),
so retries are safe whatever the WRITE does; a late response to an earlier request (its SEQ is
not the request's) is skipped.  A group's frames not acknowledged are sent again, from the first
of them on, in order.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import struct
import time
from typing import Iterable, Iterator, Protocol, Sequence

__all__ = [
    "response_payload_words", "encode_request", "encode_response", "Response",
    "ResponseDecoder", "LinkError", "LinkErrorResponse", "LinkCrcError", "LinkTimeout",
    "LinkProtocolError", "LinkInfo", "LinkClient", "open_serial", "request_seq", "burst_spans",
]

from hw.contract.link import (BURST_ALIGN, CMD_PING, CMD_READ, CMD_WRITE, CRC_BYTES,
                              DEFAULT_BAUD, DEFAULT_TIMEOUT_S, ERR_CRC, ERR_TIMEOUT,
                              ERROR_NAMES, MAX_BURST_LIMIT, MAX_GROUP_FRAMES, PING_WORDS, REQ_SEQ,
                              RESPONSE_HEADER_BYTES, RSP_ACK, RSP_COUNT, RSP_DATA, RSP_ERROR,
                              RSP_INFO, RSP_KIND, RSP_SEQ, SEQ_MODULO, SYNC, WORD_BYTES, crc16)

WORD_MASK = 0xFFFFFFFF


# --------------------------------------------------------------------------- frames

def _with_crc(body: bytes) -> bytes:
    c = crc16(body)
    return bytes([SYNC]) + body + bytes([c >> 8, c & 0xFF])


def _words_bytes(words: Iterable[int]) -> bytes:
    return b"".join(struct.pack("<I", int(w) & WORD_MASK) for w in words)


def encode_request(cmd: int, addr: int = 0, count: int | None = None,
                   words: Sequence[int] = (), seq: int = 0) -> bytes:
    """A request frame.  ``count`` defaults to ``len(words)``; giving both lets a test
    build inconsistent frames on purpose (the payload is always ``words``)."""
    if count is None:
        count = len(words)
    if not 0 <= count <= MAX_BURST_LIMIT:
        raise ValueError(f"count {count} does not fit the 8-bit COUNT field")
    if not 0 <= seq < SEQ_MODULO:
        raise ValueError(f"seq {seq} does not fit the 8-bit SEQ field")
    body = (bytes([cmd & 0xFF, seq, count]) + struct.pack("<I", addr & WORD_MASK)
            + _words_bytes(words))
    return _with_crc(body)


def request_seq(frame: bytes) -> int:
    """The SEQ of an encoded request frame."""
    return frame[1 + REQ_SEQ]


def encode_response(kind: int, info: int, count: int = 0, words: Sequence[int] = (),
                    seq: int = 0) -> bytes:
    """A response frame (what the board sends; used by models and tests)."""
    body = bytes([kind & 0xFF, info & 0xFF, seq & 0xFF, count & 0xFF]) + _words_bytes(words)
    return _with_crc(body)


def burst_spans(addr: int, n: int, max_burst: int, align: int = 1) -> Iterator[tuple[int, int, int]]:
    """How a burst of ``n`` words from ``addr`` is split into frames: ``(offset, address,
    count)`` each, at most ``max_burst`` words; with ``align`` > 1 every frame but the last ends
    on an address that is a multiple of ``align`` (where ``max_burst`` allows one)."""
    done = 0
    while done < n:
        a = addr + done
        k = min(max_burst, n - done)
        if align > 1 and k < n - done:
            end = (a + k) // align * align
            if end > a:
                k = end - a
        yield done, a, k
        done += k


# --------------------------------------------------------------------------- decoding

@dataclasses.dataclass(frozen=True)
class Response:
    """A decoded response frame (its CRC checked)."""
    kind: int
    info: int
    count: int
    words: tuple[int, ...] = ()
    seq: int = 0

    @property
    def is_error(self) -> bool:
        return self.kind == RSP_ERROR


def response_payload_words(kind: int, count: int) -> int:
    """Words of payload that follow a response header."""
    return count if kind == RSP_DATA else 0


def _response_of(frame: bytes) -> Response:
    """The Response of a whole frame (SYNC to CRC) whose CRC checked."""
    head = frame[1:1 + RESPONSE_HEADER_BYTES]
    payload = frame[1 + RESPONSE_HEADER_BYTES:-CRC_BYTES]
    words = struct.unpack(f"<{len(payload) // WORD_BYTES}I", payload)
    return Response(head[RSP_KIND], head[RSP_INFO], head[RSP_COUNT], tuple(words), head[RSP_SEQ])


class ResponseDecoder:
    """Incremental response decoder for a byte stream.

    :meth:`feed` takes any bytes and returns the events completed so far: a
    :class:`Response` for each good frame, a :class:`LinkCrcError` instance for
    each frame whose CRC failed.  Bytes before a sync byte are skipped (counted
    in :attr:`skipped`).  After a CRC failure decoding restarts at the byte after
    the failed frame's sync byte, so a good frame hidden in a bad one is found.
    """

    def __init__(self):
        self._buf = bytearray()
        self.skipped = 0

    def feed(self, data: bytes | bytearray | Iterable[int]) -> list:
        self._buf.extend(data)
        events = []
        while True:
            start = self._buf.find(SYNC)
            if start < 0:
                self.skipped += len(self._buf)
                self._buf.clear()
                return events
            if start:
                self.skipped += start
                del self._buf[:start]
            if len(self._buf) < 1 + RESPONSE_HEADER_BYTES:
                return events
            kind, count = self._buf[1 + RSP_KIND], self._buf[1 + RSP_COUNT]
            total = (1 + RESPONSE_HEADER_BYTES + WORD_BYTES * response_payload_words(kind, count)
                     + CRC_BYTES)
            if len(self._buf) < total:
                return events
            frame = bytes(self._buf[:total])
            if crc16(frame[1:]) != 0:
                events.append(LinkCrcError(f"response CRC error (frame {frame[:8].hex()}...)"))
                self.skipped += 1
                del self._buf[:1]
                continue
            events.append(_response_of(frame))
            del self._buf[:total]

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buf)


# --------------------------------------------------------------------------- errors

class LinkError(Exception):
    """Any failure of the board link."""


class LinkErrorResponse(LinkError):
    """The board answered with an ERROR response; the request changed nothing."""

    def __init__(self, code: int, request: str = ""):
        self.code = code
        self.name = ERROR_NAMES.get(code, f"unknown error 0x{code:02x}")
        super().__init__(f"board reported error 0x{code:02x} ({self.name})"
                         + (f" for {request}" if request else ""))


class LinkCrcError(LinkError):
    """A response arrived with a bad CRC."""


class LinkTimeout(LinkError):
    """The transport returned fewer bytes than a response needs."""


class LinkProtocolError(LinkError):
    """A well-formed response that does not answer the request that was sent."""


class _NoSync(LinkProtocolError):
    """Bytes without a response in them (line noise, or a device that keeps sending)."""


# --------------------------------------------------------------------------- client

class Transport(Protocol):
    def write(self, data: bytes) -> object: ...
    def read(self, n: int) -> bytes: ...


@dataclasses.dataclass(frozen=True)
class LinkInfo:
    """What PING returns."""
    version: int
    max_burst: int
    error_count: int     #: error responses sent since reset (16 bits, wrapping)
    status: int          #: the design's 32-bit status word


class LinkClient:
    """Blocking client: one request, one response.

    ``transport`` is anything with ``write(bytes)`` and ``read(n) -> bytes``
    where a short read means a timeout (``serial.Serial`` with ``timeout=`` set
    behaves so; its timeout must exceed the board's inter-byte timeout).
    Bursts longer than ``max_burst`` words are split into several requests.
    ``retries`` re-sends a request (the same bytes, the same SEQ) after a timeout, a
    response CRC error, bytes with no response in them, or an ERR_CRC / ERR_TIMEOUT answer;
    the board does not execute a repeated WRITE again, so this is safe for every request.
    Before retrying, pending input is drained (for at most ``drain_seconds`` and
    ``drain_bytes``: a device that keeps sending cannot hold the client).  A response whose SEQ
    is not the request's (a late answer to an earlier one) is skipped.  ``max_burst`` must not
    exceed the board's (PING reports it).  :meth:`post_words` sends WRITE frames without waiting
    (a group, protocol 3); :meth:`flush`, which every other command calls first, collects their
    ACKs and sends again, in order, the frames from the first one not acknowledged on (at most
    ``retries`` times).  :attr:`stats` counts what happened (requests, retries, timeouts, CRC
    errors, error responses, stale responses, drained bytes, posted and re-sent frames).

    Example::

        client = LinkClient(open_serial("/dev/ttyUSB1"), retries=3)
        assert client.ping().version == PROTOCOL_VERSION
        client.write_words(0x000, weights)
        client.write_word(0x100, 1)             # e.g. a start bit in a control register
        results = client.read_words(0x080, 16)
    """

    #: Bytes skipped while looking for a response's sync byte before giving up.
    MAX_SKIP = 4096
    #: Late responses (another SEQ) skipped while waiting for a request's own.
    MAX_STALE = 16

    def __init__(self, transport: Transport, *, max_burst: int = 64, retries: int = 0,
                 first_seq: int | None = None, drain_seconds: float = 2.0,
                 drain_bytes: int = 65536):
        if not 1 <= max_burst <= MAX_BURST_LIMIT:
            raise ValueError(f"max_burst must be in 1..{MAX_BURST_LIMIT}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.transport = transport
        self.max_burst = max_burst
        self.retries = retries
        self.drain_seconds = drain_seconds
        self.drain_bytes = drain_bytes
        # a fresh session starts at a random SEQ, so that its first WRITE cannot be taken for
        # a repetition of the last one of an earlier session
        self._seq = random.randrange(SEQ_MODULO) if first_seq is None else first_seq % SEQ_MODULO
        self.stats = collections.Counter()
        self._posted: list[tuple[bytes, int, str]] = []     # (frame, count, what), in order

    # ----------------------------------------------------------------- raw exchange
    def _read_exact(self, n: int, what: str) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.transport.read(n - len(data))
            if not chunk:
                raise LinkTimeout(f"timeout waiting for {what} ({len(data)} of {n} bytes)")
            data.extend(chunk)
        return bytes(data)

    def read_response(self) -> Response:
        """Read one response frame (skipping bytes before its sync byte)."""
        for _ in range(self.MAX_SKIP):
            if self._read_exact(1, "a response")[0] == SYNC:
                break
        else:
            raise _NoSync(f"no sync byte in {self.MAX_SKIP} bytes")
        head = self._read_exact(RESPONSE_HEADER_BYTES, "a response header")
        kind, count = head[RSP_KIND], head[RSP_COUNT]
        rest = self._read_exact(WORD_BYTES * response_payload_words(kind, count) + CRC_BYTES,
                                "a response body")
        if crc16(head + rest) != 0:
            raise LinkCrcError(f"response CRC error (kind 0x{kind:02x}, count {count})")
        return _response_of(bytes([SYNC]) + head + rest)

    def drain(self) -> bytes:
        """Read and discard whatever arrives until the transport times out, for at most
        ``drain_seconds`` and ``drain_bytes`` (a device that keeps sending cannot hold it)."""
        dropped = bytearray()
        deadline = time.monotonic() + self.drain_seconds
        while len(dropped) < self.drain_bytes and time.monotonic() < deadline:
            chunk = self.transport.read(min(256, self.drain_bytes - len(dropped)))
            if not chunk:
                break
            dropped.extend(chunk)
        self.stats["drained_bytes"] += len(dropped)
        return bytes(dropped)

    def next_seq(self) -> int:
        """The SEQ for a new request."""
        seq = self._seq
        self._seq = (self._seq + 1) % SEQ_MODULO
        return seq

    def _own_response(self, seq: int) -> Response:
        """The response to the request ``seq``: late answers to earlier requests are skipped;
        an ERROR is taken whatever its SEQ (a corrupted request's SEQ may be corrupted too)."""
        for _ in range(self.MAX_STALE):
            rsp = self.read_response()
            if rsp.kind == RSP_ERROR or rsp.seq == seq:
                return rsp
            self.stats["stale_responses"] += 1
        raise LinkProtocolError(f"{self.MAX_STALE} responses in a row answered other requests")

    def transact(self, frame: bytes, describe: str = "request") -> Response:
        """Send ``frame``, return its response; raise :class:`LinkErrorResponse` for ERROR.
        Retries (``retries``) send the same frame again.  Posted frames are flushed first."""
        self.flush()
        seq = request_seq(frame)
        attempt = 0
        self.stats["requests"] += 1
        while True:
            try:
                self.transport.write(frame)
                rsp = self._own_response(seq)
                if rsp.kind == RSP_ERROR:
                    self.stats["error_responses"] += 1
                    raise LinkErrorResponse(rsp.info, describe)
                if attempt:
                    self.stats["recovered"] += 1
                return rsp
            except (LinkTimeout, LinkCrcError, _NoSync, LinkErrorResponse) as error:
                kind = {LinkTimeout: "timeouts", LinkCrcError: "crc_errors",
                        _NoSync: "no_sync"}.get(type(error))
                if kind:
                    self.stats[kind] += 1
                transient = (not isinstance(error, LinkErrorResponse)
                             or error.code in (ERR_CRC, ERR_TIMEOUT))
                if not transient or attempt >= self.retries:
                    if transient and attempt:
                        error.args = (f"{error} (after {attempt} retries)",)
                    raise
                attempt += 1
                self.stats["retries"] += 1
                self.drain()

    # ----------------------------------------------------------------- commands
    def ping(self) -> LinkInfo:
        """PING: protocol version, max burst, error counter and the status word."""
        rsp = self.transact(encode_request(CMD_PING, seq=self.next_seq()), "PING")
        if rsp.kind != RSP_DATA or rsp.info != CMD_PING or len(rsp.words) != PING_WORDS:
            raise LinkProtocolError(f"unexpected answer to PING: {rsp}")
        link, status = rsp.words
        return LinkInfo(version=link & 0xFF, max_burst=(link >> 8) & 0xFF,
                        error_count=link >> 16, status=status)

    def status(self) -> int:
        """The design's status word (through PING)."""
        return self.ping().status

    def _chunks(self, addr: int, n: int, align: int = 1) -> Iterator[tuple[int, int, int]]:
        return burst_spans(addr, n, self.max_burst, align)

    # ----------------------------------------------------------------- groups
    def post_words(self, addr: int, words: Sequence[int]) -> None:
        """Write ``words`` from ``addr`` in WRITE frames sent without waiting for their ACKs
        (frames end on multiples of :data:`BURST_ALIGN`); :meth:`flush` collects the ACKs.
        Only for writes whose order does not matter (memory words: hw/contract/link.py)."""
        words = [int(w) & WORD_MASK for w in words]
        for offset, a, k in self._chunks(addr, len(words), BURST_ALIGN):
            if len(self._posted) >= MAX_GROUP_FRAMES:
                self.flush()
            frame = encode_request(CMD_WRITE, a, k, words[offset:offset + k], seq=self.next_seq())
            self.transport.write(frame)
            self._posted.append((frame, k, f"WRITE {k} words at 0x{a:x}"))
            self.stats["requests"] += 1
            self.stats["posted"] += 1

    @property
    def posted(self) -> int:
        """Frames posted and not yet acknowledged."""
        return len(self._posted)

    def flush(self) -> None:
        """Collect the ACKs of the posted frames; send again, in order, every frame from the
        first one not acknowledged on (after a drain), at most ``retries`` times."""
        pending, self._posted = self._posted, []
        attempt = 0
        unanswered = 0                  # frames without an ACK the first time
        while pending:
            missing, fatal = self._collect(pending)
            if not attempt:
                unanswered = len(missing)
            if not missing:
                self.stats["recovered"] += unanswered
                return
            first = missing[0]
            what = pending[first][2]
            if fatal is not None:
                raise LinkErrorResponse(fatal, f"a group of WRITEs ({what} not acknowledged)")
            if attempt >= self.retries:
                raise LinkTimeout(f"no ACK for {what} of a group of {len(pending)} WRITE "
                                  f"frames" + (f" (after {attempt} retries)" if attempt else ""))
            attempt += 1
            self.stats["retries"] += 1
            self.drain()
            pending = pending[first:]
            for frame, _, _ in pending:
                self.transport.write(frame)
            self.stats["resent"] += len(pending)

    def _collect(self, pending) -> tuple[list[int], int | None]:
        """Read the responses to ``pending`` (posted frames) until each has its ACK or the line
        goes quiet: the indices of the frames without one, and an error code the board gave
        that a retry cannot cure (None if none)."""
        want = {request_seq(frame): (i, k) for i, (frame, k, _) in enumerate(pending)}
        acked = set()
        fatal = None
        while len(acked) < len(pending):
            try:
                rsp = self.read_response()
            except LinkTimeout:
                self.stats["timeouts"] += 1
                break
            except _NoSync:
                self.stats["no_sync"] += 1
                break
            except LinkCrcError:
                self.stats["crc_errors"] += 1
                continue
            if rsp.kind == RSP_ERROR:
                self.stats["error_responses"] += 1
                if rsp.info not in (ERR_CRC, ERR_TIMEOUT):
                    fatal = rsp.info
                continue
            hit = want.get(rsp.seq)
            if (hit is not None and rsp.kind == RSP_ACK and rsp.info == CMD_WRITE
                    and rsp.count == hit[1]):
                acked.add(hit[0])
            else:
                self.stats["stale_responses"] += 1
        return [i for i in range(len(pending)) if i not in acked], fatal

    # ----------------------------------------------------------------- blocking commands
    def write_words(self, addr: int, words: Sequence[int]) -> None:
        """Write ``words`` to consecutive word addresses from ``addr``, each frame after the
        previous one's ACK."""
        words = [int(w) & WORD_MASK for w in words]
        for offset, a, k in self._chunks(addr, len(words)):
            what = f"WRITE {k} words at 0x{a:x}"
            frame = encode_request(CMD_WRITE, a, k, words[offset:offset + k], seq=self.next_seq())
            rsp = self.transact(frame, what)
            if rsp.kind != RSP_ACK or rsp.info != CMD_WRITE or rsp.count != k:
                raise LinkProtocolError(f"unexpected answer to {what}: {rsp}")

    def read_words(self, addr: int, n: int) -> list[int]:
        """Read ``n`` words from consecutive word addresses from ``addr``."""
        out: list[int] = []
        for _, a, k in self._chunks(addr, n):
            what = f"READ {k} words at 0x{a:x}"
            rsp = self.transact(encode_request(CMD_READ, a, k, seq=self.next_seq()), what)
            if rsp.kind != RSP_DATA or rsp.info != CMD_READ or rsp.count != k:
                raise LinkProtocolError(f"unexpected answer to {what}: {rsp}")
            out.extend(rsp.words)
        return out

    def write_word(self, addr: int, value: int) -> None:
        self.write_words(addr, [value])

    def read_word(self, addr: int) -> int:
        return self.read_words(addr, 1)[0]


def open_serial(port: str, baud: int = DEFAULT_BAUD, timeout: float = DEFAULT_TIMEOUT_S):
    """A pyserial port set up for :class:`LinkClient` (pyserial imported here only)."""
    import serial  # noqa: PLC0415

    return serial.Serial(port, baudrate=baud, timeout=timeout)
