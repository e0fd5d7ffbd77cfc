"""`nitrod board train` over a link that fails: one line naming the port and what went wrong,
never a traceback; --baud, --timeout and --retries reach the serial port and the client."""

from __future__ import annotations

import pytest

from hw.contract import link as P
from nitrod import link as L
from nitrod.cli import main

PORT = "/dev/ttyFAKE0"
ARGS = ["board", "train", "--dataset", "digits", "--port", PORT, "--epochs", "1", "--quiet"]


class FakePort:
    """A serial port whose device answers every request with ``answer(frame) -> bytes``."""

    opened = []

    def __init__(self, answer):
        self.answer = answer
        self.pending = bytearray()
        self.writes = 0
        self.closed = False

    def write(self, data):
        self.writes += 1
        self.pending += self.answer(bytes(data))
        return len(data)

    def read(self, n):
        chunk = bytes(self.pending[:n])
        del self.pending[:n]
        return chunk

    def close(self):
        self.closed = True


def _seq(frame):
    return L.request_seq(frame)


BEHAVIOURS = {
    "silence": (lambda f: b"", "timeout waiting for a response"),
    "garbage": (lambda f: bytes(range(0x10, 0x40)) * 3, "timeout"),
    "bad CRC": (lambda f: L.encode_response(P.RSP_DATA, P.CMD_PING, 2, [2, 0], seq=_seq(f))[:-1]
                + b"\x00", "CRC error"),
    "error response": (lambda f: L.encode_response(P.RSP_ERROR, P.ERR_COMMAND, seq=_seq(f)),
                       "error 0x02 (unknown command)"),
    "wrong kind": (lambda f: L.encode_response(P.RSP_ACK, P.CMD_WRITE, 1, seq=_seq(f)),
                   "unexpected answer to PING"),
    "old protocol": (lambda f: L.encode_response(P.RSP_DATA, P.CMD_PING, 2, [1 | 64 << 8, 0],
                                                 seq=_seq(f)), "speaks link protocol 1"),
}


@pytest.mark.parametrize("name", list(BEHAVIOURS))
def test_link_failures_end_in_one_line(name, monkeypatch, capsys, tmp_path):
    answer, msg = BEHAVIOURS[name]
    ports = []

    def open_serial(port, baud, timeout):
        ports.append(FakePort(answer))
        return ports[-1]

    monkeypatch.setattr(L, "open_serial", open_serial)
    assert main(ARGS + ["--retries", "2", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith(f"nitrod: the link to {PORT} failed:") and msg in err[0], err
    transient = name in ("silence", "garbage", "bad CRC")
    assert ports[0].writes == (3 if transient else 1), name      # the PING and 2 retries
    assert ports[0].closed


def test_baud_timeout_and_retries_reach_the_port(monkeypatch, capsys, tmp_path):
    seen = {}

    def open_serial(port, baud, timeout):
        seen.update(port=port, baud=baud, timeout=timeout)
        return FakePort(lambda f: b"")

    monkeypatch.setattr(L, "open_serial", open_serial)
    assert main(ARGS + ["--baud", "921600", "--timeout", "0.05", "--retries", "4",
                        "--out", str(tmp_path / "r")]) == 1
    assert seen == {"port": PORT, "baud": 921600, "timeout": 0.05}
    assert "after 4 retries" in capsys.readouterr().err


@pytest.mark.parametrize("extra, baud", [
    ([], P.DEFAULT_BAUD), (["--board", "icebreaker"], 3_000_000),
    (["--board", "ulx3s-85f"], 3_000_000), (["--board", "orangecrab-85f"], 1_000_000),
    (["--board", "orangecrab-85f", "--baud", "115200"], 115200)])
def test_the_baud_rate_is_the_boards(extra, baud, monkeypatch, capsys, tmp_path):
    """Without --baud the port opens at --board's bitstream rate (boards/boards.py), without
    --board at the default, the rate of the boards with a USB-serial bridge."""
    seen = {}

    def open_serial(port, baud, timeout):
        seen["baud"] = baud
        return FakePort(lambda f: b"")

    monkeypatch.setattr(L, "open_serial", open_serial)
    assert main(ARGS + extra + ["--retries", "0", "--out", str(tmp_path / "r")]) == 1
    assert seen == {"baud": baud}
    assert P.DEFAULT_BAUD == 3_000_000


def test_an_unknown_board_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(ARGS + ["--board", "de10-nano"])
    assert "unknown board 'de10-nano'" in capsys.readouterr().err
