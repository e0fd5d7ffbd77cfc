"""Drive a Verilator-simulated design's host bus from an ordinary (synchronous) Python process.

:class:`SimBus` starts the simulation as a child process (:func:`sim.harness.run_cocotb`
with the cocotb module :mod:`sim.bus_server`, in a background thread, because
``run_cocotb`` blocks until the simulator exits) and talks to it over a Unix-domain
socket.  The design needs a host bus port named ``bus`` with the
``hw.link.host_link.BusSignature`` members (Verilog ports ``bus__addr``, ``bus__w_data``,
``bus__w_en``, ``bus__r_en``, ``bus__r_data``), plus ``clk`` and ``rst``.

Example::

    from sim.bus_client import SimBus

    with SimBus.start(MyTop(), "my_top") as bus:
        bus.write(0x0000, words)                  # one word per clock cycle
        assert bus.read(0x0000, len(words)) == words
        bus.write(CTRL, [1])
        cycles = bus.wait_reg(STATUS, mask=1, value=1, max_cycles=1_000_000)
        print("took", cycles, "cycles; now at cycle", bus.cycle())

Simulated time only advances inside a request (see :mod:`sim.bus_server` for the cycle
accounting and the wire format).  Bulk transfers are split into requests of at most
:attr:`SimBus.chunk_words` words.  A failure of the simulation (the design does not
convert or build, a missing port, the simulator dying) is raised as :class:`SimBusError`
with what the harness reported; :meth:`SimBus.close` raises it too if the simulation ended
badly.  Not thread-safe: use one ``SimBus`` from one thread.

Writes do not wait for their replies: up to :attr:`SimBus.max_pending_writes` WRITE
requests are in flight while the host prepares the next ones (the server handles requests
in order, so the simulation -- cycle counts included -- is the same as with waiting).  A
rejected write (an address beyond the bus) is therefore raised as :class:`SimBusError` by
the next call that waits for the server: a read, ``wait_reg``, ``cycle``, :meth:`SimBus.sync`
or :meth:`SimBus.close`.

Two servers can run the simulation (``SimBus.start(server=...)``, default ``native`` or
``$NITROD_SIM_SERVER``): sim/native.py's C++ server compiled with the Verilated model (no
Python in the clock loop), or sim/bus_server.py under cocotb.

This module does not import cocotb; the harness is imported only in :meth:`SimBus.start`.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import tempfile
import threading
import time
from typing import Iterable, Mapping, Sequence

__all__ = ["SimBus", "SimBusError", "SimBusTimeout", "SOCKET_ENV", "SERVER_ENV", "SERVERS",
           "server_kind"]

# Wire format (described in sim/bus_server.py, which imports these).
SOCKET_ENV = "NITROD_BUS_SOCKET"
#: Chooses the default server of SimBus.start: native or cocotb.
SERVER_ENV = "NITROD_SIM_SERVER"
SERVERS = ("native", "cocotb")
OP_WRITE = 0x01
OP_READ = 0x02
OP_WAIT_REG = 0x03
OP_CYCLE = 0x04
OP_QUIT = 0x05
STATUS_OK = 0
STATUS_ERROR = 1
HEADER = struct.Struct("<B3xI")
WAIT_REQ = struct.Struct("<IIIIQ")
WAIT_REP = struct.Struct("<QII")
WORD_MASK = 0xFFFFFFFF


class SimBusError(RuntimeError):
    """The simulation failed (build, start, crash) or the server rejected a request."""


class SimBusTimeout(TimeoutError):
    """:meth:`SimBus.wait_reg` ran ``max_cycles`` cycles without seeing the value."""

    def __init__(self, message: str, cycles: int, word: int):
        super().__init__(message)
        self.cycles = cycles    #: cycles waited
        self.word = word        #: the last word read


class SimBus:
    """Host side of the co-simulation bus bridge (create it with :meth:`start`)."""

    #: Largest number of words in one WRITE or READ request.
    chunk_words = 1 << 16
    #: Most WRITE requests sent without their reply read yet (few enough that the server's
    #: replies always fit the socket's buffer: it never blocks on sending while the host
    #: blocks on sending to it).
    max_pending_writes = 64
    #: WRITE requests sent together in one system call (fewer wake-ups of the server).
    send_writes = 16

    def __init__(self, sock: socket.socket, thread: threading.Thread, state: dict, tmpdir: str):
        self._sock = sock
        self._thread = thread
        self._state = state
        self._tmpdir = tmpdir
        self._closed = False
        self._pending = 0       # WRITE requests whose reply is not read yet
        self._outbox: list[bytes] = []   # WRITE requests not sent yet
        self._rbuf = bytearray()  # received, not yet read (from _rpos on)
        self._rpos = 0
        #: What serves the bus: "native" or "cocotb".
        self.server = "cocotb"
        #: Once closed: the harness's :class:`sim.harness.CocotbRun`, or a
        #: :class:`sim.native.NativeRun` (both have ``test_dir``, where ``dump.vcd`` is).
        self.run = None

    # ------------------------------------------------------------------ start / stop

    @classmethod
    def start(cls, design, toplevel: str, *, build_args: Iterable[str] = (), waves: bool = False,
              extra_env: Mapping[str, str] | None = None, start_timeout: float = 600.0,
              io_timeout: float | None = None, seed: int | None = None,
              server_module: str = "sim.bus_server", testcase: str = "serve_bus",
              params: Mapping | None = None, read_latency: int = 1,
              server: str | None = None) -> "SimBus":
        """Build (cached) and start ``design`` under the bus server; connect to it.

        ``design``, ``toplevel``, ``build_args``, ``waves``, ``seed`` and ``extra_env`` go to
        :func:`sim.harness.run_cocotb`.  The design is converted and built (or found in the
        build cache) first, with no time limit; ``start_timeout`` bounds the simulator's start;
        ``io_timeout`` (seconds, None = no limit) bounds each request.  ``server_module``,
        ``testcase`` and ``params`` select another cocotb server speaking the same framing
        (sim/link_server.py).  ``read_latency`` (>= 1) is the design's bus read latency
        (``hw.link.host_link.BusSignature.read_latency``: 1 = ``r_data`` the cycle after
        ``r_en``); it is added to ``params`` as ``"read_latency"`` and the server samples
        each read's word that many cycles after it.  Sets
        ``COCOTB_TRUST_INERTIAL_WRITES=1`` unless ``extra_env`` says otherwise: the clock
        then runs in the simulator, not in Python, so idle cycles are cheap.

        ``server`` chooses what serves the bus: ``"native"`` (the default, or
        ``$NITROD_SIM_SERVER``) is sim/native.py's C++ server compiled with the model, with
        no Python in the clock loop; ``"cocotb"`` is sim/bus_server.py under cocotb.  Both
        give the same replies and cycle counts.  Another ``server_module`` (or ``testcase``)
        always runs under cocotb; the native server ignores ``params`` other than the read
        latency, and ``seed``.
        """
        from sim.harness import _waves_requested, build_verilator, run_cocotb, verilog_of

        if isinstance(read_latency, bool) or int(read_latency) != read_latency or read_latency < 1:
            raise ValueError(f"read_latency must be an integer >= 1, not {read_latency!r}")
        params = dict(params or {})
        if params.get("read_latency", read_latency) != read_latency:
            raise ValueError(f"params['read_latency'] = {params['read_latency']!r} contradicts "
                             f"read_latency={read_latency!r}")
        params["read_latency"] = int(read_latency)

        server = server_kind(server, server_module, testcase)
        waves = _waves_requested(waves)

        # Build first, in this thread and without a deadline (a cold build of a large design
        # takes minutes); the simulator then starts from the cache within start_timeout.
        build_args = tuple(build_args)
        verilog_text = verilog_of(design, toplevel)
        try:
            if server == "native":
                from sim.native import build_native

                exe, built, build_seconds = build_native(verilog_text, toplevel,
                                                         build_args=build_args, waves=waves)
            else:
                build_verilator(verilog_text, toplevel, build_args=build_args, waves=waves)
        except RuntimeError as error:
            raise SimBusError(f"simulation of {toplevel} could not start: {error}") from None
        design = verilog_text

        tmpdir = tempfile.mkdtemp(prefix="nitrod-bus-")
        path = os.path.join(tmpdir, "bus.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            listener.listen(1)
            listener.settimeout(0.2)
        except BaseException:
            listener.close()
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise

        env = {"COCOTB_TRUST_INERTIAL_WRITES": "1", **(extra_env or {}), SOCKET_ENV: path}
        state: dict = {}
        build_args = tuple(build_args)

        def target():
            try:
                if server == "native":
                    from sim.native import run_native

                    state["run"] = run_native(exe, path, read_latency=read_latency, waves=waves,
                                              extra_env=env, built=built,
                                              build_seconds=build_seconds)
                else:
                    state["run"] = run_cocotb(design, toplevel, server_module,
                                              testcase=testcase, build_args=build_args,
                                              waves=waves, seed=seed, extra_env=env,
                                              params=params)
            except BaseException as error:  # reported to the host thread
                state["error"] = error

        thread = threading.Thread(target=target, name=f"simbus-{toplevel}", daemon=True)
        thread.start()
        deadline = time.monotonic() + start_timeout
        try:
            while True:
                try:
                    sock, _ = listener.accept()
                    break
                except socket.timeout:
                    pass
                if not thread.is_alive():
                    raise SimBusError(f"simulation of {toplevel} ended before the bus server "
                                      f"connected: {_describe(state.get('error'))}")
                if time.monotonic() > deadline:
                    raise SimBusError(f"the bus server of {toplevel} did not connect within "
                                      f"{start_timeout:.0f} s (build or simulator start stuck?)")
        except BaseException:
            listener.close()
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        listener.close()
        sock.settimeout(io_timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        bus = cls(sock, thread, state, tmpdir)
        bus.server = server
        return bus

    def close(self, timeout: float = 60.0) -> None:
        """Send QUIT, wait for the simulator to exit; raise :class:`SimBusError` if the
        simulation failed.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        rejected = None
        try:
            try:
                self._collect(0)
            except SimBusError as error:
                rejected = error      # a rejected write, or the server is gone (said below)
            except OSError:
                pass
            try:
                self._request(OP_QUIT, b"")
            except (SimBusError, OSError):
                pass  # already gone: the harness says why below
            finally:
                self._sock.close()
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise SimBusError(f"simulator did not exit within {timeout:.0f} s after QUIT")
            if "error" in self._state:
                raise SimBusError(f"simulation failed: {_describe(self._state['error'])}")
            self.run = self._state.get("run")
        finally:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        if rejected is not None:
            raise rejected

    def __enter__(self) -> "SimBus":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            try:
                self.close()
            except Exception:
                pass  # the original exception matters more

    # ------------------------------------------------------------------ requests

    def write(self, addr: int, words: Sequence[int]) -> None:
        """Write ``words`` to consecutive word addresses from ``addr`` (one per cycle).

        Does not wait for the server (see the module's docstring): a rejected write is
        raised by the next call that does."""
        words = [int(w) & WORD_MASK for w in words]
        _check_span(addr, len(words))
        for start in range(0, len(words), self.chunk_words):
            chunk = words[start:start + self.chunk_words]
            self._send_write(struct.pack(f"<I{len(chunk)}I", addr + start, *chunk))

    def sync(self) -> None:
        """Wait until the server has handled every write sent; raise :class:`SimBusError`
        if it rejected one."""
        if self._closed:
            raise SimBusError("the SimBus is closed")
        self._collect(0)

    def read(self, addr: int, count: int) -> list[int]:
        """Read ``count`` words from consecutive word addresses from ``addr``."""
        _check_span(addr, count)
        out: list[int] = []
        for start in range(0, count, self.chunk_words):
            k = min(self.chunk_words, count - start)
            reply = self._request(OP_READ, struct.pack("<II", addr + start, k))
            if len(reply) != 4 * k:
                raise SimBusError(f"READ of {k} words answered with {len(reply)} bytes")
            out.extend(struct.unpack(f"<{k}I", reply))
        return out

    def wait_reg(self, addr: int, mask: int, value: int, *, max_cycles: int = 10_000_000,
                 poll: int = 64) -> int:
        """Let the simulation run until ``read(addr) & mask == value & mask``.

        The register is read every ``poll`` cycles (plus 1 for the read itself).
        Returns the cycles from the request to the matching read; raises
        :class:`SimBusTimeout` after ``max_cycles`` without a match.
        """
        _check_span(addr, 1)
        if poll < 1 or max_cycles < 0:
            raise ValueError("poll must be >= 1 and max_cycles >= 0")
        reply = self._request(OP_WAIT_REG, WAIT_REQ.pack(addr, mask & WORD_MASK, value & WORD_MASK,
                                                         min(poll, WORD_MASK), max_cycles))
        cycles, word, matched = WAIT_REP.unpack(reply)
        if not matched:
            raise SimBusTimeout(f"register 0x{addr:x} = 0x{word:08x}: & 0x{mask:08x} != "
                                f"0x{value & mask:08x} after {cycles} cycles", cycles, word)
        return cycles

    def cycle(self) -> int:
        """Clock cycles since the end of reset."""
        return struct.unpack("<Q", self._request(OP_CYCLE, b""))[0]

    # LinkClient-style names, so code written for the board link can take a SimBus.
    def write_words(self, addr: int, words: Sequence[int]) -> None:
        self.write(addr, words)

    def read_words(self, addr: int, n: int) -> list[int]:
        return self.read(addr, n)

    def write_word(self, addr: int, value: int) -> None:
        self.write(addr, [value])

    def read_word(self, addr: int) -> int:
        return self.read(addr, 1)[0]

    # ------------------------------------------------------------------ wire

    def exchange(self, op: int, payload: bytes) -> tuple[int, bytes]:
        """Send one request as it is (any OP, any payload, malformed ones included) and return
        its reply as it is, ``(status, payload)``: for tests of the servers.  Not QUIT."""
        if self._closed:
            raise SimBusError("the SimBus is closed")
        if op == OP_QUIT:
            raise ValueError("exchange() does not send QUIT: use close()")
        return self._round_trip(op, bytes(payload))

    def _request(self, op: int, payload: bytes) -> bytes:
        """Send a request and return its reply's payload (after the pending writes')."""
        if self._closed and op != OP_QUIT:
            raise SimBusError("the SimBus is closed")
        status, body = self._round_trip(op, payload)
        if status != STATUS_OK:
            raise SimBusError(f"bus server rejected the request: {body.decode(errors='replace')}")
        return body

    def _round_trip(self, op: int, payload: bytes) -> tuple[int, bytes]:
        """Send a request and wait for its reply, ``(status, payload)``; the replies of the
        pending writes come first (a rejected one is raised after this reply)."""
        self._send(HEADER.pack(op, len(payload)) + payload)
        rejected = self._collect(0, raise_rejected=False)
        try:
            reply = self._reply()
        except socket.timeout:
            raise SimBusError("no answer from the bus server within the I/O timeout") from None
        except (ConnectionError, EOFError) as error:
            raise self._died(error) from None
        if rejected:
            raise rejected
        return reply

    def _send_write(self, payload: bytes) -> None:
        """Queue a WRITE request; send the queue when it is long enough (no waiting for
        replies until :attr:`max_pending_writes` are pending)."""
        if self._closed:
            raise SimBusError("the SimBus is closed")
        if self._pending >= self.max_pending_writes:
            self._collect(self.max_pending_writes // 2)
        self._outbox.append(HEADER.pack(OP_WRITE, len(payload)))
        self._outbox.append(payload)
        self._pending += 1
        if len(self._outbox) >= 2 * self.send_writes:
            self._send(b"")

    def _send(self, frame: bytes) -> None:
        """Send the queued writes, then ``frame``."""
        if self._outbox:
            self._outbox.append(frame)
            frame = b"".join(self._outbox)
            self._outbox.clear()
        try:
            if frame:
                self._sock.sendall(frame)
        except socket.timeout:
            raise SimBusError("the bus server took no request within the I/O timeout") from None
        except ConnectionError as error:
            raise self._died(error) from None

    def _collect(self, keep: int, raise_rejected: bool = True) -> SimBusError | None:
        """Read the replies of pending writes until at most ``keep`` are pending; raise
        :class:`SimBusError` if the server rejected any of them (return it instead, without
        ``raise_rejected``)."""
        rejected = []
        if self._pending > keep:
            self._send(b"")
        try:
            while self._pending > keep:
                status, body = self._reply()
                self._pending -= 1
                if status != STATUS_OK:
                    rejected.append(body.decode(errors="replace"))
        except socket.timeout:
            raise SimBusError("no answer from the bus server within the I/O timeout") from None
        except (ConnectionError, EOFError) as error:
            self._pending = 0
            raise self._died(error) from None
        if not rejected:
            return None
        more = f" (and {len(rejected) - 1} more)" if len(rejected) > 1 else ""
        error = SimBusError(f"bus server rejected a write: {rejected[0]}{more}")
        if raise_rejected:
            raise error
        return error

    def _reply(self) -> tuple[int, bytes]:
        status, length = HEADER.unpack(self._recv_exact(HEADER.size))
        return status, self._recv_exact(length)

    def _recv_exact(self, n: int) -> bytes:
        """The next ``n`` bytes from the server (read in pieces of up to 64 KiB: several
        replies come in one system call)."""
        buf, pos = self._rbuf, self._rpos
        if len(buf) - pos < n:
            del buf[:pos]
            pos = 0
            while len(buf) < n:
                piece = self._sock.recv(max(n - len(buf), 1 << 16))
                if not piece:
                    self._rpos = 0
                    raise EOFError("connection closed by the simulator")
                buf += piece
        self._rpos = pos + n
        return bytes(buf[pos:pos + n])

    def _died(self, error: Exception) -> SimBusError:
        """The simulator went away in the middle of a request: say what the harness saw."""
        self._thread.join(30)
        detail = _describe(self._state.get("error")) if "error" in self._state else \
            "the simulation ended without an error report"
        return SimBusError(f"lost the bus server ({error}); {detail}")


def server_kind(server: str | None, server_module: str = "sim.bus_server",
                testcase: str = "serve_bus") -> str:
    """``"native"`` or ``"cocotb"``: ``server``, else ``$NITROD_SIM_SERVER``, else native;
    always cocotb for another server module or test case (sim/link_server.py)."""
    if server is None:
        server = os.environ.get(SERVER_ENV, "").strip().lower() or "native"
    if server not in SERVERS:
        raise ValueError(f"unknown bus server {server!r}: one of {', '.join(SERVERS)}")
    if (server_module, testcase) != ("sim.bus_server", "serve_bus"):
        return "cocotb"
    return server


def _check_span(addr: int, count: int) -> None:
    if count < 0 or addr < 0 or addr + count > 1 << 32:
        raise ValueError(f"bad address range: {count} words from 0x{addr:x}")


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "no error reported"
    return f"{type(error).__name__}: {error}"
