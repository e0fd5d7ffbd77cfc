"""Every trainer core passes the conformance suite (tests/support/conformance.py): whole
training steps bit-exact with golden, memories equal to the machine model, cycles equal to the
cycle model where the core has one, overflow flags, LOSS padding, refused accesses and
instructions.  The cores that run CNN programs (``RUNS_CNN``: the Trainer) also pass the CNN
checks (whole CNN steps, random instructions with the spatial levels, the pools against NumPy,
a conv product's overflow, impossible CNN instructions refused); a core without ``RUNS_CNN``
(the SerialTrainer) refuses every CNN instruction.

The cores: the Trainer (a 4 x 4 array, memories in banks of 32 words so that every read path
crosses bank boundaries, a 40-bit accumulator (and SGD divisor) so that an overflow takes few
beats), as the
ECP5 boards build it (hand-instantiated MULT18X18D and DP16KD, on their models), with a row
every cycle into the lanes, and with a one-row FIFO; the SerialTrainer with the iCEBreaker's
widths, on lib.memory and on the SB_SPRAM256KA model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

from hw.contract import Geometry
from hw.trainers.serial_trainer import SerialTrainer
from hw.trainers.trainer import Trainer
from sim.bus_client import SimBus
from tests.support import conformance as c

#: the Trainer's test geometry (module docstring)
TRAINER = Geometry(side=4, act_depth=1024, wgt_depth=1024, err_depth=512, code_depth=512,
                   acc_width=40, d_g_width=40)
#: the ECP5 blocks' run: memories just deep enough for its networks (each DP16KD model adds
#: its own code to the Verilator build), still in banks the networks cross
TRAINER_ECP5 = Geometry(side=4, act_depth=512, wgt_depth=256, err_depth=64, code_depth=64)
#: the iCEBreaker's widths (boards/boards.py) with small memories
SERIAL = Geometry(side=2, act_depth=1024, wgt_depth=1024, err_depth=256, code_depth=512,
                  label_depth=256, prog_depth=32, wgt_width=16, acc_width=36, d_g_width=36)
BANK_DEPTH = 32


@dataclass(frozen=True)
class Core:
    name: str
    make: Callable
    cls: type
    geometry: Geometry
    networks: tuple = tuple(range(len(c.NETWORKS)))
    cycle_factor: int = 1
    cnn_networks: tuple = ()          # c.CNN_NETWORKS trained on it (a RUNS_CNN core)


CORES = {core.name: core for core in (
    Core("trainer", lambda: Trainer(TRAINER, bank_depth=BANK_DEPTH), Trainer, TRAINER,
         cnn_networks=("c3-p-c5-l3", "c3-a-c5")),
    Core("trainer_ecp5", lambda: Trainer(TRAINER_ECP5, bank_depth=BANK_DEPTH,
                                         mac_options={"multiplier": "ecp5_dsp"},
                                         memory_block="dp16kd"),
         Trainer, TRAINER_ECP5, networks=(0, 2), cnn_networks=("c3-p-c5-l3-small",)),
    # the lanes take a row every cycle: the front and the writer take rows back to back, and
    # each memory's address register must load the walkers' next address
    Core("trainer_rows1", lambda: Trainer(TRAINER, bank_depth=BANK_DEPTH, row_cycles=1),
         Trainer, TRAINER, networks=(1, 3), cnn_networks=("c3-p-c5-l3",)),
    # a one-row FIFO: the front waits for a credit before every row (slower, not different)
    Core("trainer_fifo1", lambda: Trainer(TRAINER, bank_depth=BANK_DEPTH, fifo_depth=1),
         Trainer, TRAINER, networks=(1,), cycle_factor=40, cnn_networks=("c3-a-c5",)),
    Core("serial", lambda: SerialTrainer(SERIAL), SerialTrainer, SERIAL),
    Core("serial_spram", lambda: SerialTrainer(SERIAL, memory_block="spram"), SerialTrainer,
         SERIAL, networks=(0, 2)),
)}
#: the cores every check runs on (the variants above run the whole steps)
MAIN = ("trainer", "serial")
#: the cores that run CNN programs (RUNS_CNN) and those that refuse them, among MAIN and the
#: ECP5 run
CNN_MAIN = tuple(n for n in ("trainer", "trainer_ecp5", "serial") if CORES[n].cls.RUNS_CNN)
NO_CNN = tuple(n for n in MAIN if not CORES[n].cls.RUNS_CNN)


def _cases(cases, cores):
    """``(core, case)`` parameters of every core and case."""
    return [pytest.param(core, case, id=f"{case}-{core}") for core in cores for case in cases]


@pytest.fixture(scope="module")
def buses():
    """One simulator per core, started on first use, kept for the module."""
    started = {}
    yield lambda name: started.get(name) or started.setdefault(name, _start(CORES[name]))
    for bus in started.values():
        bus.close()


def _start(core):
    return SimBus.start(core.make, core.name, read_latency=core.cls.READ_LATENCY)


def _serial_cycle_bound(geometry):
    """A loose bound on a SerialTrainer run (its cycle model is checked exactly)."""
    S = geometry.side

    def bound(stats):
        elements = stats.tiles * S * S
        return (S * S * stats.beats + elements * 200 + stats.tiles * 8 * S
                + 40 * (stats.retired + 1))
    return bound


STEPS = [(name, n) for name, core in CORES.items() for n in core.networks]


@pytest.mark.parametrize("core_name, net", STEPS,
                         ids=[f"{name}-{c.network_id(c.NETWORKS[n])}" for name, n in STEPS])
def test_steps_are_bit_exact_with_golden(buses, core_name, net):
    core = CORES[core_name]
    g = core.geometry
    exact = core.cls.program_cycles(g, [{"op": 0}]) is not None
    c.check_steps(buses(core_name), c.NETWORKS[net], g, cycle_factor=core.cycle_factor,
                  cycle_bound=_serial_cycle_bound(g) if core.cls is SerialTrainer else None,
                  program_cycles=(lambda p: core.cls.program_cycles(g, p)) if exact else None)


@pytest.mark.parametrize("core_name", MAIN)
def test_a_step_run_one_instruction_at_a_time_is_the_same_step(buses, core_name):
    k, hidden, classes, cap, _, slope, _, _ = c.NETWORKS[0]
    spec = c.network_spec(k, hidden, classes, slope, np.random.default_rng(0))
    core = CORES[core_name]
    g = core.geometry
    exact = core.cls.program_cycles(g, [{"op": 0}]) is not None
    c.check_profiled_step(buses(core_name), g, spec, cap,
                          program_cycles=(lambda p: core.cls.program_cycles(g, p)) if exact
                          else None)


@pytest.mark.parametrize("core_name", CNN_MAIN)
def test_a_cnn_step_run_one_instruction_at_a_time_is_the_same_step(buses, core_name):
    name = "c3-p-c5-l3-small" if core_name == "trainer_ecp5" else "c3-p-c5-l3"
    cfg = c.CNN_NETWORKS[name]
    c.check_profiled_step(buses(core_name), CORES[core_name].geometry, c.cnn_spec(cfg), cfg[3],
                          runs_cnn=True)


@pytest.mark.parametrize("core_name", MAIN)
def test_overflow_is_flagged_saturated_reported_and_cleared(buses, core_name):
    c.check_overflow(buses(core_name), CORES[core_name].geometry)


@pytest.mark.parametrize("core_name", MAIN)
def test_a_partial_sum_beyond_the_accumulator_sets_overflow_mac(buses, core_name):
    c.check_mac_overflow(buses(core_name), CORES[core_name].geometry)


@pytest.mark.parametrize("core_name", MAIN)
def test_loss_zeroes_the_rows_labelled_padding(buses, core_name):
    c.check_loss_padding(buses(core_name), CORES[core_name].geometry)


@pytest.mark.parametrize("core_name", MAIN)
def test_memory_access_while_running_or_out_of_range_is_an_error(buses, core_name):
    c.check_access_errors(buses(core_name), CORES[core_name].geometry)


@pytest.mark.parametrize("core_name", MAIN)
@pytest.mark.parametrize("case", list(c.BAD_DIVISORS))
def test_a_divisor_no_unit_divides_by_is_an_op_error_and_writes_nothing(buses, core_name,
                                                                        case):
    c.check_bad_divisors(buses(core_name), CORES[core_name].geometry, case)


@pytest.mark.parametrize("core_name", NO_CNN)
@pytest.mark.parametrize("case", list(c.CNN_REFUSED))
def test_a_cnn_instruction_is_an_op_error_and_writes_nothing(buses, core_name, case):
    """A core that does not run CNN programs refuses their instructions."""
    c.check_cnn_refused(buses(core_name), CORES[core_name].geometry, case)


CNN_STEPS = [(name, net) for name, core in CORES.items() for net in core.cnn_networks]


@pytest.mark.parametrize("core_name, net", CNN_STEPS, ids=[f"{n}-{net}" for n, net in CNN_STEPS])
def test_cnn_steps_are_bit_exact_with_golden(buses, core_name, net):
    core = CORES[core_name]
    g = core.geometry
    exact = core.cls.program_cycles(g, [{"op": 0}]) is not None
    c.check_cnn_steps(buses(core_name), c.CNN_NETWORKS[net], g,
                      c.cnn_cycle_bound(g, core.cycle_factor),
                      program_cycles=(lambda p: core.cls.program_cycles(g, p)) if exact else None)


@pytest.mark.parametrize("core_name, op", _cases(c.CNN_OPS, CNN_MAIN))
def test_cnn_instructions_equal_the_model_word_for_word(buses, core_name, op):
    c.check_cnn_instructions(buses(core_name), CORES[core_name].geometry, op)


@pytest.mark.parametrize("core_name, case", _cases(c.POOL_CASES, CNN_MAIN))
def test_the_pool_unit_against_numpy(buses, core_name, case):
    c.check_pools(buses(core_name), CORES[core_name].geometry, case)


@pytest.mark.parametrize("core_name", [n for n in CNN_MAIN if n in MAIN])
def test_a_conv_partial_sum_beyond_the_accumulator_sets_overflow_mac(buses, core_name):
    c.check_cnn_mac_overflow(buses(core_name), CORES[core_name].geometry)


@pytest.mark.parametrize("core_name, case",
                         _cases(list(c.CNN_STILL_REFUSED), [n for n in CNN_MAIN if n in MAIN]))
def test_an_impossible_cnn_instruction_is_an_op_error_and_writes_nothing(buses, core_name,
                                                                          case):
    c.check_cnn_still_refused(buses(core_name), CORES[core_name].geometry, case)
