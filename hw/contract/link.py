"""The host link's frames: the bytes between a host's serial port and the board's HostLink.

Multi-byte fields are little-endian, except the CRC, which is sent high byte first, so that
the CRC over a whole frame after its sync byte, CRC included, is zero (how both ends check a
frame).  CRC: CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no
final XOR: ``amaranth.lib.crc.catalog.CRC16_CCITT_FALSE`` in the gateware, the standard
library's ``binascii.crc_hqx`` on the host).

Request (host -> board), ``7 + 4 * COUNT`` (WRITE) or 7 bytes between SYNC and CRC::

    SYNC  CMD  SEQ  COUNT  ADDR0 ADDR1 ADDR2 ADDR3  [COUNT words of payload]  CRC_HI CRC_LO
    0xA5  1 B  1 B  1 B    32-bit word address      (WRITE only, 4 B each)    over CMD..payload

SEQ is the request's sequence number: the host gives each new request the next one (modulo
256) and sends a request again (after a lost or corrupted response) with the same SEQ and
bytes.  The board remembers the last request it executed (its SEQ and CRC) when it was a WRITE:
a WRITE repeating it (same SEQ and CRC, so the same bytes) is answered with the same ACK
*without writing again*, so a retried WRITE never applies twice (a write to CONTROL that starts
the core, or to a register that counts writes).  Any other request executed (READ, PING, another
WRITE) replaces what the board remembers; a request answered with ERROR does not.  READ and PING
are executed again when repeated (they change nothing).

=========  ====  ================================================================
command    CMD   meaning
=========  ====  ================================================================
PING       0x01  answer DATA with 2 words: the link word and the core's status
                 (COUNT and ADDR are ignored)
WRITE      0x02  write COUNT words to ADDR, ADDR+1, ...; answer ACK
READ       0x03  read COUNT words from ADDR, ADDR+1, ...; answer DATA
=========  ====  ================================================================

Only CMD = WRITE has a payload: any other CMD byte means the CRC follows ADDR.

Response (board -> host)::

    SYNC  KIND  INFO  SEQ  COUNT  [COUNT words, DATA only]  CRC_HI CRC_LO (over KIND..payload)

SEQ is the request's (as received; for an ERROR it may be whatever arrived in its place), so the
host can tell the answer to its request from a late answer to an earlier one.

=====  =====  ==================  ==========================================
KIND   code   INFO                COUNT / payload
=====  =====  ==================  ==========================================
ACK    0x80   the command         words written, no payload
DATA   0x81   the command         words in the payload
ERROR  0x82   error code          0, no payload
=====  =====  ==================  ==========================================

Error codes (:data:`ERROR_NAMES`): the checks run after the CRC bytes, in that order of
priority (bad CRC first).  A request answered with ERROR changed nothing.  The PING link word:
bits 0-7 :data:`PROTOCOL_VERSION`, 8-15 the board's ``max_burst``, 16-31 the number of ERROR
responses sent since reset (wrapping).  Every request gets exactly one response, in the order
of the requests.

**Pipelined WRITEs** (version 3).  The board's receiver buffers the bytes that arrive while it
commits a WRITE and sends its ACK, so a host may send WRITE requests back to back without
waiting for their ACKs: a *group*.  A host using groups keeps to these rules:

* a READ or PING waits until every earlier request has been answered (its response is long,
  and nothing is buffered behind it);
* a WRITE whose order matters (a register: CONTROL, which starts the core) is not in a group
  with others; it follows the group's last ACK;
* a group's frames end on word addresses that are multiples of :data:`BURST_ALIGN` (except
  at the end of a burst), so no memory word's chunks are split between two frames (the
  board stages a word's chunks and commits it at its last one);
* when a frame of a group is not acknowledged (a corrupted request, a lost ACK), the host sends
  it and every later frame of the group again, in order, with their SEQs and bytes unchanged.
  Memory writes are idempotent, and whole words are rewritten from their first chunk, so
  the result is as if every frame had gone through once.

At most :data:`MAX_GROUP_FRAMES` frames are outstanding, so their SEQs are distinct.
"""

from __future__ import annotations

import binascii

__all__ = [
    "SYNC", "CMD_PING", "CMD_WRITE", "CMD_READ", "COMMANDS", "RSP_ACK", "RSP_DATA",
    "RSP_ERROR", "ERR_CRC", "ERR_COMMAND", "ERR_LENGTH", "ERR_TIMEOUT", "ERR_ADDRESS",
    "ERROR_NAMES", "PROTOCOL_VERSION", "CRC_POLY", "CRC_INIT", "REQUEST_HEADER_BYTES",
    "RESPONSE_HEADER_BYTES", "PING_WORDS", "WORD_BYTES", "MAX_BURST_LIMIT", "crc16",
    "REQ_CMD", "REQ_SEQ", "REQ_COUNT", "REQ_ADDR", "RSP_KIND", "RSP_INFO", "RSP_SEQ",
    "RSP_COUNT", "SEQ_MODULO", "CRC_BYTES", "DEFAULT_BAUD", "DEFAULT_TIMEOUT_S",
    "DEFAULT_RETRIES", "BURST_ALIGN", "MAX_GROUP_FRAMES", "BITS_PER_BYTE", "request_bytes",
    "response_bytes",
]

SYNC = 0xA5

CMD_PING = 0x01
CMD_WRITE = 0x02
CMD_READ = 0x03
COMMANDS = (CMD_PING, CMD_WRITE, CMD_READ)

RSP_ACK = 0x80
RSP_DATA = 0x81
RSP_ERROR = 0x82

ERR_CRC = 0x01        #: the frame's CRC did not check
ERR_COMMAND = 0x02    #: unknown command
ERR_LENGTH = 0x03     #: COUNT is 0 or larger than the board's max burst (READ, WRITE)
ERR_TIMEOUT = 0x04    #: the frame stopped before its end (inter-byte timeout)
ERR_ADDRESS = 0x05    #: the burst leaves the bus address space

ERROR_NAMES = {
    ERR_CRC: "bad CRC",
    ERR_COMMAND: "unknown command",
    ERR_LENGTH: "bad length",
    ERR_TIMEOUT: "timeout / truncated frame",
    ERR_ADDRESS: "address out of range",
}

#: 2: the sequence number in requests and responses, retried WRITEs not applied twice;
#: 3: pipelined WRITEs (the board buffers requests that arrive while it answers)
PROTOCOL_VERSION = 3
CRC_POLY = 0x1021
CRC_INIT = 0xFFFF

#: CMD, SEQ, COUNT, ADDR (4): bytes between SYNC and the payload of a request.
REQUEST_HEADER_BYTES = 7
#: KIND, INFO, SEQ, COUNT: bytes between SYNC and the payload of a response.
RESPONSE_HEADER_BYTES = 4
#: Offsets of the fields in a request's header (after SYNC).
REQ_CMD, REQ_SEQ, REQ_COUNT, REQ_ADDR = 0, 1, 2, 3
#: Offsets of the fields in a response's header (after SYNC).
RSP_KIND, RSP_INFO, RSP_SEQ, RSP_COUNT = 0, 1, 2, 3
#: Sequence numbers are one byte.
SEQ_MODULO = 256
#: CRC bytes at the end of every frame.
CRC_BYTES = 2
#: Words in the DATA response to PING.
PING_WORDS = 2
#: Bytes of a bus word in a payload.
WORD_BYTES = 4
#: The largest burst the 8-bit COUNT field can carry.
MAX_BURST_LIMIT = 0xFF

#: The host's default baud rate: the boards' with a USB-serial bridge (boards/boards.py,
#: ``Board.baud``: the iCEBreaker's FT2232H and the ULX3S's FT231X take 3 Mbaud).
DEFAULT_BAUD = 3_000_000
#: Bits on the line per byte: 8N1 (a start bit, eight data bits, a stop bit).
BITS_PER_BYTE = 10
#: A group's WRITE frames end on word addresses that are multiples of this: a memory word of
#: the widest region (an instruction: 16 chunks, in slots of 16) is never split between frames.
BURST_ALIGN = 16
#: The most WRITE frames a host keeps unanswered in a group (their SEQs must be distinct).
MAX_GROUP_FRAMES = 64
#: The host's default serial read timeout (seconds): above the board's inter-byte timeout.
DEFAULT_TIMEOUT_S = 0.5
#: The host's default number of retries of a request after a lost or corrupted frame.
DEFAULT_RETRIES = 3


def crc16(data, crc: int = CRC_INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (``crc16(b"123456789") == 0x29B1``); ``crc`` continues
    a running value.  A frame body followed by its CRC (high byte first) has a CRC of 0."""
    return binascii.crc_hqx(bytes(data), crc)


def request_bytes(cmd: int, count: int) -> int:
    """Bytes of a request frame on the line: SYNC, header, a WRITE's payload, CRC."""
    return 1 + REQUEST_HEADER_BYTES + (WORD_BYTES * count if cmd == CMD_WRITE else 0) + CRC_BYTES


def response_bytes(kind: int, count: int) -> int:
    """Bytes of a response frame: SYNC, header, a DATA response's payload, CRC."""
    return 1 + RESPONSE_HEADER_BYTES + (WORD_BYTES * count if kind == RSP_DATA else 0) + CRC_BYTES
