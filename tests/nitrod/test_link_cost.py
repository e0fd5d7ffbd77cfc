"""The link cost model (nitrod/link_cost.py) against the bytes runs actually move.

* pure Python: training steps through ``LinkClient`` over the reference device model of the
  HostLink (tests/support/link_soak.py's DeviceLine over a MachineBus), pipelined or not, at
  several bursts and array sides (72-bit ACT words at S = 8: padded runs): every step's bytes
  both ways, frames and polls equal the model's, as do opening the backend and reading the
  weights;
* Verilator: the same through the simulated UART (sim/link_client.py: every bit on the line)
  into LinkedCore with the iCEBreaker's SerialTrainer at the board's divisor and burst, and
  with an 8 x 8 Trainer (72-bit ACT words, so the padding chunks reach a real core), each step
  bit-exact with golden and its bytes equal to the model's;
* the model's figures for the boards' default networks.
"""

from __future__ import annotations

import numpy as np
import pytest

from golden.datasets import one_hot
from golden.network import Network, NetworkSpec
from hw.contract import Geometry
from hw.contract import link as P
from nitrod.backends import AcceleratorBackend, LinkBus, open_backend
from nitrod.link import LinkClient
from nitrod.link_cost import LineMeter, LinkCostModel, LinkSettings, Traffic, frames_traffic
from tests.support.link_soak import DeviceLine, MachineBus

K, HIDDEN, CLASSES = 13, 7, 5


def _spec():
    return NetworkSpec((1, 1, K), CLASSES, (f"l{HIDDEN}",), relu_inv_slope=4,
                       fwd_decay_inv=1200, subnet_decay_inv=700)


def _same(got: dict, want: Traffic, polls: int, what: str):
    assert got == {"to_board": want.to_board, "from_board": want.from_board,
                   "frames": want.frames, "status_reads": polls + 1}, what


def _run_and_compare(backend, meter, model, batch, steps, seed=5, check_golden=False):
    """``steps`` (sample counts) through ``backend``; each step's metered bytes equal the
    model's (with the polls the run made); returns the step traffics."""
    rng = np.random.default_rng(seed)
    net = Network(model.spec, seed=seed) if check_golden else None
    key, out = None, []
    for i, m in enumerate(steps):
        lr_inv = 512
        x = rng.integers(-127, 128, size=(m, K)).astype(np.int8)
        target = one_hot(rng.integers(0, CLASSES, size=m), CLASSES)
        yhat = backend.train_step(x, target, lr_inv)
        got = meter.take()
        polls = got["status_reads"] - 1
        assert polls >= 1
        want = model.step_traffic(m, polls=polls, program=(lr_inv, m) != key)
        key = (lr_inv, m)
        _same(got, want, polls, f"step {i} ({m} samples)")
        out.append(want)
        if net is not None:
            assert np.array_equal(yhat, net.train_step(x.reshape(m, 1, 1, K), target, lr_inv))
            got_w, want_w = backend.weights(), net.weights()
            meter.take()
            for name in want_w:
                assert np.array_equal(got_w[name], want_w[name]), (i, name)
    return out


@pytest.mark.parametrize("side, max_burst, pipelined", [
    (4, 64, True), (8, 64, True), (8, 255, False), (2, 255, True), (8, 7, True)])
def test_the_model_counts_every_byte_through_the_reference_device(side, max_burst, pipelined):
    geometry = Geometry(side=side)
    batch = 9
    meter = LineMeter(DeviceLine(MachineBus(geometry), max_burst))
    client = LinkClient(meter, max_burst=max_burst, first_seq=0)
    backend = AcceleratorBackend(LinkBus(client, pipelined=pipelined), _spec(), batch=batch,
                                 seed=1)
    settings = LinkSettings(max_burst=max_burst, pipelined=pipelined)
    model = LinkCostModel(_spec(), geometry, batch, settings, macs=side * side)
    opened = meter.take()
    want = frames_traffic(model.open_ops, settings)
    assert (opened["to_board"], opened["from_board"], opened["frames"]) == (
        want.to_board, want.from_board, want.frames)
    steps = _run_and_compare(backend, meter, model, batch, (batch, batch, 4, batch))
    assert steps[1].bytes < steps[0].bytes            # the program is written when it changes
    backend.weights()
    got = meter.take()
    _same(got, model.weights_traffic(), -1, "the weights")
    if pipelined and max_burst >= P.BURST_ALIGN:
        assert steps[1].round_trips < steps[1].frames


def test_frames_traffic_by_hand():
    """300 words, bursts of 64, half duplex: 5 frames (4 of 64, one of 44), each 10 bytes
    of frame and 4 a word, each answered by a 7-byte ACK; posted: the same bytes in one round
    trip (frames end on multiples of 16: 64-word frames from 0); a READ of 300: 5 requests of 10,
    responses of 7 + 4 a word; a wait with 3 polls: 3 x (10 + 11)."""
    half = LinkSettings(baud=1e6, max_burst=64, pipelined=False)
    piped = LinkSettings(baud=1e6, max_burst=64)
    mem = 3 << 20
    w = frames_traffic([("write", mem, 300)], half)
    assert (w.to_board, w.from_board, w.frames, w.round_trips) == (1250, 35, 5, 5)
    assert w.seconds == pytest.approx((1250 + 35) * 10 / 1e6)
    p = frames_traffic([("write", mem, 300)], piped)
    assert (p.to_board, p.from_board, p.frames, p.round_trips) == (1250, 35, 5, 1)
    assert p.seconds == pytest.approx((1250 + 7) * 10 / 1e6)
    r = frames_traffic([("read", mem, 300)], piped)
    assert (r.to_board, r.from_board, r.frames) == (50, 35 + 1200, 5)
    assert frames_traffic([("wait", 2, 0)], piped, polls=3).bytes == 3 * 21
    regs = frames_traffic([("write", 1, 1)], piped)     # a register: never posted
    assert (regs.bytes, regs.round_trips) == (14 + 7, 1)


def test_the_boards_default_networks():
    """The iCEBreaker's digits MLP at batch 32 and the ULX3S's MNIST MLP at batch 32 at the
    boards' rates: the bytes of a step (inputs as 9-bit lanes in 32-bit chunks, both layouts;
    the 72-bit ACT words of the ULX3S padded to 4 chunks), and the compute against the link."""
    from boards.boards import get_board
    from nitrod.board_build import network_spec

    ice = get_board("icebreaker")
    model = LinkCostModel(network_spec(ice), ice.geometry, 32,
                          LinkSettings(baud=ice.baud, max_burst=ice.link_max_burst),
                          core=ice.trainer, clock_hz=ice.core_mhz() * 1e6)
    step = model.step()
    t = step["traffic"]
    # 2 x 1,024 ACT words of 18 bits (1 chunk) and 32 labels: 2,080 words in 12 frames (ends
    # on multiples of 16: 240 words); STATUS, OVERFLOW, CYCLES; 160 ERR words of 48 bits (2
    # chunks) read in 2 frames
    assert t.to_board == 4 * 2080 + 10 * (5 + 5 + 1) + 2 * 14 + 10 * (step["polls"] + 3 + 2)
    assert step["run_seconds"] == pytest.approx(1_675_377 / 30e6)
    assert 300 < step["samples_per_s"] < 32 / step["run_seconds"]
    ulx = get_board("ulx3s-85f")
    model = LinkCostModel(network_spec(ulx), ulx.geometry, 32,
                          LinkSettings(baud=ulx.baud, max_burst=ulx.link_max_burst))
    t = model.step_traffic()
    assert t.to_board > 4 * 2 * 3136 * 4            # 2 x 3,136 words of 72 bits, 4 chunks each
    saved = model.inputs_as_bytes()
    assert saved["input_payload_bytes_now"] == 2 * 3136 * 16
    assert saved["input_payload_bytes_as_bytes"] == 32 * 784
    assert saved["step_bytes_as_bytes"] < saved["step_bytes_now"] / 3


def test_a_cnn_is_counted_for_a_core_that_runs_it():
    """A CNN's step is modelled on a core that runs CNN programs (the ULX3S's Trainer,
    RUNS_CNN); on the iCEBreaker's SerialTrainer, or without a core, the model refuses it as
    the backend does."""
    from boards.boards import get_board
    from golden.network import parse_layers
    from nitrod.compiler import CompileError

    spec = NetworkSpec((1, 8, 8), 10, parse_layers("c4,p,l64"), fwd_decay_inv=30000)
    ulx, ice = get_board("ulx3s-85f"), get_board("icebreaker")
    settings = LinkSettings(baud=ulx.baud, max_burst=ulx.link_max_burst)
    model = LinkCostModel(spec, ulx.geometry, 12, settings, core=ulx.trainer,
                          clock_hz=ulx.core_mhz() * 1e6, cycles=100_000)
    step = model.step()
    assert step["traffic"].to_board > 2 * 12 * 64 / 8    # the input, both layouts
    assert 0 < step["samples_per_s"] < 12 / 1e-3         # the run alone takes 1 ms
    for core in (ice.trainer, None):
        with pytest.raises(CompileError):
            LinkCostModel(spec, ice.geometry, 12, settings, core=core)


# --------------------------------------------------------------------------- Verilator

def _sim_uart_compare(board, geometry, cpb, max_burst, steps, batch):
    meters = []

    def wrap(transport):
        meters.append(LineMeter(transport))
        return meters[-1]

    backend = open_backend("sim-uart", _spec(), batch=batch, seed=5, geometry=geometry,
                           board=board, clocks_per_bit=cpb, link_timeout=64 * 10 * cpb,
                           max_burst=max_burst, transport_wrapper=wrap)
    try:
        meter = meters[0]
        settings = LinkSettings(max_burst=max_burst)
        model = LinkCostModel(_spec(), geometry, batch, settings,
                              macs=backend.mac_elements)
        backend.load_weights(Network(_spec(), seed=5).weights())
        meter.take()
        _run_and_compare(backend, meter, model, batch, steps, check_golden=True)
        assert backend.bus.client.stats["retries"] == 0
        assert backend.bus.client.transport.stats()["line_errors"] == 0
    finally:
        backend.close()


def test_the_model_counts_every_byte_on_the_simulated_uart_of_the_icebreaker():
    """The iCEBreaker's chain in Verilator at its 3 Mbaud divisor (10 cycles a bit at 30 MHz),
    its burst (255) and receiver FIFO, posted WRITE groups back to back: three steps (one
    partial) bit-exact with golden, each moving exactly the model's bytes."""
    from hw.link.uart import uart_timing

    cpb = uart_timing(30e6, 3_000_000).divisor
    geometry = Geometry(side=2, act_depth=256, wgt_depth=256, err_depth=128, code_depth=128,
                        label_depth=16, prog_depth=32, wgt_width=16, acc_width=36,
                        d_g_width=36)
    _sim_uart_compare("icebreaker", geometry, cpb, 255, (8, 8, 5), 8)


def test_the_model_counts_every_byte_on_the_simulated_uart_of_an_8x8_trainer():
    """An 8 x 8 Trainer (ACT words of 72 bits: three chunks and a padding chunk the core
    ignores) behind the simulated UART, pipelined: two steps bit-exact with golden, each moving
    exactly the model's bytes."""
    geometry = Geometry(side=8, act_depth=256, wgt_depth=256, err_depth=128, code_depth=128,
                        label_depth=16, prog_depth=32)
    _sim_uart_compare(None, geometry, 4, 64, (8, 8), 8)


def test_the_report_gives_end_to_end_beside_compute():
    """``nitrod build``'s annotate, on a report as the board flow writes it: the compute-only
    samples/s at the core clock and beside it the end-to-end figure over an epoch of the
    network's training set (its weights read once), smaller; the link's figures; nothing
    projected when timing is not met."""
    from boards.boards import get_board
    from nitrod.board_build import annotate

    for name, cycles in (("icebreaker", None), ("ulx3s-85f", 95_000)):
        board = get_board(name)
        report = {"core": "trainer", "timing_met": True, "target_mhz": board.core_mhz(),
                  "notes": [], "link": {"baud": board.baud,
                                        "link_max_burst": board.link_max_burst}}
        out = annotate(board, board.geometry, report, cycles_per_step=cycles,
                       batch=32 if cycles else None)
        assert not report["notes"], report["notes"]
        link = out["link_cost"]
        assert (link["baud"], link["max_burst"]) == (3_000_000, board.link_max_burst)
        assert 0 < out["end_to_end_samples_per_s"] < out["compute_samples_per_second"]
        assert link["epoch"]["samples"] == board.network["train_samples"]
        # the ULX3S: its 392 input frames in groups of MAX_GROUP_FRAMES
        assert link["epoch"]["weight_read_bytes"] > 0 and link["step"]["round_trips"] < 25
        assert link["inputs_as_bytes"]["step_bytes_then"] < link["step"]["bytes_to_board"]
        # the device's multipliers all busy at the build's clock: 8 SB_MAC16 at 30 MHz on
        # 28,300 MACs a digits sample, 156 MULT18X18D at 100 MHz on 172,300 an MNIST one
        ceiling = {"icebreaker": 8 * 30e6 / 28_300, "ulx3s-85f": 156 * 100e6 / 172_300}[name]
        assert out["multiplier_ceiling_samples_per_s"] == round(ceiling, 1)
        assert out["multiplier_ceiling_fraction"] == round(
            out["compute_samples_per_second"] / ceiling, 4)
        report["timing_met"] = False
        out = annotate(board, board.geometry, report, cycles_per_step=cycles,
                       batch=32 if cycles else None)
        assert out["end_to_end_samples_per_s"] is None and out["link_cost"]["step"]["frames"]


def test_the_boards_training_set_sizes():
    """The epoch the report counts is the network's training split."""
    from boards.boards import BOARD
    from golden.datasets import load_dataset

    for board in BOARD.values():
        ds = load_dataset(board.network["dataset"])
        assert len(ds.x_train) == board.network["train_samples"], board.name
