"""A training run over a link that loses, corrupts and duplicates bytes: the soak.

* :class:`FaultyLine` -- wraps any byte transport (``write(frame)``, ``read(n)``): each request
  frame, and the response that follows it, is hit with probability ``rate`` by one to three
  faults (a bit flipped, a byte dropped, a byte duplicated) or, with ``lose_rate``, lost whole
  (a lost response is the lost ACK of a WRITE the device did execute).  It counts frames,
  corrupted frames and faults by kind.
* :class:`MachineBus` -- the host bus of a trainer core (registers, memories in 32-bit chunks,
  PROG, START) over nitrod/isa_model.py's IsaMachine: a Trainer without gateware, so that the
  reference device model of the link (tb_host_link_model.DeviceModel) can stand for a board.
* :class:`DeviceLine` -- the reference device model as a transport (a short read is a timeout:
  the device sees the line go quiet and answers a cut frame with ERR_TIMEOUT).
* :func:`run_soak` -- trains an MLP on digits through ``LinkClient`` (with retries) over a
  FaultyLine over either the reference model (fast: 100,000 frames in minutes) or any other
  transport (the Verilator UART of tests/sim), and compares every weight and the history with
  golden's training of the same run.
"""

from __future__ import annotations

import collections
import time

import numpy as np

from hw.contract import (GEOMETRY_REGISTERS, MAGIC, OVERFLOW_BITS, REGION_SHIFT, STATUS_BITS,
                         BUS_ADDR_WIDTH, Control, Geometry, Reg, Region, chunk_bits_of,
                         chunks_of)
from nitrod.isa_model import IsaError, IsaMachine
from tests.support.benches import tb_host_link_model as hm

FAULTS = ("flip", "drop", "dup")


class FaultyLine:
    """A transport that corrupts frames on their way (see the module docstring)."""

    def __init__(self, inner, rng, rate: float, lose_rate: float = 0.0):
        self.inner, self.rng = inner, rng
        self.rate, self.lose_rate = rate, lose_rate
        self.requests = 0
        self.corrupted_requests = 0
        self.corrupted_responses = 0
        self.faults = collections.Counter()
        self._plan = []            # faults for the response to the last request: (offset, kind)
        self._hit = False          # the response to the last request has been corrupted
        self._rx = 0               # response bytes seen since the last request
        self._losing = False
        self._buf = bytearray()

    def _faults(self):
        return [FAULTS[int(self.rng.integers(len(FAULTS)))]
                for _ in range(int(self.rng.integers(1, 4)))]

    def write(self, data):
        data = bytearray(data)
        self.requests += 1
        self._buf.clear()
        if self.rng.random() < self.rate:
            self.corrupted_requests += 1
            for kind in self._faults():
                self.faults["request " + kind] += 1
                pos = int(self.rng.integers(1, len(data)))
                if kind == "flip":
                    data[pos] ^= 1 << int(self.rng.integers(8))
                elif kind == "drop":
                    del data[pos]
                else:
                    data.insert(pos, data[pos])
        # the response's faults, decided now: where in it (its first 24 bytes) and what
        self._rx, self._losing, self._plan, self._hit = 0, False, [], False
        r = self.rng.random()
        if r < self.lose_rate:
            self._losing = True
            self.corrupted_responses += 1
            self.faults["response lost"] += 1
        elif r < self.lose_rate + self.rate:
            # within the shortest response (SYNC, 4 header bytes, CRC: 7 bytes), so applied
            self._plan = sorted((int(self.rng.integers(1, 7)), k) for k in self._faults())
        self.inner.write(bytes(data))
        return len(data)

    def _corrupt(self, chunk: bytes) -> bytes:
        if self._losing:
            self._rx += len(chunk)
            return b""
        out = bytearray()
        for b in chunk:
            if self._plan and self._plan[0][0] == self._rx and not self._hit:
                self._hit = True
                self.corrupted_responses += 1
            while self._plan and self._plan[0][0] == self._rx:
                kind = self._plan.pop(0)[1]
                self.faults["response " + kind] += 1
                if kind == "flip":
                    b ^= 1 << int(self.rng.integers(8))
                elif kind == "dup":
                    out.append(b)
                else:
                    b = None
                    self._plan = [(o, k) for o, k in self._plan if o != self._rx]
                    break
            self._rx += 1
            if b is not None:
                out.append(b)
        return bytes(out)

    def read(self, n):
        while len(self._buf) < n:
            chunk = self.inner.read(n - len(self._buf))
            if not chunk:
                break
            self._buf += self._corrupt(chunk)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    @property
    def frames(self) -> int:
        """Request frames sent and the responses they asked for."""
        return 2 * self.requests

    @property
    def corrupted(self) -> int:
        return self.corrupted_requests + self.corrupted_responses

    def close(self):
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()

    def __getattr__(self, name):           # idle(), stats() of a simulated line
        return getattr(self.inner, name)


class MachineBus:
    """A trainer core's host bus over IsaMachine: what tb_host_link_model.DeviceModel drives.

    Registers as hw/contract/registers.py (ID, CONTROL: START runs the program at once, CLEAR
    clears the flags; STATUS, OVERFLOW, CYCLES (here: the program's beats), RETIRED,
    PROG_START, the geometry, MACS); memories in ``ceil(width/32)`` chunks per word, the last
    chunk written committing the word; an access beyond a memory sets STATUS.access_error."""

    def __init__(self, geometry: Geometry):
        self.geometry = g = geometry
        self.machine = IsaMachine(g)
        self.prog = [0] * g.prog_depth
        self.staged = collections.defaultdict(dict)
        self.status_bits = {"done": False, "op_error": False, "access_error": False}
        self.cycles = self.retired = self.prog_start = 0
        self.writes = 0

    @property
    def status(self) -> int:
        return sum(1 << STATUS_BITS[k] for k, v in self.status_bits.items() if v)

    def _decode(self, addr):
        region, offset = addr >> REGION_SHIFT, addr & ((1 << REGION_SHIFT) - 1)
        try:
            region = Region(region)
        except ValueError:
            return None
        if region == Region.REGS:
            return region, offset, 0
        bits = self.geometry.word_bits(region)
        cb = chunk_bits_of(bits)
        word, chunk = offset >> cb, offset & ((1 << cb) - 1)
        if word >= self.geometry.depth(region):
            self.status_bits["access_error"] = True
            return None
        if chunk >= chunks_of(bits):        # the unused chunk addresses of a word: 0
            return None
        return region, word, chunk

    def _word(self, region, word) -> int:
        if region == Region.PROG:
            return self.prog[word]
        return int(self.machine.read_words(region, word, 1)[0])

    def read(self, addr: int) -> int:
        where = self._decode(addr)
        if where is None:
            return 0
        region, word, chunk = where
        if region == Region.REGS:
            regs = {Reg.ID: MAGIC, Reg.STATUS: self.status, Reg.CYCLES: self.cycles,
                    Reg.RETIRED: self.retired, Reg.PROG_START: self.prog_start,
                    Reg.MACS: self.geometry.side ** 2,
                    Reg.OVERFLOW: sum(1 << OVERFLOW_BITS[k]
                                      for k, v in self.machine.overflow.items() if v)}
            regs.update({r: getattr(self.geometry, f) for r, f in GEOMETRY_REGISTERS.items()})
            return int(regs.get(word, 0)) & 0xFFFFFFFF
        return (self._word(region, word) >> (32 * chunk)) & 0xFFFFFFFF

    def write(self, addr: int, value: int) -> None:
        self.writes += 1
        where = self._decode(addr)
        if where is None:
            return
        region, word, chunk = where
        if region == Region.REGS:
            if word == Reg.CONTROL:
                if value & Control.CLEAR:
                    self.status_bits.update(op_error=False, access_error=False)
                    self.machine.clear_overflow()
                if value & Control.START:
                    self._run()
            elif word == Reg.PROG_START:
                self.prog_start = value
            return
        staged = self.staged[region]
        staged[chunk] = value
        if chunk == chunks_of(self.geometry.word_bits(region)) - 1:
            packed = sum(staged.get(c, 0) << (32 * c) for c in range(chunk + 1))
            staged.clear()
            if region == Region.PROG:
                self.prog[word] = packed
            else:
                self.machine.write_words(region, word, [packed])

    def _run(self) -> None:
        try:
            stats = self.machine.run(self.prog, self.prog_start)
        except (IsaError, IndexError):
            self.status_bits["op_error"] = True
            return
        self.cycles, self.retired = stats.beats, stats.retired
        self.status_bits["done"] = True


class DeviceLine:
    """The reference device model (over a MachineBus) as a byte transport."""

    def __init__(self, bus: MachineBus, max_burst: int = 64):
        self.device = hm.DeviceModel(bus, max_burst=max_burst, addr_width=BUS_ADDR_WIDTH)
        self.out = bytearray()
        self.responses = 0

    def write(self, data):
        answer = self.device.feed(data)
        self.out += answer
        return len(data)

    def read(self, n):
        if len(self.out) < n:
            self.out += self.device.gap()        # the line went quiet: a cut frame times out
        chunk = bytes(self.out[:n])
        del self.out[:n]
        return chunk


def soak_geometry() -> Geometry:
    """A 4 x 4 Trainer's geometry with memories for the digits MLP at batch 64."""
    return Geometry(side=4)


def run_soak(*, epochs: int = 1, hidden=(16,), rate: float = 0.02, lose_rate: float = 0.005,
             seed: int = 1, retries: int = 8, line=None, geometry: Geometry | None = None,
             max_burst: int = 64, log=None) -> dict:
    """Train digits (MLP ``hidden``) for ``epochs`` through a FaultyLine over ``line`` (default:
    the reference device model over a MachineBus) and golden's trainer; return the figures and
    whether every weight and the history are equal."""
    from golden.datasets import load_dataset
    from golden.network import NetworkSpec
    from golden.train import TrainConfig, train
    from nitrod.backends import AcceleratorBackend, LinkBus
    from nitrod.link import LinkClient

    ds = load_dataset("digits")
    spec = NetworkSpec(ds.input_shape, ds.classes, tuple(f"l{h}" for h in hidden))
    cfg = TrainConfig(epochs=epochs, seed=seed, track_ranges=False)
    geometry = geometry or soak_geometry()
    inner = line if line is not None else DeviceLine(MachineBus(geometry), max_burst)
    faulty = FaultyLine(inner, np.random.default_rng([seed, 99]), rate, lose_rate)
    client = LinkClient(faulty, max_burst=max_burst, retries=retries, first_seq=0,
                        drain_seconds=1.0)
    t0 = time.monotonic()
    backend = AcceleratorBackend(LinkBus(client), spec, batch=cfg.batch, seed=seed)
    quiet = log or (lambda s: None)
    got = train(ds, spec, cfg, progress=False, log=quiet, backend=backend)
    seconds = time.monotonic() - t0
    want = train(ds, spec, cfg, progress=False, log=lambda s: None)
    gw, ww = got.network.weights(), want.network.weights()
    same = (all(np.array_equal(gw[k], ww[k]) for k in ww)
            and got.metrics["history"] == want.metrics["history"])
    stats = client.stats
    return {
        "epochs": epochs, "steps": epochs * -(-len(ds.x_train) // cfg.batch),
        "network": f"64-{'-'.join(map(str, hidden))}-10", "seconds": round(seconds, 1),
        "frames": faulty.frames, "requests": faulty.requests,
        "corrupted_frames": faulty.corrupted,
        "corrupted_percent": round(100 * faulty.corrupted / max(1, faulty.frames), 2),
        "faults": dict(sorted(faulty.faults.items())), "faults_total": sum(faulty.faults.values()),
        "retries": stats["retries"], "recovered_requests": stats["recovered"],
        "timeouts": stats["timeouts"], "crc_errors": stats["crc_errors"],
        "error_responses": stats["error_responses"], "stale_responses": stats["stale_responses"],
        "no_sync": stats["no_sync"],
        "repeated_writes_not_applied": getattr(getattr(inner, "device", None), "repeats", None),
        "bit_exact": bool(same),
        "final_test_accuracy": got.metrics["final_test_accuracy"],
    }
