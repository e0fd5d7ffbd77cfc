"""The SerialTrainer (hw/serial_trainer.py) in Verilator against the golden model, step by step.

The same checks as tests/test_trainer.py (whole training steps of random MLPs bit-exact with
golden ``Network.train_step``, every memory word equal to the NumPy Trainer model, forced
overflows, LOSS's padding rows, refused accesses), on the SerialTrainer with the iCEBreaker's
widths (16-bit weights, 36-bit accumulators and SGD divisor; boards/boards.py), once with
``lib.memory`` memories and once with ACT and WGT in the SB_SPRAM256KA model
(hw/ice40_spram.py); then what only the SerialTrainer does: its cycle count, and its
``op_error`` for divisors it cannot divide by.
"""

from __future__ import annotations

import numpy as np
import pytest

from hw.serial_trainer import SerialTrainer
from nitrod import isa
from nitrod.backends import AcceleratorBackend, AcceleratorError
from nitrod.isa import Geometry, Op, Reg, Region, pack_instruction
from nitrod.isa_model import IsaError, IsaMachine
from sim.bus_client import SimBus
from test_trainer import (NETWORKS, _check_steps, _ins, check_access_errors, check_loss_padding,
                          check_overflow)

#: the iCEBreaker's widths (boards/boards.py: ICEBREAKER_GEOMETRY) with small memories
GEOMETRY = Geometry(side=2, act_depth=1024, wgt_depth=1024, err_depth=256, code_depth=512,
                    label_depth=256, prog_depth=32, wgt_width=16, acc_width=36, d_g_width=36)


def _cycle_bound(geometry):
    """The most cycles a run of ``stats`` may take on the SerialTrainer (a loose bound; its
    cycle model, :meth:`SerialTrainer.program_cycles`, is checked exactly)."""
    S = geometry.side

    def bound(stats):
        elements = stats.tiles * S * S
        return S * S * stats.beats + elements * 200 + stats.tiles * 8 * S + 40 * (stats.retired + 1)
    return bound


@pytest.fixture(scope="module")
def bus():
    with SimBus.start(lambda: SerialTrainer(GEOMETRY), "serial_trainer",
                      read_latency=SerialTrainer.READ_LATENCY) as b:
        yield b


@pytest.fixture(scope="module")
def bus_spram():
    with SimBus.start(lambda: SerialTrainer(GEOMETRY, memory_block="spram"),
                      "serial_trainer_spram", read_latency=SerialTrainer.READ_LATENCY) as b:
        yield b


def _ids(c):
    return f"{c[0]}-{'-'.join(map(str, c[1]))}-{c[2]}_M{c[3]}"


@pytest.mark.parametrize("net_cfg", NETWORKS, ids=_ids)
def test_steps_are_bit_exact_with_golden(bus, net_cfg):
    _check_steps(bus, net_cfg, geometry=GEOMETRY, cycle_bound=_cycle_bound(GEOMETRY),
                 program_cycles=lambda p: SerialTrainer.program_cycles(GEOMETRY, p))


@pytest.mark.parametrize("net_cfg", NETWORKS[::2], ids=_ids)
def test_steps_are_bit_exact_with_golden_on_the_spram_model(bus_spram, net_cfg):
    _check_steps(bus_spram, net_cfg, geometry=GEOMETRY, cycle_bound=_cycle_bound(GEOMETRY),
                 program_cycles=lambda p: SerialTrainer.program_cycles(GEOMETRY, p))


def test_overflow_is_flagged_saturated_reported_and_cleared(bus):
    check_overflow(bus, GEOMETRY)


def test_loss_zeroes_the_rows_labelled_padding(bus):
    check_loss_padding(bus, GEOMETRY)


def test_memory_access_while_running_or_out_of_range_is_an_error(bus):
    check_access_errors(bus, GEOMETRY)


@pytest.mark.parametrize("fields", [
    dict(op=Op.FORWARD, divisor=0, inv_slope=4),
    dict(op=Op.LOSS, divisor=GEOMETRY.divisor_max + 1),
    dict(op=Op.SGD, d_g=0, b_src=1),
    dict(op=Op.SGD, d_g=1 << GEOMETRY.d_g_width, b_src=1),
    dict(op=Op.SGD, d_g=3, d_w=1 << GEOMETRY.d_w_width, b_src=1),
], ids=["forward-divisor-0", "loss-divisor-too-large", "sgd-d_g-0", "sgd-d_g-too-wide",
        "sgd-d_w-too-wide"])
def test_a_divisor_it_cannot_divide_by_is_an_op_error_and_writes_nothing(bus, fields):
    g = GEOMETRY
    backend = AcceleratorBackend.__new__(AcceleratorBackend)     # no network: raw programs
    backend.bus, backend.geometry, backend.max_cycles = bus, g, 10_000
    backend.total_cycles = 0
    backend.write_reg(Reg.CONTROL, 2)
    regions = (Region.ACT, Region.WGT, Region.ERR)
    backend._write_blocks([(r, 0, list(range(1, 9))) for r in regions])
    prog = [_ins(row_base=0, col_base=0, **fields), _ins(op=Op.END)]
    with pytest.raises(IsaError):
        IsaMachine(g).run(prog)               # the model refuses them too
    backend._write_words(Region.PROG, 0, [pack_instruction(i) for i in prog])
    with pytest.raises(AcceleratorError, match="op_error"):
        backend.run_program()
    assert backend.read_reg(Reg.RETIRED) == 0
    for r in regions:
        assert backend._read_words(r, 0, 8) == list(range(1, 9)), r.name
    backend.write_reg(Reg.CONTROL, 2)
    assert backend.read_reg(Reg.STATUS) == 1 << isa.STATUS_BITS["done"]


def test_a_partial_sum_beyond_the_accumulator_sets_overflow_mac_and_wraps_like_the_model(bus):
    """32 beats of 255 * (2**23 - 1) leave the 36-bit accumulator (the model's partial sums
    too): OVERFLOW.mac rises, the API names it, and the wrapped sums' FORWARD results and codes
    equal the model's."""
    g = GEOMETRY
    S = g.side
    backend = AcceleratorBackend.__new__(AcceleratorBackend)     # no network: raw programs
    backend.bus, backend.geometry, backend.max_cycles = bus, g, 100_000
    backend.total_cycles = 0
    backend.write_reg(Reg.CONTROL, 2)
    k = 32
    big = 2 ** (g.err_width - 1) - 1
    blocks = [
        (Region.ACT, 0, [isa.pack_word([255, -255], g.act_width)] * k),
        (Region.ERR, 0, [isa.pack_word([big, big - 12345], g.err_width)] * k),
    ]
    prog = [_ins(op=Op.FORWARD, b_src=1, k_len=k, divisor=1, inv_slope=4, row_base=100,
                 aux_base=100), _ins(op=Op.END)]
    model = IsaMachine(g)
    model.load(blocks)
    model.run(prog)
    assert model.overflow == {"mac": True, "backerr": False, "sgd": False}
    backend._write_blocks(blocks + [(Region.PROG, 0, [pack_instruction(i) for i in prog])])
    with pytest.raises(AcceleratorError, match="overflow_mac"):
        backend.run_program()
    assert backend.read_reg(Reg.OVERFLOW) == 1 << isa.OVERFLOW_BITS["mac"]
    for region in (Region.ACT, Region.CODE):
        width = g.act_width if region == Region.ACT else 2
        got = [isa.unpack_word(w, width, S, signed=region == Region.ACT)
               for w in backend._read_words(region, 100, S)]
        assert got == model.read(region, 100, S).tolist(), region.name
    backend.write_reg(Reg.CONTROL, 2)
    assert backend.read_reg(Reg.OVERFLOW) == 0


@pytest.mark.parametrize("batch, m", [(9, 9), (9, 5), (8, 8)])
def test_training_does_not_depend_on_what_the_memories_held_before(batch, m):
    """The iCEBreaker's SPRAM (ACT, WGT) holds undefined words at power-up and cannot be
    initialised: the compiler's programs must not read a word that neither the host
    (``pack_weights``, ``pack_batch``) nor an earlier instruction wrote.  On the NumPy model,
    memories full of random lane values train exactly like zeroed ones, full and partial
    batches."""
    from golden.network import Network, NetworkSpec
    from nitrod.compiler import compile_mlp
    from nitrod.isa_model import lane_signed, lane_width

    spec = NetworkSpec((1, 1, 13), 5, ("l7",), relu_inv_slope=4, fwd_decay_inv=1200,
                       subnet_decay_inv=700)
    plan = compile_mlp(spec, GEOMETRY, batch)
    runs = []
    for garbage in (False, True):
        machine = IsaMachine(GEOMETRY)
        rng = np.random.default_rng(7)
        if garbage:
            for r in (Region.ACT, Region.WGT, Region.ERR, Region.CODE):
                w = lane_width(GEOMETRY, r)
                lo, hi = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if lane_signed(r) else (0, 2)
                machine.mem[r][:] = rng.integers(lo, hi + 1, size=machine.mem[r].shape)
            labels = machine.mem[Region.LABEL]
            labels[:] = rng.integers(0, 256, size=labels.shape)
        machine.load(plan.pack_weights(Network(spec, seed=1).weights()))
        data = np.random.default_rng(3)
        weights = []
        for _ in range(3):
            x = data.integers(-127, 128, size=(m, 13)).astype(np.int8)
            machine.load(plan.pack_batch(x, data.integers(0, 5, size=m)))
            machine.run(plan.program(512, m))
            weights.append(plan.unpack_weights(machine.read_words))
        runs.append(weights)
    for zeroed, filled in zip(*runs):
        for name in zeroed:
            assert np.array_equal(zeroed[name], filled[name]), name
