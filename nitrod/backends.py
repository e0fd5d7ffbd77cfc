"""One training API, three backends: ``golden`` (NumPy), ``sim`` (the Trainer in Verilator)
and ``board`` (the Trainer on an FPGA over the UART link).

Every backend offers the same methods, so one script trains in each place::

    backend = open_backend("sim", spec, batch=64, seed=42)
    yhat = backend.train_step(x_int8, target_onehot, lr_inv)   # one NITRO-D step
    weights = backend.weights()                                # dict of int64 arrays
    backend.load_weights(weights)                              # round-trips exactly
    backend.close()

The accelerator backends hold a bus (``write(addr, words)``, ``read(addr, count)``,
``wait_reg(addr, mask, value, max_cycles, poll)``): :class:`sim.bus_client.SimBus` for the
simulator, :class:`LinkBus` (nitrod/link.py's LinkClient) for a board.  They compile the
network (nitrod/compiler.py), load the initial weights of ``golden.network.Network(spec,
seed)`` (so every backend starts from the same weights), and per step write the batch,
run the program and read the output layer's predictions back.  An overflow flag, a program
error or a bus access error raises :class:`AcceleratorError` naming it; nothing is silent.
A network the core cannot train (``nitrod.compiler.hardware_refusal``: an authors' quirk,
a CNN on a core class whose ``RUNS_CNN`` is False) is refused with ``CompileError`` before a
simulator starts or a board is opened.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from golden.network import Network, NetworkSpec
from hw import contract as isa
from hw.contract import (GEOMETRY_REGISTERS, OVERFLOW_BITS, REGION_SHIFT, STATUS_BITS,
                         STATUS_ERRORS, Control, Geometry, Reg, Region)

__all__ = ["AcceleratorError", "GoldenBackend", "AcceleratorBackend", "LinkBus", "open_backend",
           "core_choice", "CoreChoice", "check_link"]

REGS = int(Region.REGS) << REGION_SHIFT


class AcceleratorError(RuntimeError):
    """The accelerator reported an overflow or an error; ``flags`` names them."""

    def __init__(self, message: str, flags: dict | None = None):
        super().__init__(message)
        self.flags = flags or {}


class GoldenBackend:
    """The NumPy golden model behind the common API."""

    name = "golden"

    def __init__(self, spec: NetworkSpec, *, batch: int = 64, seed: int = 0):
        self.spec, self.batch = spec, batch
        self.net = Network(spec, seed=seed)
        self.last_cycles = None
        self.total_cycles = 0

    def train_step(self, x, target, lr_inv: int) -> np.ndarray:
        return self.net.train_step(x, target, lr_inv)

    def weights(self) -> dict[str, np.ndarray]:
        return {k: np.array(v, dtype=np.int64) for k, v in self.net.weights().items()}

    def load_weights(self, weights) -> None:
        self.net.load_weights(weights)

    def close(self) -> None:
        pass


class AcceleratorBackend:
    """The Trainer (simulated or on a board) behind the common API, over a bus."""

    name = "accelerator"

    def __init__(self, bus, spec: NetworkSpec, *, batch: int = 64, seed: int = 0,
                 max_cycles: int = 10 ** 9, runs_cnn: bool = False):
        """``runs_cnn``: the core on ``bus`` runs CNN programs (its class's ``RUNS_CNN``)."""
        from nitrod.compiler import CompileError, compile_network, hardware_refusal

        refusal = hardware_refusal(spec, runs_cnn)
        if refusal:
            raise CompileError(refusal)
        self.bus = bus
        magic = self.read_reg(Reg.ID)
        if magic != isa.MAGIC:
            raise AcceleratorError(f"no Trainer on the bus (ID register {magic:#x}, "
                                   f"expected {isa.MAGIC:#x})")
        regs = {r: self.read_reg(r) for r in GEOMETRY_REGISTERS}
        self.geometry = Geometry.from_registers(regs)
        #: the core's multiply-accumulates per cycle (its MAC array, or one multiplier)
        self.mac_elements = self.read_reg(Reg.MACS)
        self.spec, self.batch = spec, batch
        self.plan = compile_network(spec, self.geometry, batch)
        self.max_cycles = max_cycles
        self.last_cycles = None
        self.total_cycles = 0
        self._program_key = None
        self.write_reg(Reg.CONTROL, Control.CLEAR)          # clear stale flags
        self._write_blocks(self.plan.pack_init())           # the grids' borders (CNNs)
        self.load_weights(Network(spec, seed=seed).weights())

    # -- bus helpers --------------------------------------------------------------------
    def read_reg(self, reg: int) -> int:
        return self.bus.read(REGS | int(reg), 1)[0]

    def write_reg(self, reg: int, value: int) -> None:
        self.bus.write(REGS | int(reg), [int(value)])

    def _write_words(self, region, base: int, words) -> None:
        for addr, chunks in isa.bus_writes(self.geometry, region, base, words):
            self.bus.write(addr, chunks)

    def _read_words(self, region, base: int, count: int) -> list[int]:
        addr, n = isa.bus_read_span(self.geometry, region, base, count)
        return isa.words_from_bus(self.geometry, region, self.bus.read(addr, n), count)

    def _write_blocks(self, blocks) -> None:
        for region, base, words in blocks:
            self._write_words(region, base, words)

    # -- the common API -----------------------------------------------------------------
    def load_weights(self, weights) -> None:
        self._write_blocks(self.plan.pack_weights(weights))
        self._check_flags()

    def weights(self) -> dict[str, np.ndarray]:
        return self.plan.unpack_weights(self._read_words)

    def _load_program(self, lr_inv: int, m: int) -> None:
        key = (int(lr_inv), int(m))
        if key != self._program_key:
            words = [isa.pack_instruction(i) for i in self.plan.program(lr_inv, m)]
            self._write_words(Region.PROG, 0, words)
            self._program_key = key

    def run_program(self, start: int = 0) -> int:
        """Start the program at instruction ``start`` and wait for the end; returns its
        cycles."""
        self.write_reg(Reg.PROG_START, int(start))
        self.write_reg(Reg.CONTROL, Control.START)
        try:
            self.bus.wait_reg(REGS | Reg.STATUS, 1 << STATUS_BITS["busy"], 0,
                              max_cycles=self.max_cycles)
        except TimeoutError:                  # SimBus gives up by raising; STATUS says more
            pass
        status = self.read_reg(Reg.STATUS)
        if status & (1 << STATUS_BITS["busy"]):
            self._check_flags(status, f"the program did not end within {self.max_cycles} "
                                      "cycles", always=True)
        self._check_flags(status)
        cycles = self.read_reg(Reg.CYCLES)
        self.last_cycles = cycles
        self.total_cycles += cycles
        return cycles

    def flags(self, status: int | None = None) -> dict[str, bool]:
        status = self.read_reg(Reg.STATUS) if status is None else status
        overflow = self.read_reg(Reg.OVERFLOW)
        out = {f"overflow_{k}": bool(overflow >> b & 1) for k, b in OVERFLOW_BITS.items()}
        out.update({k: bool(status >> STATUS_BITS[k] & 1) for k in STATUS_ERRORS})
        return out

    def _check_flags(self, status: int | None = None, what: str = "",
                     always: bool = False) -> None:
        """Raise AcceleratorError naming every raised flag (after ``what``, if given); with
        ``always``, raise even if no flag is up."""
        flags = self.flags(status)
        raised = [k for k, v in flags.items() if v]
        if raised or always:
            parts = [what] if what else []
            if raised:
                parts.append("accelerator reported " + ", ".join(raised))
            raise AcceleratorError("; ".join(parts), flags)

    def train_step(self, x, target, lr_inv: int) -> np.ndarray:
        x = np.asarray(x)
        target = np.asarray(target)
        labels = target.argmax(axis=1)
        m = len(x)
        self._write_blocks(self.plan.pack_batch(x, labels))
        self._load_program(lr_inv, m)
        self.run_program()
        return self.plan.unpack_yhat(self._read_words, labels)

    def profile_step(self, x, target, lr_inv: int) -> tuple[np.ndarray, list[int]]:
        """:meth:`train_step` run one instruction at a time (the same result): the program
        written with an END after each instruction, each run from its own start.  Returns the
        predictions and each instruction's cycles (its run's, less a lone END's)."""
        from nitrod.compiler import CompileError

        x, target = np.asarray(x), np.asarray(target)
        labels = target.argmax(axis=1)
        m = len(x)
        body = self.plan.program(lr_inv, m)[:-1]
        if 2 * len(body) > self.geometry.prog_depth:
            raise CompileError(f"profiling a step of {len(body)} instructions needs "
                               f"{2 * len(body)} program words; PROG holds "
                               f"{self.geometry.prog_depth}")
        end = isa.pack_instruction(isa.empty_instruction(isa.Op.END))
        words = [w for ins in body for w in (isa.pack_instruction(ins), end)]
        self._write_blocks(self.plan.pack_batch(x, labels))
        self._write_words(Region.PROG, 0, words)
        self._program_key = None
        lone_end = self.run_program(1)
        self.total_cycles -= lone_end
        cycles = []
        for i in range(len(body)):
            cycles.append(self.run_program(2 * i) - lone_end)
            self.total_cycles -= lone_end
        self.last_cycles = sum(cycles)
        return self.plan.unpack_yhat(self._read_words, labels), cycles

    def close(self) -> None:
        close = getattr(self.bus, "close", None)
        if close is not None:
            close()


class LinkBus:
    """The bus interface over nitrod/link.py's LinkClient (UART frames to a board).

    Memory writes are posted (``LinkClient.post_words``: WRITE frames back to back, their ACKs
    collected before the next read or register write); register writes (CONTROL starts the
    core) wait for their ACK.  ``pipelined=False`` waits for every ACK.

    ``wait_reg`` polls; between polls it sleeps ``poll_seconds``, or, if the client's transport
    has ``idle(cycles)`` (a simulated line: sim/link_client.py), lets ``poll_cycles`` (or the
    caller's ``poll``) clock cycles pass and then gives up after ``max_cycles`` of them.  On a
    board it gives up after ``max_cycles / min_clock_hz`` seconds (the slowest core clock of
    the boards/ builds is the iCEBreaker's 12 MHz oscillator, with ``--no-pll``), so a Trainer
    that never ends cannot hang the host."""

    def __init__(self, client, poll_seconds: float = 0.001, poll_cycles: int = 2048,
                 min_clock_hz: float = 10e6, pipelined: bool = True):
        if min_clock_hz <= 0:
            raise ValueError(f"min_clock_hz must be positive, got {min_clock_hz}")
        self.client = client
        self.pipelined = pipelined
        self.poll_seconds = poll_seconds
        self.poll_cycles = poll_cycles
        self.min_clock_hz = min_clock_hz

    @staticmethod
    def posts(addr: int) -> bool:
        """Whether a write at ``addr`` is posted when pipelined: a memory's, not a register's."""
        return addr >> REGION_SHIFT != Region.REGS

    def write(self, addr: int, words) -> None:
        if self.pipelined and self.posts(addr):
            self.client.post_words(addr, list(words))
        else:
            self.client.write_words(addr, list(words))

    def read(self, addr: int, count: int) -> list[int]:
        return list(self.client.read_words(addr, count))

    def wait_reg(self, addr: int, mask: int, value: int, max_cycles: int = 0, poll: int = 0):
        import time
        idle = getattr(getattr(self.client, "transport", None), "idle", None)
        waited = 0
        deadline = time.monotonic() + max_cycles / self.min_clock_hz if max_cycles else None
        while (self.read(addr, 1)[0] & mask) != value:
            if idle is None:
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                time.sleep(self.poll_seconds)
                continue
            if max_cycles and waited >= max_cycles:
                return waited
            step = poll or self.poll_cycles
            idle(step)
            waited += step
        return None if idle is None else waited

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is None:
            close = getattr(getattr(self.client, "transport", None), "close", None)
        if close is not None:
            close()


def check_link(client) -> None:
    """PING the board: it must answer in this host's protocol version."""
    from hw.contract.link import PROTOCOL_VERSION
    from nitrod.link import LinkError, LinkProtocolError

    try:
        info = client.ping()
    except LinkError as exc:
        exc.args = (f"no answer to PING in protocol version {PROTOCOL_VERSION} ({exc}): is the "
                    "board running a nitrod bitstream of this version, at this baud rate?",)
        raise
    if info.version != PROTOCOL_VERSION:
        raise LinkProtocolError(f"the board speaks link protocol {info.version}, this host "
                                f"{PROTOCOL_VERSION}: rebuild its bitstream (nitrod build)")
    if not 1 <= info.max_burst <= 255:
        raise LinkProtocolError(f"the board reports a max burst of {info.max_burst} words")
    client.max_burst = info.max_burst          # the board's WRITE buffer: the longest frame


class CoreChoice(NamedTuple):
    """The trainer core a simulation runs: ``make()`` builds it; ``name`` names its build."""
    make: Callable
    name: str
    geometry: Geometry
    core: type


def core_choice(board: str | None, geometry: Geometry | None) -> CoreChoice:
    """The Trainer with ``geometry`` (default ``Geometry()``), or, with ``board``, the core
    ``nitrod build --board BOARD --core trainer`` builds (its class, parameters and geometry;
    ``geometry`` overrides the latter)."""
    from hw.trainers.trainer import Trainer

    if board is None:
        geometry = geometry or Geometry()
        return CoreChoice(lambda: Trainer(geometry), "trainer", geometry, Trainer)
    from boards.boards import get_board

    b = get_board(board)
    geometry = geometry or b.geometry
    params = dict(b.trainer_params)
    return CoreChoice(lambda: b.trainer(geometry, **params),
                      f"{b.trainer.__name__.lower()}_{b.name.replace('-', '_')}", geometry,
                      b.trainer)


def _backend_on(bus, close, name, spec, **options):
    """An AcceleratorBackend named ``name`` on ``bus``; ``close()`` frees the bus if it cannot
    be made."""
    try:
        backend = AcceleratorBackend(bus, spec, **options)
    except BaseException:
        close()
        raise
    backend.name = name
    return backend


def open_backend(kind: str, spec: NetworkSpec, *, batch: int = 64, seed: int = 0,
                 geometry: Geometry | None = None, port: str | None = None,
                 waves: bool = False, board: str | None = None, sim_server: str | None = None,
                 **options):
    """A backend by name: ``golden``, ``sim`` (builds and starts the simulator), ``sim-uart``
    (the same through the UART link) or ``board`` (``port`` = the serial device).  With
    ``board`` (a boards/ name) the simulator runs that board's core (``nitrod build --board
    BOARD --core trainer``: the SerialTrainer for the iCEBreaker) with its geometry.
    ``sim_server`` (``sim``): what serves the simulated bus, ``native`` (default) or
    ``cocotb`` (see :meth:`sim.bus_client.SimBus.start`)."""
    if kind == "golden":
        return GoldenBackend(spec, batch=batch, seed=seed)
    from nitrod.compiler import CompileError, hardware_refusal

    if kind in ("sim", "sim-uart"):
        core = core_choice(board, geometry).core
    elif kind == "board" and board is not None:
        from boards.boards import get_board

        core = get_board(board).trainer
    else:
        core = None                 # a board whose core the host is not told
    runs_cnn = bool(getattr(core, "RUNS_CNN", False))
    refusal = hardware_refusal(spec, runs_cnn)
    if refusal and kind in ("sim", "sim-uart", "board"):
        raise CompileError(refusal)
    options["runs_cnn"] = runs_cnn
    if kind == "sim":
        from sim.bus_client import SimBus

        choice = core_choice(board, geometry)
        bus = SimBus.start(choice.make, choice.name, waves=waves,
                           read_latency=choice.core.READ_LATENCY, server=sim_server)
        return _backend_on(bus, bus.close, "sim", spec, batch=batch, seed=seed, **options)
    if kind == "sim-uart":
        from hw.link.linked import LinkedCore
        from nitrod.link import LinkClient
        from sim.link_client import SimUartTransport

        choice = core_choice(board, geometry)
        cpb = int(options.pop("clocks_per_bit", 8))
        link_timeout = int(options.pop("link_timeout", 64 * 10 * cpb))
        max_burst = int(options.pop("max_burst", 64))
        retries = int(options.pop("retries", 0))
        wrap = options.pop("transport_wrapper", None)
        transport = SimUartTransport.start(
            lambda: LinkedCore(choice.make(), clocks_per_bit=cpb, timeout=link_timeout,
                               max_burst=max_burst),
            f"linked_{choice.name}", clocks_per_bit=cpb, link_timeout=link_timeout, waves=waves)
        line = wrap(transport) if wrap is not None else transport
        bus = LinkBus(LinkClient(line, max_burst=max_burst, retries=retries))
        return _backend_on(bus, transport.close, "sim-uart", spec, batch=batch, seed=seed,
                           **options)
    if kind == "board":
        from hw.contract.link import DEFAULT_BAUD, DEFAULT_RETRIES, DEFAULT_TIMEOUT_S
        from nitrod.link import LinkClient, open_serial

        if not port:
            raise ValueError("the board backend needs --port (the board's serial device)")
        baud = int(options.pop("baud", DEFAULT_BAUD))
        timeout = float(options.pop("timeout", DEFAULT_TIMEOUT_S))
        retries = int(options.pop("retries", DEFAULT_RETRIES))
        serial = open_serial(port, baud, timeout)
        try:
            client = LinkClient(serial, retries=retries)
            check_link(client)
        except BaseException:
            serial.close()
            raise
        return _backend_on(LinkBus(client), serial.close, "board", spec,
                           batch=batch, seed=seed, **options)
    raise ValueError(f"unknown backend {kind!r}: golden, sim or board")
