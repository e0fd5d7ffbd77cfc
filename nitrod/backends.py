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
"""

from __future__ import annotations

import numpy as np

from golden.network import Network, NetworkSpec
from nitrod import isa
from nitrod.isa import (OVERFLOW_BITS, REGION_SHIFT, STATUS_BITS, STATUS_ERRORS, Geometry,
                        Reg, Region)

__all__ = ["AcceleratorError", "GoldenBackend", "AcceleratorBackend", "LinkBus", "open_backend"]

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
                 max_cycles: int = 10 ** 9):
        from nitrod.compiler import compile_mlp

        self.bus = bus
        magic = self.read_reg(Reg.ID)
        if magic != isa.MAGIC:
            raise AcceleratorError(f"no Trainer on the bus (ID register {magic:#x}, "
                                   f"expected {isa.MAGIC:#x})")
        regs = {r: self.read_reg(r) for r in Reg if Reg.SIDE <= r <= Reg.D_W_WIDTH}
        self.geometry = Geometry.from_registers(regs)
        self.spec, self.batch = spec, batch
        self.plan = compile_mlp(spec, self.geometry, batch)
        self.max_cycles = max_cycles
        self.last_cycles = None
        self.total_cycles = 0
        self._program_key = None
        self.write_reg(Reg.CONTROL, 2)                       # clear stale flags
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

    def run_program(self) -> int:
        """Start the program at PROG_START 0 and wait for the end; returns its cycles."""
        self.write_reg(Reg.PROG_START, 0)
        self.write_reg(Reg.CONTROL, 1)
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

    def close(self) -> None:
        close = getattr(self.bus, "close", None)
        if close is not None:
            close()


class LinkBus:
    """The bus interface over nitrod/link.py's LinkClient (UART frames to a board).

    ``wait_reg`` polls; between polls it sleeps ``poll_seconds``, or, if the client's transport
    has ``idle(cycles)`` (a simulated line: sim/link_client.py), lets ``poll_cycles`` (or the
    caller's ``poll``) clock cycles pass and then gives up after ``max_cycles`` of them.  On a
    board it gives up after ``max_cycles / min_clock_hz`` seconds (the slowest core clock of
    the boards/ builds is the iCEBreaker's 12 MHz oscillator, with ``--no-pll``), so a Trainer
    that never ends cannot hang the host."""

    def __init__(self, client, poll_seconds: float = 0.001, poll_cycles: int = 2048,
                 min_clock_hz: float = 10e6):
        if min_clock_hz <= 0:
            raise ValueError(f"min_clock_hz must be positive, got {min_clock_hz}")
        self.client = client
        self.poll_seconds = poll_seconds
        self.poll_cycles = poll_cycles
        self.min_clock_hz = min_clock_hz

    def write(self, addr: int, words) -> None:
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


def _trainer_of(board: str | None, geometry: Geometry | None):
    """``(factory() -> core, name, geometry, mac_elements, read_latency)`` of the simulated
    core: the Trainer with ``geometry`` (default ``Geometry()``), or, with ``board``, the core
    ``nitrod build --board BOARD --core trainer`` builds (its class, parameters and geometry;
    ``geometry`` overrides the latter)."""
    if board is None:
        from hw.trainer import Trainer

        geometry = geometry or Geometry()
        return ((lambda: Trainer(geometry)), "trainer", geometry, geometry.side ** 2,
                Trainer.READ_LATENCY)
    import importlib

    from boards.boards import get_board

    b = get_board(board)
    module, _, name = b.trainer.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    geometry = geometry or b.geometry
    params = dict(b.trainer_params)
    return ((lambda: cls(geometry, **params)), f"{name.lower()}_{b.name.replace('-', '_')}",
            geometry, getattr(cls, "MAC_ELEMENTS", geometry.side ** 2), cls.READ_LATENCY)


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
    if kind == "sim":
        from sim.bus_client import SimBus

        make, name, geometry, macs, read_latency = _trainer_of(board, geometry)
        bus = SimBus.start(make, name, waves=waves, read_latency=read_latency, server=sim_server)
        try:
            backend = AcceleratorBackend(bus, spec, batch=batch, seed=seed, **options)
        except BaseException:
            bus.close()
            raise
        backend.name = "sim"
        backend.mac_elements = macs
        return backend
    if kind == "sim-uart":
        from hw.linked_trainer import LinkedTrainer
        from nitrod.link import LinkClient
        from sim.link_client import SimUartTransport

        make, name, geometry, macs, _ = _trainer_of(board, geometry)
        cpb = int(options.pop("clocks_per_bit", 8))
        link_timeout = int(options.pop("link_timeout", 64 * 10 * cpb))
        max_burst = int(options.pop("max_burst", 64))
        transport = SimUartTransport.start(
            lambda: LinkedTrainer(clocks_per_bit=cpb, timeout=link_timeout,
                                  max_burst=max_burst, core=make()),
            f"linked_{name}", clocks_per_bit=cpb, link_timeout=link_timeout, waves=waves)
        try:
            bus = LinkBus(LinkClient(transport, max_burst=max_burst))
            backend = AcceleratorBackend(bus, spec, batch=batch, seed=seed, **options)
        except BaseException:
            transport.close()
            raise
        backend.name = "sim-uart"
        backend.mac_elements = macs
        return backend
    if kind == "board":
        from nitrod.link import LinkClient, open_serial

        if not port:
            raise ValueError("the board backend needs --port (the board's serial device)")
        bus = LinkBus(LinkClient(open_serial(port)))
        backend = AcceleratorBackend(bus, spec, batch=batch, seed=seed, **options)
        backend.name = "board"
        return backend
    raise ValueError(f"unknown backend {kind!r}: golden, sim or board")
