"""Reference model of the board side of the host link, and the fuzz-case generator.

Used both by pytest (pure-Python protocol tests, tests/test_link_protocol.py)
and inside the simulator by the cocotb benches (tb_host_link_bytes.py,
tb_host_link_uart.py).  It is written from the protocol description in
``nitrod/link.py`` (constants and frame encoder taken from there), not from the
HDL, so the benches compare the RTL against an independent model.

* :class:`TargetModel` -- the bench's bus target: 256 words of memory at
  0x000-0x0FF, CTRL (read/write) at 0x100, ID (read-only) at 0x101, WCOUNT at 0x102
  (counts the writes to it, whatever their value: a WRITE applied twice shows), zeros
  elsewhere; ``status`` (returned by PING) is CTRL.
* :class:`DeviceModel` -- byte-level behaviour of ``HostLink``: :meth:`feed`
  bytes, :meth:`gap` for an idle stretch longer than the inter-byte timeout.
  Both return the response bytes the link sends.  It remembers the last WRITE it executed
  (SEQ and CRC) and answers a repetition of it with the same ACK without writing; a READ or
  PING executed forgets it (the protocol in hw/contract/link.py).  Every response echoes the
  SEQ register: the SEQ byte of the frame being answered, or, for a frame cut before its SEQ
  byte, the one before's.
* :func:`generate_cases` -- random requests, valid and broken; every broken one
  is followed by a gap and a PING.  A case is rejected (and drawn again) when
  the model says it would change the target although it is not a valid WRITE
  (a 2**-16 CRC accident), or when a broken frame would not be answered with
  an error, so the target must end up equal to the model of the valid WRITEs
  alone (``intended``).
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np

from hw.contract import link as P
from nitrod import link as L

MEM_WORDS = 256
REG_CTRL = 0x100
REG_ID = 0x101
REG_WCOUNT = 0x102
ID_VALUE = 0x4E495444          # "NITD"
ADDR_WIDTH = 16


class TargetModel:
    """The bench's bus target (see module docstring)."""

    def __init__(self):
        self.mem = [0] * MEM_WORDS
        self.ctrl = 0
        self.wcount = 0
        #: (SEQ, CRC) of the last WRITE executed, as the device remembers it (generate_cases
        #: keeps the intended target's in step with the device's)
        self.last_write = None

    def clone(self) -> "TargetModel":
        other = TargetModel()
        other.mem = list(self.mem)
        other.ctrl = self.ctrl
        other.wcount = self.wcount
        other.last_write = self.last_write
        return other

    def read(self, addr: int) -> int:
        if addr < MEM_WORDS:
            return self.mem[addr]
        if addr == REG_CTRL:
            return self.ctrl
        if addr == REG_ID:
            return ID_VALUE
        if addr == REG_WCOUNT:
            return self.wcount
        return 0

    def write(self, addr: int, value: int) -> None:
        if addr < MEM_WORDS:
            self.mem[addr] = value & 0xFFFFFFFF
        elif addr == REG_CTRL:
            self.ctrl = value & 0xFFFFFFFF
        elif addr == REG_WCOUNT:
            self.wcount = (self.wcount + 1) & 0xFFFFFFFF

    @property
    def status(self) -> int:
        return self.ctrl

    def __eq__(self, other):
        return (isinstance(other, TargetModel) and self.mem == other.mem
                and self.ctrl == other.ctrl and self.wcount == other.wcount)

    def registers(self) -> list[int]:
        """CTRL, ID, WCOUNT: what a READ of 3 words at REG_CTRL returns."""
        return [self.ctrl, ID_VALUE, self.wcount]


class DeviceModel:
    """What ``HostLink`` does with a byte stream (see the protocol in nitrod/link.py)."""

    def __init__(self, target: TargetModel, *, max_burst: int = 64, addr_width: int = ADDR_WIDTH):
        self.target = target
        self.max_burst = max_burst
        self.addr_width = addr_width
        self.error_count = 0
        self.frames = 0                # frames answered (including errors)
        self.seq = 0                   # the SEQ register: the last SEQ byte received
        self.last_write = None         # (SEQ, CRC) of the last WRITE executed
        self.repeats = 0               # repeated WRITEs answered without writing
        self._reset()

    def clone(self) -> "DeviceModel":
        other = DeviceModel(self.target.clone(), max_burst=self.max_burst, addr_width=self.addr_width)
        other.error_count, other.frames = self.error_count, self.frames
        other.seq, other.last_write, other.repeats = self.seq, self.last_write, self.repeats
        other._state, other._body, other._need = self._state, bytearray(self._body), self._need
        return other

    def _reset(self):
        self._state = "HUNT"
        self._body = bytearray()       # bytes after SYNC
        self._need = 0                 # bytes of body expected in all

    @property
    def in_frame(self) -> bool:
        return self._state != "HUNT"

    def _error(self, code: int) -> bytes:
        self.error_count = (self.error_count + 1) & 0xFFFF
        return L.encode_response(P.RSP_ERROR, code, seq=self.seq)

    def _execute(self) -> bytes:
        body = bytes(self._body)
        cmd, count = body[P.REQ_CMD], body[P.REQ_COUNT]
        (addr,) = struct.unpack("<I", body[P.REQ_ADDR:P.REQ_ADDR + 4])
        if P.crc16(body) != 0:
            return self._error(P.ERR_CRC)
        seq = self.seq
        if cmd == P.CMD_PING:
            self.last_write = None
            link_word = P.PROTOCOL_VERSION | (self.max_burst << 8) | (self.error_count << 16)
            return L.encode_response(P.RSP_DATA, P.CMD_PING, 2, [link_word, self.target.status],
                                     seq=seq)
        if cmd not in (P.CMD_WRITE, P.CMD_READ):
            return self._error(P.ERR_COMMAND)
        if not 1 <= count <= self.max_burst:
            return self._error(P.ERR_LENGTH)
        if addr + count > (1 << self.addr_width):
            return self._error(P.ERR_ADDRESS)
        if cmd == P.CMD_WRITE:
            key = (seq, body[-2:])
            if key == self.last_write:
                self.repeats += 1
            else:
                start = P.REQUEST_HEADER_BYTES
                words = struct.unpack(f"<{count}I", body[start:start + 4 * count])
                for i, w in enumerate(words):
                    self.target.write(addr + i, w)
                self.last_write = key
            return L.encode_response(P.RSP_ACK, P.CMD_WRITE, count, seq=seq)
        self.last_write = None
        words = [self.target.read(addr + i) for i in range(count)]
        return L.encode_response(P.RSP_DATA, P.CMD_READ, count, words, seq=seq)

    def feed_byte(self, b: int) -> bytes:
        """One byte in; the response it completes (or b'')."""
        if self._state == "HUNT":
            if b == P.SYNC:
                self._state = "FRAME"
                self._body = bytearray()
                self._need = P.REQUEST_HEADER_BYTES
            return b""
        self._body.append(b)
        if len(self._body) == P.REQ_SEQ + 1:
            self.seq = b
        if len(self._body) == P.REQUEST_HEADER_BYTES:
            cmd, count = self._body[P.REQ_CMD], self._body[P.REQ_COUNT]
            self._need = P.REQUEST_HEADER_BYTES + (4 * count if cmd == P.CMD_WRITE else 0) + 2
        if len(self._body) < self._need:
            return b""
        rsp = self._execute()
        self.frames += 1
        self._reset()
        return rsp

    def feed(self, data) -> bytes:
        return b"".join(self.feed_byte(b) for b in data)

    def feed_positions(self, data) -> list[int]:
        """Feed ``data``; return the indices of the bytes that completed a response."""
        return [i for i, b in enumerate(data) if self.feed_byte(b)]

    def gap(self) -> bytes:
        """An idle stretch longer than the inter-byte timeout."""
        if self._state == "HUNT":
            return b""
        self.frames += 1
        self._reset()
        return self._error(P.ERR_TIMEOUT)


# --------------------------------------------------------------------------- cases

GAP = "gap"

VALID_KINDS = ("write", "read", "ping", "noise_then_valid", "retry_write", "retry_after_bad",
               "write_read_rewrite")
#: valid kinds of several frames: a WRITE sent again with the same SEQ (answered, not applied
#: again), the same after a corrupted copy (ERR_CRC between), and after a READ (applied again)
REPEAT_KINDS = ("retry_write", "retry_after_bad", "write_read_rewrite")
GARBAGE_KINDS = ("garbage", "sync_storm")
BAD_KINDS = ("garbage", "bitflip", "truncated", "wrong_count", "too_long", "bad_cmd",
             "zero_count", "bad_addr", "sync_storm", "cut_then_valid")


@dataclasses.dataclass
class Case:
    kind: str
    items: list            #: bytes objects and GAP markers, in order
    expect: bytes          #: the response bytes the model predicts
    frames: int            #: request frames sent (valid, broken and the PING after)


def _rand_words(rng, n):
    return [int(x) for x in rng.integers(0, 1 << 32, n, dtype=np.uint64)]


def _rand_bytes(rng, n):
    return bytes(rng.integers(0, 256, n, dtype=np.uint8).tolist())


def _valid_span(rng, max_burst):
    """(addr, count) of a burst inside the mapped region, or around the registers."""
    r = rng.random()
    if r < 0.8:
        count = int(rng.integers(1, max_burst + 1)) if rng.random() < 0.3 else int(rng.integers(1, 9))
        addr = int(rng.integers(0, MEM_WORDS - count + 1))
    elif r < 0.85:
        addr, count = REG_CTRL, int(rng.integers(1, 4))
    elif r < 0.9:
        addr, count = REG_WCOUNT, 1
    else:
        count = int(rng.integers(1, 5))
        addr = int(rng.integers(MEM_WORDS - 2, (1 << ADDR_WIDTH) - count + 1))
    return addr, count


def _seq(rng):
    return int(rng.integers(0, P.SEQ_MODULO))


def _valid_frame(rng, kind, max_burst):
    addr, count = _valid_span(rng, max_burst)
    if kind == "write":
        return L.encode_request(P.CMD_WRITE, addr, count, _rand_words(rng, count), seq=_seq(rng))
    if kind == "read":
        return L.encode_request(P.CMD_READ, addr, count, seq=_seq(rng))
    return L.encode_request(P.CMD_PING, int(rng.integers(0, 1 << 32)), int(rng.integers(0, 256)),
                            seq=_seq(rng))


def _repeat_items(rng, kind, max_burst):
    """The frames of a REPEAT_KINDS case (each its own item: the host waits for each answer)."""
    write = _valid_frame(rng, "write", max_burst)
    if rng.random() < 0.3:          # the register that counts writes shows a double write
        write = L.encode_request(P.CMD_WRITE, REG_WCOUNT, 1, _rand_words(rng, 1), seq=_seq(rng))
    if kind == "retry_write":
        return [write, write]
    if kind == "retry_after_bad":   # a payload or CRC bit flipped: the length stays, ERR_CRC
        bad = bytearray(write)
        pos = int(rng.integers(1 + P.REQUEST_HEADER_BYTES, len(bad)))
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        return [write, bytes(bad), write]
    return [write, _valid_frame(rng, "read", max_burst), write]


def apply_intended(want: TargetModel, frame: bytes) -> None:
    """What a valid frame does to the target, by the protocol: a WRITE repeating the last WRITE
    executed (same SEQ and CRC) is not applied; a READ or PING forgets it; a frame with a bad
    CRC changes nothing."""
    body = frame[frame.index(P.SYNC) + 1:]
    if P.crc16(body) != 0:
        return
    if body[P.REQ_CMD] != P.CMD_WRITE:
        want.last_write = None
        return
    key = (body[P.REQ_SEQ], body[-2:])
    if key == want.last_write:
        return
    addr = struct.unpack("<I", body[P.REQ_ADDR:P.REQ_ADDR + 4])[0]
    count = body[P.REQ_COUNT]
    start = P.REQUEST_HEADER_BYTES
    for i, w in enumerate(struct.unpack(f"<{count}I", body[start:start + 4 * count])):
        want.write(addr + i, w)
    want.last_write = key


def _bad_items(rng, kind, max_burst, max_len):
    cmd = P.CMD_WRITE if rng.random() < 0.6 else P.CMD_READ
    if kind == "garbage":
        return [_rand_bytes(rng, int(rng.integers(1, 48)))]
    if kind == "sync_storm":
        data = bytearray(_rand_bytes(rng, int(rng.integers(4, 40))))
        for i in rng.integers(0, len(data), int(rng.integers(1, 6))):
            data[i] = P.SYNC
        return [bytes(data)]
    if kind == "bitflip":
        original = _valid_frame(rng, "write" if cmd == P.CMD_WRITE else "read", max_burst)
        frame = bytearray(original)
        while frame == original:
            for _ in range(int(rng.integers(1, 3))):
                pos = int(rng.integers(1, len(frame)))
                frame[pos] ^= 1 << int(rng.integers(0, 8))
        return [bytes(frame)]
    if kind == "truncated":
        frame = _valid_frame(rng, str(rng.choice(["write", "read", "ping"])), max_burst)
        return [frame[:int(rng.integers(1, len(frame)))]]
    if kind == "cut_then_valid":        # a host that restarts mid-frame, with no pause
        cut = _valid_frame(rng, str(rng.choice(["write", "read", "ping"])), max_burst)
        return [cut[:int(rng.integers(1, len(cut)))] + _valid_frame(rng, "write", max_burst)]
    if kind == "wrong_count":
        addr, count = _valid_span(rng, max_burst)
        sent = max(0, count + int(rng.choice([-2, -1, 1, 2, 3])))
        declared = count
        return [L.encode_request(P.CMD_WRITE, addr, declared, _rand_words(rng, sent), seq=_seq(rng))]
    if kind == "too_long":
        count = max_burst + 1 if rng.random() < 0.3 else int(rng.integers(max_burst + 1, min(255, max_len) + 1))
        if cmd == P.CMD_WRITE:
            return [L.encode_request(P.CMD_WRITE, 0, count, _rand_words(rng, count), seq=_seq(rng))]
        return [L.encode_request(P.CMD_READ, 0, count, seq=_seq(rng))]
    if kind == "bad_cmd":
        bad = int(rng.choice([c for c in range(256) if c not in P.COMMANDS]))
        return [L.encode_request(bad, int(rng.integers(0, 256)), int(rng.integers(0, 256)),
                                 seq=_seq(rng))]
    if kind == "zero_count":
        return [L.encode_request(cmd, int(rng.integers(0, MEM_WORDS)), 0, seq=_seq(rng))]
    if kind == "bad_addr":
        count = int(rng.integers(1, max_burst + 1))
        if count > 1 and rng.random() < 0.5:
            addr = int(rng.integers((1 << ADDR_WIDTH) - count + 1, 1 << ADDR_WIDTH))
        else:
            addr = int(rng.integers(1 << ADDR_WIDTH, 1 << 32))
        words = _rand_words(rng, count) if cmd == P.CMD_WRITE else []
        return [L.encode_request(cmd, addr, count, words, seq=_seq(rng))]
    raise ValueError(kind)


def _run_items(model: DeviceModel, items) -> tuple[bytes, list[int]]:
    """Feed items; return the responses and, per bytes item, where responses happened."""
    out = []
    positions = []
    for item in items:
        if item is GAP:
            out.append(model.gap())
            continue
        for i, b in enumerate(item):
            rsp = model.feed_byte(b)
            if rsp:
                out.append(rsp)
                positions.append((i, len(item)))
    return b"".join(out), positions


def generate_cases(rng, n_cases: int, *, max_burst: int = 64, max_too_long: int = 255,
                   bad_fraction: float = 0.6, half_duplex: bool = False,
                   model: DeviceModel | None = None, intended: TargetModel | None = None):
    """``n_cases`` random cases; returns ``(cases, model, intended, rejected)``.

    ``half_duplex=True`` (the UART bench) rejects cases in which the link would
    answer before the last byte of a burst of bytes: a host sends more while the board
    answers only in WRITE groups (the bench's part 4), for which the receiver's FIFO is
    sized, not behind garbage or a READ.
    ``model`` / ``intended`` continue from an earlier call.
    """
    model = model or DeviceModel(TargetModel(), max_burst=max_burst)
    intended = intended or TargetModel()
    cases = []
    rejected = 0
    while len(cases) < n_cases:
        bad = rng.random() < bad_fraction
        kind = str(rng.choice(BAD_KINDS if bad else VALID_KINDS))
        if bad:
            items = _bad_items(rng, kind, max_burst, max_too_long) + [
                GAP, L.encode_request(P.CMD_PING, seq=_seq(rng))]
            frames = 3 if kind == "cut_then_valid" else 2
        elif kind in REPEAT_KINDS:
            items = _repeat_items(rng, kind, max_burst)
            frames = len(items)
        elif kind == "noise_then_valid":
            noise = bytes(b for b in _rand_bytes(rng, int(rng.integers(1, 16))) if b != P.SYNC)
            items = [noise + _valid_frame(rng, str(rng.choice(["write", "read"])), max_burst)]
            frames = 1
        else:
            items = [_valid_frame(rng, kind, max_burst)]
            frames = 1
        trial = model.clone()
        expect, positions = _run_items(trial, items)
        want = intended.clone()
        if bad:     # errors change nothing (a swallowed frame of cut_then_valid is rejected)
            want.last_write = trial.last_write
        else:
            for item in items:
                apply_intended(want, item)
            assert want.last_write == trial.last_write, (kind, want.last_write, trial.last_write)
        unsafe = half_duplex and any(i != n - 1 for i, n in positions)
        # A broken frame (not plain garbage) must have been answered with an error.
        missed = bad and kind not in GARBAGE_KINDS and not any(
            isinstance(r, L.Response) and r.is_error for r in L.ResponseDecoder().feed(expect))
        if trial.target != want or unsafe or missed or (bad and trial.in_frame):
            rejected += 1
            continue
        model, intended = trial, want
        cases.append(Case(kind, items, expect, frames))
    return cases, model, intended, rejected
