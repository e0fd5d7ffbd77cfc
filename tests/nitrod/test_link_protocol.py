"""The host side of the link (nitrod/link.py) in pure Python.

* it imports the contract only (not the gateware, not Amaranth);
* the CRC (check value, zero residue, agreement with a bit-serial statement of it);
* the response decoder under fuzz (garbage, corruption, arbitrary chunking);
* LinkClient against the reference device model (tests/support/benches/tb_host_link_model.py)
  used as a transport: round trips, burst splitting, error responses, CRC errors,
  timeouts, retries;
* the reference model against the generator's fuzz cases: one response per frame.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hw.contract import link as P
from nitrod import link as L
from tests.support.benches import tb_host_link_model as hm

# --------------------------------------------------------------------------- imports

def test_host_module_needs_no_gateware():
    """A host with only Python drives a board: the link client imports the contract, not the
    gateware, Amaranth or pyserial."""
    code = ("import sys, nitrod.link; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('amaranth', 'serial') "
            "or (m.startswith('hw.') and not m.startswith('hw.contract'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=Path(__file__).resolve().parents[2])


# --------------------------------------------------------------------------- CRC and framing

def _crc16_bit_serial(data, crc=P.CRC_INIT):
    """CRC-16/CCITT-FALSE as the spec states it: a 16-bit shift register, bytes fed most
    significant bit first, the polynomial XOR-ed in when the bit shifted out differs."""
    for byte in data:
        for bit in range(7, -1, -1):
            feedback = ((crc >> 15) & 1) ^ ((byte >> bit) & 1)
            crc = (crc << 1) & 0xFFFF
            if feedback:
                crc ^= P.CRC_POLY
    return crc


def test_crc_check_value_and_residue():
    assert P.crc16(b"123456789") == 0x29B1
    assert P.crc16(b"") == P.CRC_INIT
    rng = np.random.default_rng(1)
    for n in range(0, 300, 7):
        data = bytes(rng.integers(0, 256, n, dtype=np.uint8).tolist())
        c = P.crc16(data)
        assert c == _crc16_bit_serial(data)
        assert P.crc16(data + bytes([c >> 8, c & 0xFF])) == 0
        assert P.crc16(data[n // 2:], P.crc16(data[:n // 2])) == c


def test_request_layout():
    frame = L.encode_request(P.CMD_WRITE, 0x12345678, words=[0xAABBCCDD, 1], seq=0x3C)
    assert frame[:8] == bytes([0xA5, 0x02, 0x3C, 2, 0x78, 0x56, 0x34, 0x12])
    assert frame[8:16] == bytes([0xDD, 0xCC, 0xBB, 0xAA, 1, 0, 0, 0])
    crc = P.crc16(frame[1:16])
    assert frame[16:] == bytes([crc >> 8, crc & 0xFF]) and len(frame) == 18
    assert L.request_seq(frame) == 0x3C
    assert L.encode_request(P.CMD_READ, 5, 3) == L.encode_request(P.CMD_READ, 5, count=3)
    assert len(L.encode_request(P.CMD_PING)) == 1 + P.REQUEST_HEADER_BYTES + 2 == 10
    with pytest.raises(ValueError):
        L.encode_request(P.CMD_READ, 0, 256)
    with pytest.raises(ValueError):
        L.encode_request(P.CMD_READ, 0, 1, seq=256)
    assert P.PROTOCOL_VERSION == 3
    assert P.request_bytes(P.CMD_WRITE, 2) == len(frame) and P.request_bytes(P.CMD_READ, 9) == 10


def test_response_layout_and_decoder():
    frame = L.encode_response(P.RSP_DATA, P.CMD_READ, 2, [7, 0xFFFFFFFF], seq=0x99)
    assert frame[:5] == bytes([0xA5, 0x81, 0x03, 0x99, 2]) and len(frame) == 5 + 8 + 2
    assert L.ResponseDecoder().feed(frame) == [
        L.Response(P.RSP_DATA, P.CMD_READ, 2, (7, 0xFFFFFFFF), seq=0x99)]
    ack = L.encode_response(P.RSP_ACK, P.CMD_WRITE, 64, seq=7)
    assert len(ack) == 7 and L.ResponseDecoder().feed(ack)[0].count == 64


def _random_response(rng):
    kind = int(rng.choice([P.RSP_ACK, P.RSP_DATA, P.RSP_ERROR]))
    seq = int(rng.integers(0, 256))
    if kind == P.RSP_DATA:
        n = int(rng.integers(0, 20))
        words = [int(w) for w in rng.integers(0, 1 << 32, n, dtype=np.uint64)]
        return L.Response(kind, P.CMD_READ, n, tuple(words), seq)
    return L.Response(kind, int(rng.integers(0, 256)),
                      int(rng.integers(0, 256)) if kind == P.RSP_ACK else 0, (), seq)


def _encode(r):
    return L.encode_response(r.kind, r.info, r.count, r.words, seq=r.seq)


def _feed_in_chunks(decoder, data, rng):
    events = []
    pos = 0
    while pos < len(data):
        step = int(rng.integers(1, 40))
        events += decoder.feed(data[pos:pos + step])
        pos += step
    return events


def test_decoder_fuzz_garbage_between_frames():
    """Frames separated by garbage without sync bytes: all decoded, in order, whatever the chunking."""
    rng = np.random.default_rng(2)
    sent, stream = [], bytearray()
    for _ in range(3000):
        noise = bytes(b for b in rng.integers(0, 256, int(rng.integers(0, 12)), dtype=np.uint8).tolist()
                      if b != P.SYNC)
        r = _random_response(rng)
        sent.append(r)
        stream += noise + _encode(r)
    decoder = L.ResponseDecoder()
    assert _feed_in_chunks(decoder, bytes(stream), rng) == sent
    assert decoder.pending == 0


def test_decoder_fuzz_corruption():
    """Corrupted frames never come out as good ones; good frames after a sync-free gap survive."""
    rng = np.random.default_rng(3)
    for _ in range(2000):
        r = _random_response(rng)
        frame = bytearray(_encode(r))
        for _ in range(int(rng.integers(1, 4))):
            frame[int(rng.integers(1, len(frame)))] ^= 1 << int(rng.integers(0, 8))
        good = _random_response(rng)
        decoder = L.ResponseDecoder()
        events = decoder.feed(bytes(frame) + bytes(8) + _encode(good))
        events += decoder.feed(bytes(1100))  # zeros complete any frame with a corrupted count
        goods = [e for e in events if isinstance(e, L.Response)]
        for e in goods:
            assert P.crc16(_encode(e)[1:]) == 0
        assert goods and goods[-1] == good      # resynchronised on the good frame
    for _ in range(300):     # pure garbage, sync bytes included: no exception, decoder stays usable
        garbage = bytes(rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8).tolist())
        decoder = L.ResponseDecoder()
        decoder.feed(garbage)
        decoder.feed(bytes(1100))
        assert decoder.feed(_encode(L.Response(P.RSP_ACK, 2, 1)))[-1] == L.Response(P.RSP_ACK, 2, 1)


# --------------------------------------------------------------------------- client

class ModelTransport:
    """The reference device model behind a pyserial-like interface.

    A short read means "the serial timeout expired": the model then sees an
    idle gap (a frame cut short times out).  ``corrupt`` flips bits of the
    response bytes at the given indices (counted over all bytes sent back);
    ``drop_writes`` loses the tail of the next n writes (half the frame);
    ``lose_responses`` loses the whole answers to the writes with these indices (counted from
    0 over all writes), ``repeat_responses`` sends those answers twice, ``cut_writes`` loses
    the tail of the writes with these indices.  ``reads`` counts the reads and ``log`` the
    calls in order (``"w"``, ``"r"``).
    """

    def __init__(self, device, corrupt=(), drop_writes=0, lose_responses=(),
                 repeat_responses=(), cut_writes=()):
        self.device = device
        self.cut_writes = set(cut_writes)
        self.log = []
        self.out = bytearray()
        self.sent_back = 0
        self.corrupt = set(corrupt)
        self.drop_writes = drop_writes
        self.lose_responses = set(lose_responses)
        self.repeat_responses = set(repeat_responses)
        self.writes = 0

    def write(self, data):
        index = self.writes
        self.writes += 1
        self.log.append("w")
        if self.drop_writes or index in self.cut_writes:
            self.drop_writes = max(0, self.drop_writes - 1)
            data = data[:len(data) // 2]
        answer = self.device.feed(data)
        if index in self.lose_responses:
            return len(data)
        if index in self.repeat_responses:
            answer += answer
        for b in answer:
            if self.sent_back in self.corrupt:
                b ^= 0x10
            self.out.append(b)
            self.sent_back += 1
        return len(data)

    def read(self, n):
        self.log.append("r")
        if len(self.out) < n:
            self.out += self.device.gap()
        chunk = bytes(self.out[:n])
        del self.out[:n]
        return chunk


def make_client(**kw):
    transport_kw = {k: kw.pop(k) for k in ("corrupt", "drop_writes", "lose_responses",
                                           "repeat_responses", "cut_writes") if k in kw}
    device = hm.DeviceModel(hm.TargetModel(), max_burst=kw.get("max_burst", 64))
    transport = ModelTransport(device, **transport_kw)
    return L.LinkClient(transport, **kw), device, transport


def test_client_round_trip_and_burst_split():
    client, device, transport = make_client(max_burst=16)
    rng = np.random.default_rng(4)
    words = [int(w) for w in rng.integers(0, 1 << 32, 200, dtype=np.uint64)]
    client.write_words(10, words)
    assert transport.writes == 13                       # ceil(200 / 16) WRITEs
    assert device.target.mem[10:210] == words
    assert client.read_words(10, 200) == words
    client.write_word(hm.REG_CTRL, 0x5A)
    assert client.read_word(hm.REG_ID) == hm.ID_VALUE
    info = client.ping()
    assert info == L.LinkInfo(version=P.PROTOCOL_VERSION, max_burst=16, error_count=0, status=0x5A)
    assert client.status() == 0x5A
    client.write_words(0, [])                            # nothing to do
    assert client.read_words(0, 0) == []


def test_client_error_responses():
    client, device, _ = make_client()
    with pytest.raises(L.LinkErrorResponse) as err:
        client.read_words((1 << hm.ADDR_WIDTH) - 1, 2)
    assert err.value.code == P.ERR_ADDRESS and "address" in str(err.value)
    with pytest.raises(L.LinkErrorResponse) as err:
        client.transact(L.encode_request(0x7E, 0, 1))
    assert err.value.code == P.ERR_COMMAND
    with pytest.raises(L.LinkErrorResponse) as err:
        client.transact(L.encode_request(P.CMD_READ, 0, 65))
    assert err.value.code == P.ERR_LENGTH
    frame = bytearray(L.encode_request(P.CMD_WRITE, 0, 1, [123]))
    frame[-1] ^= 1
    with pytest.raises(L.LinkErrorResponse) as err:
        client.transact(bytes(frame))
    assert err.value.code == P.ERR_CRC and device.target.mem[0] == 0
    assert client.ping().error_count == 4


def test_client_crc_error_timeout_and_retry():
    client, device, _ = make_client(corrupt=[2])        # the first response's INFO byte
    with pytest.raises(L.LinkCrcError):
        client.ping()
    assert client.ping().version == P.PROTOCOL_VERSION   # the link is fine afterwards

    client, device, _ = make_client(drop_writes=1)      # first request cut in half
    with pytest.raises(L.LinkErrorResponse) as err:
        client.write_words(0, [1, 2, 3])
    assert err.value.code == P.ERR_TIMEOUT and device.target.mem[:3] == [0, 0, 0]

    client, device, _ = make_client(drop_writes=1, retries=2)
    client.write_words(0, [1, 2, 3])
    assert device.target.mem[:3] == [1, 2, 3]
    client, device, _ = make_client(corrupt=[5], retries=1)
    assert client.read_words(0, 2) == [0, 0]

    class Silent:
        def write(self, data):
            return len(data)

        def read(self, n):
            return b""

    with pytest.raises(L.LinkTimeout):
        L.LinkClient(Silent()).ping()

    class Chatty(Silent):
        def read(self, n):
            return bytes(n)

    with pytest.raises(L.LinkProtocolError):
        L.LinkClient(Chatty()).ping()


def test_a_retried_write_is_applied_once():
    """The answer to a WRITE is lost after the device executed it: the client retries with the
    same SEQ and the device answers without writing again.  The register that counts writes
    shows one write (two if the device executed the repetition), and a memory word written the
    same way reads back as written."""
    client, device, transport = make_client(retries=2, lose_responses=[0])
    client.write_word(hm.REG_WCOUNT, 1234)
    assert transport.writes == 2 and client.stats["retries"] == 1 == client.stats["recovered"]
    assert device.repeats == 1
    assert client.read_word(hm.REG_WCOUNT) == 1 == device.target.wcount
    client.write_word(hm.REG_WCOUNT, 1234)      # a new request (new SEQ) is a new write
    assert client.read_word(hm.REG_WCOUNT) == 2

    client, device, transport = make_client(retries=3, lose_responses=[0, 1, 2])
    client.write_words(40, [7, 8, 9])
    assert transport.writes == 4 and device.repeats == 3
    assert client.read_words(40, 3) == [7, 8, 9]

    # a response CRC error on the ACK (INFO byte of the first answer), then the retry
    client, device, _ = make_client(retries=1, corrupt=[2])
    client.write_word(hm.REG_WCOUNT, 5)
    assert device.target.wcount == 1 and client.stats["crc_errors"] == 1


def test_a_read_between_makes_the_same_write_new():
    """What the device remembers is the last request: after a READ, a WRITE with the same SEQ and
    bytes is executed (the host gives every new request a new SEQ anyway)."""
    device = hm.DeviceModel(hm.TargetModel())
    frame = L.encode_request(P.CMD_WRITE, hm.REG_WCOUNT, 1, [0], seq=9)
    read = L.encode_request(P.CMD_READ, hm.REG_WCOUNT, 1, seq=10)
    for f in (frame, frame, read, frame):
        device.feed(f)
    assert device.target.wcount == 2 and device.repeats == 1
    bad = bytearray(frame)
    bad[-1] ^= 1                        # an ERROR between does not make the device forget
    answers = L.ResponseDecoder().feed(device.feed(bytes(bad)) + device.feed(frame))
    assert [a.kind for a in answers] == [P.RSP_ERROR, P.RSP_ACK] and device.target.wcount == 2
    assert answers[1].seq == 9


def test_late_answers_are_skipped_by_sequence_number():
    """An answer that arrives twice: the copy left in the input is a late answer for the next
    request (another SEQ) and is skipped, not taken for its answer."""
    client, device, _ = make_client(repeat_responses=[0])
    client.write_words(0, [11, 12])
    assert client.read_words(0, 2) == [11, 12]
    assert client.stats["stale_responses"] == 1


def test_drain_is_bounded_against_a_device_that_keeps_sending():
    """A device that never stops sending (zeros, or the same stale answer again and again):
    the retrying client gives up with a LinkError in bounded time, it does not hang."""
    import time

    class Chatty:
        def __init__(self, data):
            self.data = data

        def write(self, data):
            return len(data)

        def read(self, n):
            return (self.data * (n // len(self.data) + 1))[:n]

    stale = L.encode_response(P.RSP_ACK, P.CMD_WRITE, 1, seq=200)
    for data in (bytes(1), stale):
        client = L.LinkClient(Chatty(data), retries=2, first_seq=0, drain_seconds=0.2)
        t0 = time.monotonic()
        with pytest.raises(L.LinkError):
            client.write_word(0, 1)
        assert time.monotonic() - t0 < 5
        assert client.stats["retries"] == 2 and client.stats["drained_bytes"] > 0


# --------------------------------------------------------------------------- groups (protocol 3)

def test_burst_spans():
    """Bursts split at max_burst; aligned, every frame but the last ends on a multiple of the
    alignment, so no word of up to 16 chunks is split between frames."""
    assert list(L.burst_spans(5, 10, 4)) == [(0, 5, 4), (4, 9, 4), (8, 13, 2)]
    assert list(L.burst_spans(0, 0, 4)) == []
    for addr, n, mb in ((0x200000, 25088, 255), (0x300003, 999, 64), (7, 40, 255), (1, 30, 8)):
        spans = list(L.burst_spans(addr, n, mb, P.BURST_ALIGN))
        assert [a for _, a, _ in spans] == [addr + o for o, _, _ in spans]
        assert sum(k for _, _, k in spans) == n and all(0 < k <= mb for _, _, k in spans)
        assert all((a + k) % P.BURST_ALIGN == 0 for _, a, k in spans[:-1]) or mb < P.BURST_ALIGN
    assert [k for _, _, k in L.burst_spans(0, 600, 255, 16)] == [240, 240, 120]


def _words(n, seed=3):
    rng = np.random.default_rng(seed)
    return [int(w) for w in rng.integers(0, 1 << 32, n, dtype=np.uint64)]


def test_posted_writes_go_back_to_back_and_are_acknowledged_at_the_next_request():
    client, device, transport = make_client(max_burst=16)
    words = _words(100)
    client.post_words(3, words)
    frames = [k for _, _, k in L.burst_spans(3, 100, 16, P.BURST_ALIGN)]
    assert frames == [13, 16, 16, 16, 16, 16, 7] and client.posted == 7
    assert transport.log == ["w"] * 7                  # nothing read yet
    assert device.target.mem[3:103] == words           # the device took them all
    assert client.read_words(3, 100) == words          # flushes first: 7 ACKs, then the READ
    assert client.posted == 0 and client.stats["posted"] == 7 and not client.stats["retries"]
    client.post_words(0, [1])
    client.flush()
    client.flush()                                     # nothing left: no read
    assert transport.log[-1] == "r" and device.target.mem[0] == 1


@pytest.mark.parametrize("fault", ["cut", "lost_ack", "corrupt_ack"])
def test_a_group_is_sent_again_from_its_first_unacknowledged_frame(fault):
    """A frame of a group cut short (the device eats into the next frames), an ACK lost after
    the device executed the frame, an ACK corrupted: the client sends the group again from the
    first frame without an ACK, in order, and the memory holds every word once."""
    kw = {"cut": {"cut_writes": [2]}, "lost_ack": {"lose_responses": [2]},
          "corrupt_ack": {"corrupt": [2 * 7 + 3]}}[fault]
    client, device, transport = make_client(max_burst=8, retries=2, **kw)
    words = _words(60, seed=8)
    client.post_words(hm.MEM_WORDS - 64, words)       # 8 frames of 8 (aligned), the last 4
    client.flush()
    assert client.stats["retries"] == 1 and client.stats["resent"] >= 6
    assert client.stats["recovered"] >= 1
    assert device.target.mem[hm.MEM_WORDS - 64:hm.MEM_WORDS - 4] == words
    assert client.read_words(hm.MEM_WORDS - 64, 60) == words


def test_a_group_error_a_retry_cannot_cure_is_raised():
    client, device, _ = make_client(retries=3)
    client.post_words((1 << hm.ADDR_WIDTH) - 2, [1, 2, 3])      # beyond the address space
    with pytest.raises(L.LinkErrorResponse) as err:
        client.flush()
    assert err.value.code == P.ERR_ADDRESS and not client.stats["retries"]
    client, device, _ = make_client(retries=1, cut_writes=[0, 1])     # cut twice: gives up
    client.post_words(0, [1, 2])
    with pytest.raises(L.LinkTimeout, match="after 1 retries"):
        client.flush()


def test_link_bus_posts_memory_writes_only():
    """LinkBus posts memory writes and waits for the ACK of a register's (CONTROL starts the
    core: it must not overtake the writes before it, nor be applied again by a group's
    retry)."""
    from hw.contract import REGION_SHIFT, Reg, Region
    from nitrod.backends import LinkBus

    regs, act = int(Reg.CONTROL), int(Region.ACT) << REGION_SHIFT
    assert not LinkBus.posts(regs) and LinkBus.posts(act)
    calls = []

    class Client:
        def post_words(self, addr, words):
            calls.append(("post", addr))

        def write_words(self, addr, words):
            calls.append(("write", addr))

    LinkBus(Client()).write(act, [1])
    LinkBus(Client()).write(regs, [1])
    LinkBus(Client(), pipelined=False).write(act, [1])
    assert calls == [("post", act), ("write", regs), ("write", act)]


# --------------------------------------------------------------------------- model fuzz

def test_model_fuzz_every_frame_answered():
    """Generator cases on the model: every frame answered (garbage only when it holds a
    sync byte), every broken case ends with a good PING answer, and the target holds
    the valid WRITEs only."""
    rng = np.random.default_rng(5)
    cases, device, intended, _ = hm.generate_cases(rng, 3000)
    assert device.target == intended
    assert device.repeats > 100          # retried WRITEs answered without writing
    decoder = L.ResponseDecoder()
    for case in cases:
        responses = decoder.feed(case.expect)
        assert all(isinstance(r, L.Response) for r in responses), case
        if case.kind in ("garbage", "sync_storm"):      # answered only if a sync byte started a frame
            assert any(r.is_error for r in responses) == (P.SYNC in case.items[0]), case
        elif case.kind == "cut_then_valid":       # the valid frame may be swallowed by the cut one
            assert len(responses) >= 2 and any(r.is_error for r in responses), case
        elif case.kind in hm.BAD_KINDS:
            assert len(responses) >= case.frames and any(r.is_error for r in responses), case
            last = responses[-1]
            assert (last.kind, last.info, last.count) == (P.RSP_DATA, P.CMD_PING, 2), case
        elif case.kind in hm.REPEAT_KINDS:
            assert len(responses) == case.frames, case
            assert responses[0] == responses[-1] and responses[0].kind == P.RSP_ACK, case
            assert [r.seq for r in responses] == [L.request_seq(f) for f in case.items], case
        else:
            assert len(responses) == 1 and not responses[0].is_error, case
    assert decoder.pending == 0 and decoder.skipped == 0
