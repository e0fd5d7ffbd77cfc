"""The host link's cost: the bytes a training step and an epoch move over the UART, and the time.

**The bus operations are the backend's own.**  :class:`LinkCostModel` opens an
:class:`nitrod.backends.AcceleratorBackend` on a :class:`RecordingBus` (a stand-in core that
answers the registers the backend reads and records every write, read and wait) and runs
``train_step`` and ``weights`` on it: the writes of the batch (``Plan.pack_batch``: both
layouts of the input, 9-bit lanes in 32-bit chunks, the labels), the program when it changes,
PROG_START and START, the wait for the end, STATUS, OVERFLOW, CYCLES and the predictions read
back.  Whatever the backend does, the model counts.

**The frames are the link's** (hw/contract/link.py; the splitting is nitrod/link.py's
:func:`nitrod.link.burst_spans`, the posting rule :meth:`nitrod.backends.LinkBus.posts`): a
request is ``SYNC + 7 header bytes [+ 4 per WRITE word] + 2 CRC``, a response
``SYNC + 4 [+ 4 per DATA word] + 2``; bursts longer than the board's ``max_burst`` are split;
with ``pipelined`` (protocol 3) memory writes go as groups of frames back to back, frames
ending on multiples of ``BURST_ALIGN``, at most ``MAX_GROUP_FRAMES`` outstanding.  Each byte is
10 bits on the line (8N1).  The wait is ``polls`` one-word READs of STATUS: how many depends on
how long the core runs and on the host's poll interval, so the byte count takes it as an
argument (``Traffic`` of a step with ``polls=k``: exact; :func:`tests` compare it with the bytes
a simulated UART carried).

**The time** (an estimate built on the exact bytes): requests and responses one after the
other, each frame's line time at ``baud`` (a group: its requests back to back, then its last
ACK), plus ``latency_s`` per round trip (a USB bridge's; 0: the line alone) and the board's
commit of a WRITE (2 cycles a word, where the host waits for it); then the core's run
(``cycles / clock``), during which the polls cost nothing, and the poll that finds it done:
on average half a poll period after the end plus one poll's round trip.  An epoch is its full
steps, the partial last one (the program is written again for it and for the next epoch's
first step) and, if the host reads them (``nitrod sim``/``board train`` score the test split
after each epoch), the weights read once.

What it would save to send each step's input once, as bytes (the cores would build the other
layout and the 9-bit lanes; not built): :meth:`LinkCostModel.inputs_as_bytes`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from hw.contract import (GEOMETRY_REGISTERS, MAGIC, REGION_SHIFT, Geometry, Reg, Region,
                         chunk_bits_of)
from hw.contract.link import (BITS_PER_BYTE, BURST_ALIGN, CMD_READ, CMD_WRITE, DEFAULT_BAUD,
                              MAX_GROUP_FRAMES, REQ_ADDR, REQ_CMD, REQ_COUNT, RSP_ACK, RSP_DATA,
                              SYNC, request_bytes, response_bytes)

from .link import burst_spans

__all__ = ["RecordingBus", "LinkSettings", "Traffic", "LinkCostModel", "frames_traffic",
           "LineMeter", "POLL_BYTES", "COMMIT_CYCLES_PER_WORD"]

#: A poll: a READ of one word (STATUS) and its DATA response.
POLL_BYTES = request_bytes(CMD_READ, 1) + response_bytes(RSP_DATA, 1)
#: The HostLink commits a WRITE's words to the bus at 2 cycles a word (hw/link/host_link.py).
COMMIT_CYCLES_PER_WORD = 2


class RecordingBus:
    """A stand-in core's bus for the cost model: answers ID, the geometry registers, MACS and
    CYCLES (``cycles``); everything else reads 0 (STATUS: idle, no error).  Records every
    operation as ``("write", addr, n)``, ``("read", addr, n)`` or ``("wait", addr, 0)``."""

    def __init__(self, geometry: Geometry, macs: int = 1, cycles: int = 0):
        regs = {int(r): int(getattr(geometry, f)) for r, f in GEOMETRY_REGISTERS.items()}
        regs.update({int(Reg.ID): MAGIC, int(Reg.MACS): int(macs), int(Reg.CYCLES): int(cycles)})
        self.registers = regs
        self.ops: list[tuple[str, int, int]] = []

    def take(self) -> list[tuple[str, int, int]]:
        ops, self.ops = self.ops, []
        return ops

    def write(self, addr: int, words) -> None:
        self.ops.append(("write", int(addr), len(list(words))))

    def read(self, addr: int, count: int) -> list[int]:
        self.ops.append(("read", int(addr), int(count)))
        if addr >> REGION_SHIFT == Region.REGS:
            return [self.registers.get(addr & ((1 << REGION_SHIFT) - 1), 0)] * count
        return [0] * count

    def wait_reg(self, addr: int, mask: int, value: int, max_cycles: int = 0, poll: int = 0):
        self.ops.append(("wait", int(addr), 0))
        return None


@dataclasses.dataclass(frozen=True)
class LinkSettings:
    """How the host and the board talk: ``baud``, the board's ``max_burst`` (the host adopts
    it), ``pipelined`` memory writes (protocol 3), the host's sleep between polls, a latency
    per round trip (0: the line alone), the board's clock (for its WRITE commits; None:
    ignored)."""
    baud: float = DEFAULT_BAUD
    max_burst: int = 64
    pipelined: bool = True
    poll_seconds: float = 0.001
    latency_s: float = 0.0
    clock_hz: float | None = None

    def line_seconds(self, nbytes: int) -> float:
        return nbytes * BITS_PER_BYTE / self.baud

    def commit_seconds(self, words: int) -> float:
        return COMMIT_CYCLES_PER_WORD * words / self.clock_hz if self.clock_hz else 0.0


@dataclasses.dataclass
class Traffic:
    """Bytes both ways, frames (requests), round trips (the host waiting for the board) and
    the time they take (see the module docstring)."""
    to_board: int = 0
    from_board: int = 0
    frames: int = 0
    round_trips: int = 0
    seconds: float = 0.0

    @property
    def bytes(self) -> int:
        return self.to_board + self.from_board

    def __add__(self, other: "Traffic") -> "Traffic":
        return Traffic(*(a + b for a, b in zip(dataclasses.astuple(self),
                                               dataclasses.astuple(other))))

    def __mul__(self, k: int) -> "Traffic":
        return Traffic(*(a * k for a in dataclasses.astuple(self)))

    def as_dict(self) -> dict:
        return {"bytes_to_board": self.to_board, "bytes_from_board": self.from_board,
                "frames": self.frames, "round_trips": self.round_trips,
                "seconds": self.seconds}


def _posts(addr: int, settings: LinkSettings) -> bool:
    from .backends import LinkBus

    return settings.pipelined and LinkBus.posts(addr)


def frames_traffic(ops, settings: LinkSettings, polls: int = 1) -> Traffic:
    """The traffic of bus operations ``ops`` (:class:`RecordingBus`'s) over the link; each
    ``wait`` is ``polls`` reads of one word."""
    s = settings
    t = Traffic()
    group: list[tuple[int, int]] = []          # posted frames: (request bytes, words)

    def close_group():
        nonlocal t
        if group:
            req = sum(b for b, _ in group)
            ack = response_bytes(RSP_ACK, 0)
            t += Traffic(req, ack * len(group), len(group), 1,
                         s.line_seconds(req + ack) + s.latency_s
                         + s.commit_seconds(group[-1][1]))
            group.clear()

    for kind, addr, n in ops:
        if kind == "write" and _posts(addr, s):
            for _, _, k in burst_spans(addr, n, s.max_burst, BURST_ALIGN):
                if len(group) >= MAX_GROUP_FRAMES:
                    close_group()
                group.append((request_bytes(CMD_WRITE, k), k))
            continue
        close_group()
        if kind == "write":
            for _, _, k in burst_spans(addr, n, s.max_burst):
                req, rsp = request_bytes(CMD_WRITE, k), response_bytes(RSP_ACK, 0)
                t += Traffic(req, rsp, 1, 1, s.line_seconds(req + rsp) + s.latency_s
                             + s.commit_seconds(k))
        elif kind in ("read", "wait"):
            spans = ([(0, addr, 1)] * polls if kind == "wait"
                     else burst_spans(addr, n, s.max_burst))
            for _, _, k in spans:
                req, rsp = request_bytes(CMD_READ, k), response_bytes(RSP_DATA, k)
                t += Traffic(req, rsp, 1, 1, s.line_seconds(req + rsp) + s.latency_s)
        else:
            raise ValueError(f"unknown bus operation {kind!r}")
    close_group()
    return t


class LinkCostModel:
    """The link's cost of training ``spec`` at ``batch`` on a core of ``geometry`` (``macs``
    multiply-accumulates a cycle) over a link of ``settings``; ``cycles(m)`` (or a number) is
    a run's cycles for ``m`` samples (a measured figure), else the ``core`` class's cycle model
    (``program_cycles``, None where it has none); ``clock_hz`` the core's clock (both only for
    the times).  A CNN ``spec`` needs a ``core`` whose class runs CNN programs (``RUNS_CNN``)."""

    def __init__(self, spec, geometry: Geometry, batch: int, settings: LinkSettings, *,
                 macs: int = 1, lr_inv: int = 512,
                 cycles: Callable[[int], int | None] | int | None = None, core=None,
                 clock_hz: float | None = None):
        from .backends import AcceleratorBackend

        self.spec, self.geometry, self.batch = spec, geometry, int(batch)
        self.settings = dataclasses.replace(settings, clock_hz=settings.clock_hz or clock_hz)
        self.lr_inv = int(lr_inv)
        self.clock_hz = clock_hz
        self._cycles = cycles
        self.bus = RecordingBus(geometry, macs)
        self.backend = AcceleratorBackend(self.bus, spec, batch=self.batch, seed=0,
                                          runs_cnn=bool(getattr(core, "RUNS_CNN", False)))
        self.plan = self.backend.plan
        if cycles is None and core is not None:
            self._cycles = lambda m: core.program_cycles(geometry, self.plan.program(lr_inv, m))
        #: what opening the backend moves: ID, geometry, CLEAR, borders, initial weights
        self.open_ops = self.bus.take()

    # -- operations -----------------------------------------------------------------------
    def step_ops(self, m: int | None = None, program: bool = False) -> list:
        """The bus operations of one ``train_step`` of ``m`` samples (default the batch);
        ``program``: the program is written first (a new ``m`` or learning rate)."""
        m = self.batch if m is None else int(m)
        self.backend._program_key = None if program else (self.lr_inv, m)
        x = np.zeros((m, *self.spec.input_shape), dtype=np.int8)
        target = np.zeros((m, self.spec.classes), dtype=np.int64)
        target[:, 0] = 1
        self.backend.train_step(x, target, self.lr_inv)
        return self.bus.take()

    def weight_ops(self) -> list:
        """The reads of ``backend.weights()`` (every layer, once)."""
        self.backend.weights()
        return self.bus.take()

    # -- bytes ----------------------------------------------------------------------------
    def step_traffic(self, m: int | None = None, polls: int = 1, program: bool = False) -> Traffic:
        """Exact bytes and frames of one step with ``polls`` STATUS polls (its time: the
        link's alone, without the run and the wait for it)."""
        return frames_traffic(self.step_ops(m, program), self.settings, polls)

    def weights_traffic(self) -> Traffic:
        return frames_traffic(self.weight_ops(), self.settings)

    # -- time -----------------------------------------------------------------------------
    def cycles(self, m: int | None = None) -> int | None:
        m = self.batch if m is None else int(m)
        if callable(self._cycles):
            return self._cycles(m)
        return self._cycles

    def step(self, m: int | None = None, program: bool = False) -> dict:
        """One step: its traffic (with the polls expected), the link's seconds, the run's and
        the wait's, and the samples/s (None without cycles and a clock)."""
        m = self.batch if m is None else int(m)
        ops = self.step_ops(m, program)
        wait = [i for i, op in enumerate(ops) if op[0] == "wait"]
        poll = frames_traffic([("wait", 0, 0)], self.settings, 1)
        cycles = self.cycles(m)
        run_s = cycles / self.clock_hz if cycles and self.clock_hz else None
        period = poll.seconds + self.settings.poll_seconds
        if run_s is None:
            polls, wait_s = 1, None
        else:
            polls = 1 + math.ceil(run_s / period) if run_s > poll.seconds else 1
            wait_s = run_s + poll.seconds + (period / 2 if run_s > poll.seconds else 0)
        link = frames_traffic(ops, self.settings, polls)
        if wait:
            # the link's own time, the polls left out (they overlap the run or are wait_s)
            link_s = link.seconds - polls * poll.seconds
        else:
            link_s = link.seconds
        seconds = link_s + wait_s if wait_s is not None else None
        return {"samples": m, "traffic": link, "polls": polls, "link_seconds": link_s,
                "run_seconds": run_s, "wait_seconds": wait_s, "seconds": seconds,
                "samples_per_s": m / seconds if seconds else None}

    def epoch(self, samples: int, read_weights: bool = True) -> dict:
        """An epoch of ``samples``: full steps, the partial one (the program written for it
        and again for the next epoch's first step), the weights read once if
        ``read_weights``.  ``samples_per_s`` is None without cycles and a clock."""
        full, rem = divmod(int(samples), self.batch)
        steady = self.step()
        parts = [(steady, full)]
        if rem:
            first = self.step(program=True)
            parts = [(first, 1), (steady, full - 1), (self.step(rem, program=True), 1)]
        traffic = Traffic()
        seconds = 0.0
        for part, k in parts:
            traffic += part["traffic"] * k
            seconds = None if seconds is None or part["seconds"] is None else (
                seconds + k * part["seconds"])
        weights = self.weights_traffic() if read_weights else Traffic()
        traffic += weights
        if seconds is not None:
            seconds += weights.seconds
        return {"samples": int(samples), "steps": full + (1 if rem else 0), "traffic": traffic,
                "weights_traffic": weights, "seconds": seconds,
                "samples_per_s": samples / seconds if seconds else None}

    # -- what sending the inputs as bytes would save ---------------------------------------
    def inputs_as_bytes(self) -> dict:
        """Not built (the cores would need the gateware): a step's input sent once, one byte
        per value (the m x features int8 batch, padded to whole 32-bit words), instead of both
        layouts in the ACT memory's lanes and chunks.  Returns the input's payload bytes and
        traffic both ways, a full step's bytes (one poll) and its link seconds, and its
        samples/s (None without cycles and a clock), now and with the inputs as bytes."""
        ops = self.step_ops()
        inputs = [op for op in ops if op[0] == "write"
                  and op[1] >> REGION_SHIFT == Region.ACT]
        act_bits = self.geometry.word_bits(Region.ACT)
        stride = 1 << chunk_bits_of(act_bits)
        now = frames_traffic(inputs, self.settings)
        features = int(np.prod(self.spec.input_shape))
        packed_words = -(-self.batch * features // 4)
        base = (int(Region.ACT) << REGION_SHIFT)
        then = frames_traffic([("write", base, packed_words)], self.settings)
        step = frames_traffic(ops, self.settings)
        timed = self.step()
        link_then = timed["link_seconds"] - now.seconds + then.seconds
        wait = timed["wait_seconds"]
        return {"input_payload_bytes_now": sum(4 * n for _, _, n in inputs),
                "input_payload_bytes_as_bytes": 4 * packed_words,
                "act_word_bits": act_bits, "act_chunk_stride": stride,
                "input_traffic_now": now, "input_traffic_as_bytes": then,
                "step_bytes_now": step.bytes,
                "step_bytes_as_bytes": step.bytes - now.bytes + then.bytes,
                "step_link_seconds_now": timed["link_seconds"],
                "step_link_seconds_as_bytes": link_then,
                "samples_per_s_now": timed["samples_per_s"],
                "samples_per_s_as_bytes": (self.batch / (link_then + wait)
                                           if wait is not None else None)}


class LineMeter:
    """A byte transport wrapper that counts what crosses the line: bytes each way, request
    frames, and the one-word READs of STATUS (the polls, and the read after them); anything
    else (``idle``, ``stats``, ``close`` of a simulated line) is the inner transport's.
    :meth:`take` returns the counts since the last call and starts again."""

    def __init__(self, inner):
        self.inner = inner
        self._zero()

    def _zero(self):
        self.to_board = self.from_board = self.frames = self.status_reads = 0

    def take(self) -> dict:
        out = {"to_board": self.to_board, "from_board": self.from_board,
               "frames": self.frames, "status_reads": self.status_reads}
        self._zero()
        return out

    def write(self, data):
        data = bytes(data)
        self.to_board += len(data)
        if data[:1] == bytes([SYNC]) and len(data) >= 1 + REQ_ADDR + 4:
            self.frames += 1
            addr = int.from_bytes(data[1 + REQ_ADDR:1 + REQ_ADDR + 4], "little")
            if (data[1 + REQ_CMD], data[1 + REQ_COUNT], addr) == (CMD_READ, 1, int(Reg.STATUS)):
                self.status_reads += 1
        return self.inner.write(data)

    def read(self, n):
        data = self.inner.read(n)
        self.from_board += len(data)
        return data

    def __getattr__(self, name):
        return getattr(self.inner, name)
