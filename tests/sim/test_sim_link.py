"""The whole board link, UART bits included, in Verilator: training over the byte protocol.

hw/link/linked.py's LinkedCore (UartRx -> HostLink -> Trainer, HostLink -> UartTx) runs
in the simulator behind sim/link_client.py's SimUartTransport, which plays the host's bytes
on the ``rx`` line as 8N1 frames (``CLOCKS_PER_BIT`` cycles per bit) and decodes the ``tx``
line.  The host side is the boards' own: nitrod/link.py's LinkClient under
nitrod/backends.py's LinkBus and AcceleratorBackend.

* A 13-7-5 MLP trained for two steps (batch 8) is bit-exact with golden ``Network.train_step``
  (all weights and the predictions).
* Corrupted requests sent through the same line between training steps -- a WRITE with a
  bad CRC, WRITE frames cut short (answered when the inter-byte timeout expires), garbage
  without a sync byte (dropped without an answer) and garbage with one (answered with an
  ERROR) -- get the protocol's answer, change no weight, count in PING's error counter, and
  training then goes on bit-exact.

The frame-level fuzz (10,000 frames) is tests/test_host_link.py's; not repeated here.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from golden.datasets import one_hot
from golden.network import Network, NetworkSpec
from hw import contract as isa
from hw.contract import link as P
from nitrod import link as L
from nitrod.backends import AcceleratorBackend, open_backend
from hw.contract import Geometry, Region

GEOMETRY = Geometry(side=4, act_depth=256, wgt_depth=256, err_depth=128, code_depth=128,
                    label_depth=16, prog_depth=32)
CLOCKS_PER_BIT = 4
LINK_TIMEOUT = 400          # 10 byte times
MAX_BURST = 64
K, HIDDEN, CLASSES, BATCH, SEED = 13, 7, 5, 8, 5


@pytest.fixture(scope="module")
def uart_backend():
    """``open_backend("sim-uart")``: LinkedCore in Verilator behind the UART-level transport."""
    t0 = time.monotonic()
    backend = open_backend("sim-uart", _spec(), batch=BATCH, seed=SEED, geometry=GEOMETRY,
                           clocks_per_bit=CLOCKS_PER_BIT, link_timeout=LINK_TIMEOUT,
                           max_burst=MAX_BURST)
    backend.started_seconds = time.monotonic() - t0
    try:
        yield backend
        assert backend.bus.client.transport.stats()["line_errors"] == 0
    finally:
        backend.close()


def _spec():
    return NetworkSpec((1, 1, K), CLASSES, (f"l{HIDDEN}",), relu_inv_slope=4,
                       fwd_decay_inv=1200, subnet_decay_inv=700)


def _step(backend, net, rng, lr_inv, where):
    x = rng.integers(-127, 128, size=(BATCH, K)).astype(np.int8)
    target = one_hot(rng.integers(0, CLASSES, size=BATCH), CLASSES)
    yhat = backend.train_step(x, target, lr_inv)
    want = net.train_step(x.reshape(BATCH, 1, 1, K), target, lr_inv)
    assert np.array_equal(yhat, want), f"{where}: predictions differ from golden"
    _same_weights(backend, net, where)


def _same_weights(backend, net, where):
    got = backend.weights()
    for name, w in net.weights().items():
        bad = np.argwhere(got[name] != w)
        assert len(bad) == 0, (f"{where}: {name}{tuple(bad[0])} is {got[name][tuple(bad[0])]}, "
                               f"golden {w[tuple(bad[0])]}")


def test_training_over_uart_is_bit_exact(uart_backend):
    backend = uart_backend
    assert backend.name == "sim-uart" and backend.geometry == GEOMETRY
    client = backend.bus.client
    transport = client.transport
    info = client.ping()
    assert (info.version, info.max_burst, info.status) == (P.PROTOCOL_VERSION, MAX_BURST, 0)
    net = Network(_spec(), seed=SEED)
    backend.load_weights(net.weights())      # as open_backend did (whatever ran before)
    s0 = transport.stats()
    t0 = time.monotonic()
    _same_weights(backend, net, "after loading")
    rng = np.random.default_rng(SEED)
    for step, lr_inv in enumerate((256, 512)):
        _step(backend, net, rng, lr_inv, f"step {step}")
        assert backend.last_cycles > 0
    seconds = time.monotonic() - t0
    s1 = transport.stats()
    moved = (s1["bytes_sent"] - s0["bytes_sent"]) + (s1["bytes_received"] - s0["bytes_received"])
    cycles = s1["cycle"] - s0["cycle"]
    print(f"\nUART link, {CLOCKS_PER_BIT} clocks/bit: simulator start {backend.started_seconds:.1f} s; "
          f"2 training steps + weight checks: {moved} bytes, {cycles} cycles "
          f"({backend.total_cycles} in the Trainer's programs), "
          f"{s1['wakeups'] - s0['wakeups']} server wakeups in {seconds:.1f} s = "
          f"{moved / seconds:.0f} bytes/s, {cycles / seconds:.0f} cycles/s")
    assert s1["line_errors"] == 0


def test_the_icebreaker_serial_trainer_trains_over_uart_bit_exactly():
    """``open_backend("sim-uart", board="icebreaker")``: the core the iCEBreaker's bitstream
    has (hw/trainers/serial_trainer.py, ACT and WGT in the SB_SPRAM256KA model) behind the same UART
    link, with its widths and small memories; two steps bit-exact with golden."""
    geometry = Geometry(side=2, act_depth=256, wgt_depth=256, err_depth=128, code_depth=128,
                        label_depth=16, prog_depth=32, wgt_width=16, acc_width=36,
                        d_g_width=36)
    backend = open_backend("sim-uart", _spec(), batch=BATCH, seed=SEED, geometry=geometry,
                           board="icebreaker", clocks_per_bit=CLOCKS_PER_BIT,
                           link_timeout=LINK_TIMEOUT, max_burst=MAX_BURST)
    try:
        assert backend.geometry == geometry and backend.mac_elements == 1
        net = Network(_spec(), seed=SEED)
        _same_weights(backend, net, "after loading")
        rng = np.random.default_rng(SEED)
        for step, lr_inv in enumerate((256, 512)):
            _step(backend, net, rng, lr_inv, f"step {step}")
        assert backend.bus.client.transport.stats()["line_errors"] == 0
    finally:
        backend.close()


def _expect_error(client, code, what):
    rsp = client.read_response()
    assert (rsp.kind, rsp.info) == (P.RSP_ERROR, code), f"{what}: got {rsp}"


def test_corrupted_frames_between_steps_change_nothing(uart_backend):
    client = uart_backend.bus.client
    transport = client.transport
    backend = AcceleratorBackend(uart_backend.bus, _spec(), batch=BATCH, seed=SEED + 1)
    net = Network(_spec(), seed=SEED + 1)
    rng = np.random.default_rng(SEED + 1)
    _step(backend, net, rng, 256, "step 0")
    errors0 = client.ping().error_count

    # a WRITE over the first weight words, with other values: must never land
    region, base, words = backend.plan.pack_weights(net.weights())[0]
    assert region == Region.WGT
    addr, chunks = isa.bus_writes(GEOMETRY, region, base, words)[0]
    n = min(len(chunks), 16)
    other = [int(w) for w in rng.integers(0, 1 << 32, n, dtype=np.uint64)]
    frame = L.encode_request(P.CMD_WRITE, addr, n, other)
    expected_errors = 0

    # 1. bad CRC: one payload bit flipped, then the CRC bytes themselves
    for pos in (7 + 4 * (n // 2), len(frame) - 1):
        bad = bytearray(frame)
        bad[pos] ^= 0x10
        transport.write(bytes(bad))
        _expect_error(client, P.ERR_CRC, f"CRC corrupted at byte {pos}")
        expected_errors += 1

    # 2. truncated frames: the board answers ERR_TIMEOUT once the line stayed quiet
    for cut in (1, 4, 7, 7 + 4 * n + 1):
        transport.write(frame[:cut])
        _expect_error(client, P.ERR_TIMEOUT, f"frame cut after {cut} bytes")
        expected_errors += 1

    # 3. garbage without a sync byte: skipped, no answer at all
    garbage = bytes(b for b in rng.integers(0, 256, 120, dtype=np.uint8).tolist() if b != P.SYNC)
    transport.write(garbage)
    assert client.drain() == b"", "garbage without a sync byte was answered"

    # 4. garbage with a sync byte in it: whatever frame it starts ends in one ERROR answer
    #    (bad CRC, unknown command, bad length or timeout), nothing else
    for k in range(3):
        junk = bytes(rng.integers(0, 256, 30, dtype=np.uint8).tolist())
        junk = bytes(b for b in junk if b != P.SYNC)[:10] + bytes([P.SYNC]) + junk[10:]
        transport.write(junk)
        events = L.ResponseDecoder().feed(client.drain())
        assert events and all(isinstance(e, L.Response) and e.kind == P.RSP_ERROR
                              for e in events), f"garbage {k}: {events}"
        expected_errors += len(events)

    # the link works, counted every ERROR, and nothing changed on the Trainer
    assert client.ping().error_count == (errors0 + expected_errors) & 0xFFFF
    _same_weights(backend, net, "after the corrupted frames")
    _step(backend, net, rng, 512, "step 1 after the corrupted frames")
    assert transport.stats()["line_errors"] == 0


def test_link_bus_gives_up_on_a_board_that_stays_busy():
    """On a board (no simulated ``idle``) LinkBus.wait_reg gives up after
    max_cycles / min_clock_hz seconds instead of polling forever; a value that comes in time
    still ends the wait."""
    from nitrod.backends import LinkBus

    class StuckClient:                          # a board whose STATUS never changes
        transport = None

        def __init__(self, word):
            self.word, self.reads = word, 0

        def read_words(self, addr, n):
            self.reads += 1
            return [self.word] * n

    client = StuckClient(word=1)
    bus = LinkBus(client, poll_seconds=0.001, min_clock_hz=1e6)
    t0 = time.monotonic()
    assert bus.wait_reg(2, 1, 0, max_cycles=50_000) is None
    assert 0.05 <= time.monotonic() - t0 < 5
    assert client.reads > 1
    client.word = 0
    assert bus.wait_reg(2, 1, 0, max_cycles=50_000) is None and client.reads > 1
    with pytest.raises(ValueError, match="min_clock_hz"):
        LinkBus(client, min_clock_hz=0)


def test_training_through_a_faulty_uart_is_bit_exact():
    """The gateware's soak: the HostLink in Verilator behind the simulated UART, with a line
    (tests/support/link_soak.py's FaultyLine) that flips bits, drops and duplicates bytes of
    requests and responses and loses whole responses (the lost ACK of a WRITE the Trainer did
    execute, START included); the host retries with the same SEQ.  Training steps stay
    bit-exact with golden, and the faults injected and recovered are printed."""
    from tests.support.link_soak import FaultyLine

    lines = []

    def faulty(transport):
        lines.append(FaultyLine(transport, np.random.default_rng(7), rate=0.06, lose_rate=0.03))
        return lines[-1]

    backend = open_backend("sim-uart", _spec(), batch=BATCH, seed=SEED, geometry=GEOMETRY,
                           clocks_per_bit=CLOCKS_PER_BIT, link_timeout=LINK_TIMEOUT,
                           max_burst=MAX_BURST, retries=8, transport_wrapper=faulty)
    try:
        line, client = lines[0], backend.bus.client
        net = Network(_spec(), seed=SEED)
        rng = np.random.default_rng(SEED + 7)
        t0 = time.monotonic()
        for step in range(6):
            _step(backend, net, rng, (256, 512)[step % 2], f"faulty step {step}")
        stats = client.stats
        print(f"\nfaulty UART (Verilator): {line.frames} frames, {line.corrupted} corrupted "
              f"({100 * line.corrupted / line.frames:.1f}%), faults {dict(line.faults)}; "
              f"{stats['retries']} retries, {stats['recovered']} requests recovered, "
              f"{stats['timeouts']} timeouts, {stats['crc_errors']} CRC errors, "
              f"{stats['error_responses']} ERROR answers; {time.monotonic() - t0:.0f} s")
        assert line.corrupted >= 0.02 * line.frames and stats["recovered"] > 5
        assert line.faults["response lost"] > 0
    finally:
        backend.close()


def test_a_run_over_uart_interrupted_and_resumed_on_a_new_simulator_is_bit_exact(tmp_path):
    """The board path (LinkedCore behind the simulated UART): a run interrupted by SIGINT in its
    second epoch saves its state; a new simulator (a board started again) resumes it; the end
    equals the uninterrupted run (golden's, which the UART run equals step by step)."""
    import signal

    from golden.datasets import Dataset
    from golden.train import TrainConfig, TrainingInterrupted, train

    rng = np.random.default_rng(11)
    n_train, n_test = 24, 10
    x = rng.integers(0, 256, size=(n_train + n_test, 1, 1, K)).astype(np.uint8)
    y = np.arange(n_train + n_test) % CLASSES
    ds = Dataset("tiny", x[:n_train], y[:n_train], x[n_train:], y[n_train:], CLASSES)
    cfg = TrainConfig(epochs=2, batch=BATCH, seed=SEED, track_ranges=False)
    quiet = dict(progress=False, log=lambda s: None)
    whole = train(ds, _spec(), cfg, **quiet)

    def uart():
        return open_backend("sim-uart", _spec(), batch=BATCH, seed=SEED, geometry=GEOMETRY,
                            clocks_per_bit=CLOCKS_PER_BIT, link_timeout=LINK_TIMEOUT,
                            max_burst=MAX_BURST)

    def stop_at(epoch, batch):
        def after_step(e, b, *rest):
            if (e, b) == (epoch, batch):
                signal.raise_signal(signal.SIGINT)
        return after_step

    out = tmp_path / "run"
    backend = uart()
    try:
        with pytest.raises(TrainingInterrupted) as stop:
            train(ds, _spec(), cfg, out_dir=out, backend=backend, interruptible=True,
                  after_step=stop_at(2, 0), **quiet)
        assert (stop.value.epoch, stop.value.batch) == (2, 1)
    finally:
        backend.close()
    backend = uart()                       # a new simulator: the weights come from the file
    try:
        resumed = train(ds, _spec(), cfg, out_dir=out, backend=backend, resume=True, **quiet)
        _same_weights(backend, whole.network, "after the resumed run")
    finally:
        backend.close()
    assert resumed.metrics["history"] == whole.metrics["history"]
    for name, w in whole.network.weights().items():
        assert np.array_equal(resumed.network.weights()[name], w), name
