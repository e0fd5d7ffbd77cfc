"""The conformance suite: what every trainer core must do, checked the same way on each.

Each check drives a core in Verilator over its host bus (sim/bus_client.py) through the API
the command line uses (nitrod/backends.py):

* :func:`check_steps`: whole training steps of a random MLP bit-exact with golden
  ``Network.train_step``, every word of every memory (padding included) equal to the NumPy
  machine model (nitrod/isa_model.py), the cycles within a bound, or equal to the core's exact
  cycle model where it has one;
* :func:`check_overflow`: forced BACKERR and SGD overflows flagged, saturated like the model,
  named by the API and cleared by Control.CLEAR;
* :func:`check_mac_overflow`: a partial sum beyond the accumulator sets OVERFLOW.mac and wraps
  like the model;
* :func:`check_loss_padding`: LOSS writes 0 for rows labelled PAD_LABEL;
* :func:`check_access_errors`: accesses beyond a memory and unknown ops are errors;
* :func:`check_bad_divisors`: an instruction whose divisor the units cannot divide by stops
  the program with ``op_error`` and writes nothing;
* :func:`check_cnn_refused`: an instruction of a CNN program (a CNN op, a non-zero field of
  ``hw.contract.CNN_FIELDS``), which today's cores do not implement (issue 31 stage B), stops
  the program with ``op_error`` and writes nothing.

tests/hw/trainers/test_conformance.py runs them on every core of the project.
"""

from __future__ import annotations

import numpy as np
import pytest

from golden.datasets import one_hot
from golden.network import Network, NetworkSpec
from hw import contract as isa
from hw.contract import (INSTRUCTION_FIELDS, Control, Op, Reg, Region, lane_width,
                         pack_instruction)
from nitrod.backends import AcceleratorBackend, AcceleratorError
from nitrod.isa_model import IsaError, IsaMachine

__all__ = ["NETWORKS", "network_id", "check_steps", "check_overflow", "check_mac_overflow",
           "check_loss_padding", "check_access_errors", "check_bad_divisors", "instruction",
           "BAD_DIVISORS", "CNN_REFUSED", "check_cnn_refused"]

# in_features, hidden, classes, batch capacity, seed, slope, lr_inv per step, batch per step
NETWORKS = [
    (13, [7], 5, 9, 1, 4, [256, 256, 768], [9, 5, 9]),
    (21, [11, 6], 3, 16, 2, 8, [512, 512, 512], [16, 16, 3]),
    (6, [5, 9, 4], 10, 7, 3, 3, [128, 384, 384], [7, 2, 7]),
    (8, [4], 4, 8, 4, 16, [64, 64], [8, 8]),
]


def network_id(cfg) -> str:
    return f"{cfg[0]}-{'-'.join(map(str, cfg[1]))}-{cfg[2]}_M{cfg[3]}"


MEMORIES = (Region.ACT, Region.WGT, Region.ERR, Region.CODE, Region.LABEL)


def _raw_backend(bus, geometry, max_cycles=100_000):
    """A backend on ``bus`` without a network: for raw programs."""
    backend = AcceleratorBackend.__new__(AcceleratorBackend)
    backend.bus, backend.geometry, backend.max_cycles = bus, geometry, max_cycles
    backend.total_cycles = 0
    backend.write_reg(Reg.CONTROL, Control.CLEAR)
    return backend


def network_spec(k, hidden, classes, slope, rng):
    return NetworkSpec((1, 1, k), classes, tuple(f"l{n}" for n in hidden), relu_inv_slope=slope,
                       fwd_decay_inv=int(rng.integers(300, 5000)),
                       subnet_decay_inv=int(rng.integers(50, 3000)))

def _image(backend, region):
    """A whole memory read back through the bus, as lanes (LABEL: one value per word)."""
    g = backend.geometry
    words = backend._read_words(region, 0, g.depth(region))
    if region == Region.LABEL:
        return np.array(words)
    return np.array([isa.unpack_word(w, lane_width(g, region), g.side,
                                     signed=region != Region.CODE) for w in words])


def _clear(backend):
    g = backend.geometry
    for region in MEMORIES:
        backend._write_words(region, 0, [0] * g.depth(region))


def check_steps(bus, net_cfg, geometry, cycle_factor=1, cycle_bound=None, program_cycles=None):
    """``cycle_bound(stats)``: the most cycles a step of the model's ``RunStats`` may take
    (default: ``cycle_factor`` times the beats plus 160 per instruction);
    ``program_cycles(program)``, if given, the exact cycles of a step's program."""
    k, hidden, classes, cap, seed, slope, lrs, sizes = net_cfg
    rng = np.random.default_rng(seed)
    spec = network_spec(k, hidden, classes, slope, rng)
    net = Network(spec, seed=seed)
    backend = AcceleratorBackend.__new__(AcceleratorBackend)    # clear memories first
    backend.bus, backend.geometry = bus, geometry
    _clear(backend)
    backend = AcceleratorBackend(bus, spec, batch=cap, seed=seed)
    assert backend.geometry == geometry
    plan = backend.plan
    model = IsaMachine(geometry)
    model.load(plan.pack_weights(net.weights()))
    # loading and reading back weights round-trips exactly
    for name, w in backend.weights().items():
        assert np.array_equal(w, net.weights()[name]), name
    for step, (lr_inv, m) in enumerate(zip(lrs, sizes)):
        where = f"step {step} (batch {m}, lr_inv {lr_inv})"
        x = rng.integers(-127, 128, size=(m, k)).astype(np.int8)
        labels = rng.integers(0, classes, size=m)
        target = one_hot(labels, classes)
        # the model first: its beats and instructions bound the step's cycles (checked below),
        # and a Trainer that has not ended by then fails at once (the API names it), instead
        # of after the default max_cycles
        model.load(plan.pack_batch(x, labels))
        stats = model.run(plan.program(lr_inv, m))
        bound = (cycle_factor * (stats.beats + 160 * (stats.retired + 1))
                 if cycle_bound is None else cycle_bound(stats))
        backend.max_cycles = bound + 1_000   # + bus cycles
        yhat = backend.train_step(x, target, lr_inv)
        want = net.train_step(x.reshape(m, 1, 1, k), target, lr_inv)
        got = backend.weights()
        for name, w in net.weights().items():
            bad = np.argwhere(got[name] != w)
            assert len(bad) == 0, (f"{where}: {name}{tuple(bad[0])} is "
                                   f"{got[name][tuple(bad[0])]}, golden {w[tuple(bad[0])]}")
        assert np.array_equal(yhat, want), where
        assert backend.read_reg(Reg.RETIRED) == stats.retired, where
        # every word of every memory, padding included, equals the NumPy Trainer model
        for region in MEMORIES:
            diff = np.argwhere(_image(backend, region) != model.mem[region])
            assert len(diff) == 0, f"{where}: {region.name} {tuple(diff[0])} differs from the model"
        # cycles: the engine's beats plus a bounded per-instruction overhead
        cycles = backend.last_cycles
        assert stats.beats <= cycles <= bound, (where, cycles)
        if program_cycles is not None:
            assert cycles == program_cycles(plan.program(lr_inv, m)), where




def instruction(**f):
    ins = {name: 0 for name, _ in INSTRUCTION_FIELDS}
    ins.update(row_len=0xFFFF, col_len=0xFFFF, tiles_r=1, tiles_c=1, k_len=1, a_k_stride=1,
               b_k_stride=1)
    ins.update(f)
    return ins




def check_overflow(bus, g):
    """BACKWARD with |E * WlT| beyond the ERR lane, then SGD pushing a weight at the WGT limit
    further: both flags set, results saturated exactly like the model, the API raises an
    AcceleratorError naming them, and CONTROL bit 1 clears them."""
    S = g.side
    spec = NetworkSpec((1, 1, 4), 3, ("l4",))
    backend = AcceleratorBackend(bus, spec, batch=4, seed=0)
    model = IsaMachine(g)
    wmax = 2 ** (g.wgt_width - 1) - 1
    pad = [0] * (S - 2)
    blocks = [
        # two beats of 255 * wmax: beyond the ERR lane with 16-bit weights too
        (Region.ACT, 0, [isa.pack_word([255, -255] + pad, g.act_width)] * 2),
        (Region.WGT, 0, [isa.pack_word([wmax, -wmax] + pad, g.wgt_width)] * 2),  # B of BACKWARD
        (Region.CODE, 0, [0] * S),                                              # PASS codes
        (Region.ERR, 8, [isa.pack_word([-2 ** 22, 2 ** 22] + pad, g.err_width)]),  # B of SGD
        (Region.WGT, 8, [isa.pack_word([wmax, -wmax] + pad, g.wgt_width)] * S),  # updated
    ]
    prog = [
        instruction(op=Op.BACKWARD, inv_slope=4, row_base=16, aux_base=0, tc_stride=0, k_len=2),
        instruction(op=Op.SGD, b_src=1, b_base=8, row_base=8, d_g=1, d_w=0),
        instruction(op=Op.END),
    ]
    model.load(blocks)
    model.run(prog)
    assert model.overflow == {"mac": False, "backerr": True, "sgd": True}
    backend._write_blocks(blocks + [(Region.PROG, 0, [pack_instruction(i) for i in prog])])
    with pytest.raises(AcceleratorError, match="overflow_backerr.*overflow_sgd") as info:
        backend.run_program()
    assert info.value.flags["overflow_backerr"] and info.value.flags["overflow_sgd"]
    assert not info.value.flags["overflow_mac"]
    bits = isa.OVERFLOW_BITS
    assert backend.read_reg(Reg.OVERFLOW) == (1 << bits["backerr"]) | (1 << bits["sgd"])
    for region, base in ((Region.ERR, 16), (Region.WGT, 8)):
        got = [isa.unpack_word(w, lane_width(g, region), S)
               for w in backend._read_words(region, base, S)]
        assert got == model.read(region, base, S).tolist(), region.name
    # the saturated values really are the limits (a wrong clamp fails here)
    assert model.read(Region.ERR, 16, 1).tolist()[0][0] == 2 ** (g.err_width - 1) - 1
    assert model.read(Region.WGT, 8, 1).tolist()[0][0] == wmax
    backend.write_reg(Reg.CONTROL, Control.CLEAR)
    assert backend.read_reg(Reg.OVERFLOW) == 0
    assert backend.read_reg(Reg.STATUS) == 1 << isa.STATUS_BITS["done"]




def check_loss_padding(bus, g):
    """LOSS on rows inside row_len whose LABEL is PAD_LABEL: their error (ERR, and the
    transposed copy in ACT) is 0, as in the model, though their products are not.  (The
    compiler's programs never reach such rows, so the whole-step tests do not cover it.)"""
    S = g.side
    rng = np.random.default_rng(11)
    spec = NetworkSpec((1, 1, 4), 3, ("l4",))
    backend = AcceleratorBackend(bus, spec, batch=4, seed=0)
    k, tiles_r, tiles_c = 5, 2, 2
    rows = tiles_r * S
    labels = [0, isa.PAD_LABEL, 5, isa.PAD_LABEL, 7, 3, isa.PAD_LABEL, 1][:rows]
    a = rng.integers(-60, 61, size=(tiles_r * k, S))
    b = rng.integers(-60, 61, size=(tiles_c * k, S))
    blocks = [
        (Region.ACT, 0, [isa.pack_word(list(v), g.act_width) for v in a]),
        (Region.WGT, 0, [isa.pack_word(list(v), g.wgt_width) for v in b]),
        (Region.LABEL, 0, labels),
        (Region.ERR, 0, [isa.pack_word([1] * S, g.err_width)] * (tiles_c * rows)),
    ]
    prog = [
        instruction(op=Op.LOSS, a_base=0, a_tile_stride=k, b_base=0, b_tile_stride=k, k_len=k,
             tiles_r=tiles_r, tiles_c=tiles_c, row_base=0, tc_stride=rows, divisor=3,
             col_en=1, col_base=64, col_tr_stride=tiles_c * S),
        instruction(op=Op.END),
    ]
    results = {}
    for pad_errors in (True, False):
        model = IsaMachine(g, pad_errors=pad_errors)
        model.load(blocks)
        model.run(prog)
        assert not any(model.overflow.values())
        results[pad_errors] = model
    model = results[True]
    err = model.read(Region.ERR, 0, tiles_c * rows)
    pad_rows = [m for m, lab in enumerate(labels) if lab == isa.PAD_LABEL]
    pad_words = [tc * rows + m for tc in range(tiles_c) for m in pad_rows]
    assert not err[pad_words].any()
    # without the rule those rows would hold non-zero errors: the test can fail
    assert results[False].read(Region.ERR, 0, tiles_c * rows)[pad_words].any()
    backend._write_blocks(blocks + [(Region.PROG, 0, [pack_instruction(i) for i in prog])])
    backend.run_program()
    # the transposed copy: ACT[64 + tr*tiles_c*S + tc*S + c], one word per column of each tile
    for region, base, n in ((Region.ERR, 0, tiles_c * rows), (Region.ACT, 64, tiles_c * rows)):
        got = [isa.unpack_word(w, lane_width(g, region), S)
               for w in backend._read_words(region, base, n)]
        assert got == model.read(region, base, n).tolist(), region.name




def check_access_errors(bus, g):
    spec = NetworkSpec((1, 1, 4), 3, ("l4",))
    backend = AcceleratorBackend(bus, spec, batch=4, seed=0)
    # a word beyond ACT's depth: dropped, flagged
    bus.write(isa.bus_address(Region.ACT, g.act_depth, 0, g.word_bits(Region.ACT)), [1, 2, 3])
    assert backend.read_reg(Reg.STATUS) >> isa.STATUS_BITS["access_error"] & 1
    with pytest.raises(AcceleratorError, match="access_error"):
        backend._check_flags()
    backend.write_reg(Reg.CONTROL, Control.CLEAR)
    # an unknown op stops the program with op_error
    backend._write_words(Region.PROG, 0, [pack_instruction(instruction(op=7))])
    with pytest.raises(AcceleratorError, match="op_error"):
        backend.run_program()
    backend.write_reg(Reg.CONTROL, Control.CLEAR)
    assert backend.read_reg(Reg.STATUS) == 1 << isa.STATUS_BITS["done"]


def check_mac_overflow(bus, g):
    """Beats of 255 * the largest ERR value, enough of them to leave ``acc_width``: OVERFLOW.mac
    rises, the API names it, and the wrapped sums' FORWARD results and codes equal the
    model's (which wraps its partial sums the same way)."""
    S = g.side
    backend = _raw_backend(bus, g)
    big = 2 ** (g.err_width - 1) - 1
    k = -(-(2 ** (g.acc_width - 1)) // (255 * big)) + 1
    pad = [0] * (S - 2)
    blocks = [
        (Region.ACT, 0, [isa.pack_word([255, -255] + pad, g.act_width)] * k),
        (Region.ERR, 0, [isa.pack_word([big, big - 12345] + pad, g.err_width)] * k),
    ]
    prog = [instruction(op=Op.FORWARD, b_src=1, k_len=k, divisor=1, inv_slope=4, row_base=k,
                        aux_base=k), instruction(op=Op.END)]
    model = IsaMachine(g)
    model.load(blocks)
    model.run(prog)
    assert model.overflow == {"mac": True, "backerr": False, "sgd": False}
    backend._write_blocks(blocks + [(Region.PROG, 0, [pack_instruction(i) for i in prog])])
    with pytest.raises(AcceleratorError, match="overflow_mac"):
        backend.run_program()
    assert backend.read_reg(Reg.OVERFLOW) == 1 << isa.OVERFLOW_BITS["mac"]
    for region in (Region.ACT, Region.CODE):
        got = [isa.unpack_word(w, lane_width(g, region), S, signed=region == Region.ACT)
               for w in backend._read_words(region, k, S)]
        assert got == model.read(region, k, S).tolist(), region.name
    backend.write_reg(Reg.CONTROL, Control.CLEAR)
    assert backend.read_reg(Reg.OVERFLOW) == 0


#: instructions whose divisors no unit divides by exactly (their ids, their fields)
BAD_DIVISORS = {
    "forward-divisor-0": lambda g: dict(op=Op.FORWARD, divisor=0, inv_slope=4),
    "loss-divisor-too-large": lambda g: dict(op=Op.LOSS, divisor=g.divisor_max + 1),
    "sgd-d_g-0": lambda g: dict(op=Op.SGD, d_g=0, b_src=1),
    "sgd-d_g-too-wide": lambda g: dict(op=Op.SGD, d_g=1 << g.d_g_width, b_src=1),
    "sgd-d_w-too-wide": lambda g: dict(op=Op.SGD, d_g=3, d_w=1 << g.d_w_width, b_src=1),
}


def check_bad_divisors(bus, g, case: str):
    """The instruction ``BAD_DIVISORS[case]`` stops the program with ``op_error`` before it
    retires and writes nothing (the model refuses it too)."""
    backend = _raw_backend(bus, g, max_cycles=10_000)
    regions = (Region.ACT, Region.WGT, Region.ERR)
    backend._write_blocks([(r, 0, list(range(1, 9))) for r in regions])
    prog = [instruction(row_base=0, col_base=0, **BAD_DIVISORS[case](g)),
            instruction(op=Op.END)]
    with pytest.raises(IsaError):
        IsaMachine(g).run(prog)
    backend._write_words(Region.PROG, 0, [pack_instruction(i) for i in prog])
    with pytest.raises(AcceleratorError, match="op_error"):
        backend.run_program()
    assert backend.read_reg(Reg.RETIRED) == 0
    for r in regions:
        assert backend._read_words(r, 0, 8) == list(range(1, 9)), r.name
    backend.write_reg(Reg.CONTROL, Control.CLEAR)
    assert backend.read_reg(Reg.STATUS) == 1 << isa.STATUS_BITS["done"]


#: instructions of CNN programs (issue 31) that today's cores refuse: (ids, their fields)
CNN_REFUSED = {
    "pool": dict(op=Op.POOL, windows=1, y_beats=2, y_stride=1),
    "pool-code": dict(op=Op.POOL_CODE),
    "scale": dict(op=Op.SCALE, divisor=4),
    "forward-y-tiles": dict(op=Op.FORWARD, divisor=1, inv_slope=4, y_tiles=2, y_out=8),
    "loss-x-beats": dict(op=Op.LOSS, divisor=1, x_beats=2, x_stride=1),
    "backward-tile-b": dict(op=Op.BACKWARD, inv_slope=4, tile_b=1),
    "sgd-x-repeat": dict(op=Op.SGD, d_g=3, b_src=1, x_repeat=2, x_out=8),
}


def check_cnn_refused(bus, g, case: str):
    """The instruction ``CNN_REFUSED[case]`` stops the program with ``op_error`` before it
    retires and writes nothing."""
    backend = _raw_backend(bus, g, max_cycles=10_000)
    regions = (Region.ACT, Region.WGT, Region.ERR)
    backend._write_blocks([(r, 0, list(range(1, 9))) for r in regions])
    prog = [instruction(row_base=0, col_base=0, **CNN_REFUSED[case]), instruction(op=Op.END)]
    backend._write_words(Region.PROG, 0, [pack_instruction(i) for i in prog])
    with pytest.raises(AcceleratorError, match="op_error"):
        backend.run_program()
    assert backend.read_reg(Reg.RETIRED) == 0
    for r in regions:
        assert backend._read_words(r, 0, 8) == list(range(1, 9)), r.name
    backend.write_reg(Reg.CONTROL, Control.CLEAR)
    assert backend.read_reg(Reg.STATUS) == 1 << isa.STATUS_BITS["done"]
