"""Host side of the board link: frames, CRC checks and a blocking client.

This module talks to :class:`hw.link.host_link.HostLink` over any byte transport (the board's
USB serial port).  The frame format and its constants are the contract's
(:mod:`hw.contract.link`, pure Python), so a host with only Python (and pyserial, for a real
port) can drive a board.  A request cut short (no byte for the board's inter-byte timeout) is
answered with ``ERR_TIMEOUT`` when the timeout expires.  The link is half duplex: send the
next request only after the previous response has arrived (bytes sent while the board is
answering may be lost).
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Iterable, Iterator, Protocol, Sequence

__all__ = [
    "response_payload_words", "encode_request", "encode_response", "Response",
    "ResponseDecoder", "LinkError", "LinkErrorResponse", "LinkCrcError", "LinkTimeout",
    "LinkProtocolError", "LinkInfo", "LinkClient", "open_serial",
]

from hw.contract.link import (CMD_PING, CMD_READ, CMD_WRITE,
                              ERR_CRC, ERR_TIMEOUT,
                              ERROR_NAMES, MAX_BURST_LIMIT, PING_WORDS, RESPONSE_HEADER_BYTES, RSP_ACK, RSP_DATA,
                              RSP_ERROR, SYNC, crc16)

WORD_MASK = 0xFFFFFFFF


# --------------------------------------------------------------------------- frames

def _with_crc(body: bytes) -> bytes:
    c = crc16(body)
    return bytes([SYNC]) + body + bytes([c >> 8, c & 0xFF])


def _words_bytes(words: Iterable[int]) -> bytes:
    return b"".join(struct.pack("<I", int(w) & WORD_MASK) for w in words)


def encode_request(cmd: int, addr: int = 0, count: int | None = None,
                   words: Sequence[int] = ()) -> bytes:
    """A request frame.  ``count`` defaults to ``len(words)``; giving both lets a test
    build inconsistent frames on purpose (the payload is always ``words``)."""
    if count is None:
        count = len(words)
    if not 0 <= count <= MAX_BURST_LIMIT:
        raise ValueError(f"count {count} does not fit the 8-bit COUNT field")
    body = bytes([cmd & 0xFF, count]) + struct.pack("<I", addr & WORD_MASK) + _words_bytes(words)
    return _with_crc(body)


def encode_response(kind: int, info: int, count: int = 0, words: Sequence[int] = ()) -> bytes:
    """A response frame (what the board sends; used by models and tests)."""
    body = bytes([kind & 0xFF, info & 0xFF, count & 0xFF]) + _words_bytes(words)
    return _with_crc(body)


# --------------------------------------------------------------------------- decoding

@dataclasses.dataclass(frozen=True)
class Response:
    """A decoded response frame (its CRC checked)."""
    kind: int
    info: int
    count: int
    words: tuple[int, ...] = ()

    @property
    def is_error(self) -> bool:
        return self.kind == RSP_ERROR


def response_payload_words(kind: int, count: int) -> int:
    """Words of payload that follow a response header."""
    return count if kind == RSP_DATA else 0


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
            kind, info, count = self._buf[1], self._buf[2], self._buf[3]
            total = 1 + RESPONSE_HEADER_BYTES + 4 * response_payload_words(kind, count) + 2
            if len(self._buf) < total:
                return events
            frame = bytes(self._buf[:total])
            if crc16(frame[1:]) != 0:
                events.append(LinkCrcError(f"response CRC error (frame {frame[:8].hex()}...)"))
                self.skipped += 1
                del self._buf[:1]
                continue
            words = struct.unpack(f"<{(total - 6) // 4}I", frame[4:-2])
            events.append(Response(kind, info, count, tuple(words)))
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
    ``retries`` re-sends a request after a timeout, a response CRC error or an
    ERR_CRC / ERR_TIMEOUT answer (READ and WRITE are idempotent); before
    retrying, pending input is drained so a late response is not taken for
    the answer to the retry.  ``max_burst`` must not exceed the board's (PING
    reports it).

    Example::

        client = LinkClient(open_serial("/dev/ttyUSB1", 115200), retries=1)
        assert client.ping().version == PROTOCOL_VERSION
        client.write_words(0x000, weights)
        client.write_word(0x100, 1)             # e.g. a start bit in a control register
        results = client.read_words(0x080, 16)
    """

    #: Bytes skipped while looking for a response's sync byte before giving up.
    MAX_SKIP = 4096

    def __init__(self, transport: Transport, *, max_burst: int = 64, retries: int = 0):
        if not 1 <= max_burst <= MAX_BURST_LIMIT:
            raise ValueError(f"max_burst must be in 1..{MAX_BURST_LIMIT}")
        self.transport = transport
        self.max_burst = max_burst
        self.retries = retries

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
            raise LinkProtocolError(f"no sync byte in {self.MAX_SKIP} bytes")
        head = self._read_exact(RESPONSE_HEADER_BYTES, "a response header")
        kind, info, count = head
        rest = self._read_exact(4 * response_payload_words(kind, count) + 2, "a response body")
        if crc16(head + rest) != 0:
            raise LinkCrcError(f"response CRC error (kind 0x{kind:02x}, count {count})")
        words = struct.unpack(f"<{(len(rest) - 2) // 4}I", rest[:-2])
        return Response(kind, info, count, tuple(words))

    def drain(self) -> bytes:
        """Read and discard whatever arrives until the transport times out."""
        dropped = bytearray()
        while True:
            chunk = self.transport.read(256)
            if not chunk:
                return bytes(dropped)
            dropped.extend(chunk)

    def transact(self, frame: bytes, describe: str = "request") -> Response:
        """Send ``frame``, return its response; raise :class:`LinkErrorResponse` for ERROR."""
        attempt = 0
        while True:
            try:
                self.transport.write(frame)
                rsp = self.read_response()
                if rsp.kind == RSP_ERROR:
                    raise LinkErrorResponse(rsp.info, describe)
                return rsp
            except (LinkTimeout, LinkCrcError, LinkErrorResponse) as error:
                transient = not isinstance(error, LinkErrorResponse) or error.code in (ERR_CRC, ERR_TIMEOUT)
                if not transient or attempt >= self.retries:
                    raise
                attempt += 1
                self.drain()

    # ----------------------------------------------------------------- commands
    def ping(self) -> LinkInfo:
        """PING: protocol version, max burst, error counter and the status word."""
        rsp = self.transact(encode_request(CMD_PING), "PING")
        if rsp.kind != RSP_DATA or rsp.info != CMD_PING or len(rsp.words) != PING_WORDS:
            raise LinkProtocolError(f"unexpected answer to PING: {rsp}")
        link, status = rsp.words
        return LinkInfo(version=link & 0xFF, max_burst=(link >> 8) & 0xFF,
                        error_count=link >> 16, status=status)

    def status(self) -> int:
        """The design's status word (through PING)."""
        return self.ping().status

    def _chunks(self, addr: int, n: int) -> Iterator[tuple[int, int, int]]:
        done = 0
        while done < n:
            k = min(self.max_burst, n - done)
            yield done, addr + done, k
            done += k

    def write_words(self, addr: int, words: Sequence[int]) -> None:
        """Write ``words`` to consecutive word addresses from ``addr``."""
        words = [int(w) & WORD_MASK for w in words]
        for offset, a, k in self._chunks(addr, len(words)):
            what = f"WRITE {k} words at 0x{a:x}"
            rsp = self.transact(encode_request(CMD_WRITE, a, k, words[offset:offset + k]), what)
            if rsp.kind != RSP_ACK or rsp.info != CMD_WRITE or rsp.count != k:
                raise LinkProtocolError(f"unexpected answer to {what}: {rsp}")

    def read_words(self, addr: int, n: int) -> list[int]:
        """Read ``n`` words from consecutive word addresses from ``addr``."""
        out: list[int] = []
        for _, a, k in self._chunks(addr, n):
            what = f"READ {k} words at 0x{a:x}"
            rsp = self.transact(encode_request(CMD_READ, a, k), what)
            if rsp.kind != RSP_DATA or rsp.info != CMD_READ or rsp.count != k:
                raise LinkProtocolError(f"unexpected answer to {what}: {rsp}")
            out.extend(rsp.words)
        return out

    def write_word(self, addr: int, value: int) -> None:
        self.write_words(addr, [value])

    def read_word(self, addr: int) -> int:
        return self.read_words(addr, 1)[0]


def open_serial(port: str, baud: int = 115200, timeout: float = 0.5):
    """A pyserial port set up for :class:`LinkClient` (pyserial imported here only)."""
    import serial  # noqa: PLC0415

    return serial.Serial(port, baudrate=baud, timeout=timeout)
