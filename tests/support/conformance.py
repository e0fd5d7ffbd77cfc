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
* :func:`check_profiled_step`: a step run one instruction at a time
  (``AcceleratorBackend.profile_step``, what ``nitrod bench sim``'s per-product figures come
  from) is the same step: bit-exact with golden, its instructions' cycles adding up to the
  whole step's (MLPs; CNNs on the cores that run them);
* :func:`check_cnn_refused`: on a core that does not run CNN programs (``RUNS_CNN`` False),
  an instruction of a CNN program (a CNN op, a non-zero field of ``hw.contract.CNN_FIELDS``)
  stops the program with ``op_error`` and writes nothing.

On the cores that run CNN programs (``RUNS_CNN``):

* :func:`check_cnn_steps`: whole training steps of small CNNs (:data:`CNN_NETWORKS`)
  bit-exact with golden, every memory word equal to the model after every step;
* :func:`check_cnn_instructions`: random instructions of every op with the spatial levels
  (tiles, repeats, beats, windows, tile_b, masks) word for word against the model;
* :func:`check_pools`: the pool unit against NumPy (ties, POOL_CODE's first maximum, a
  padded decoder pool whose unwalked words would win the maximum);
* :func:`check_cnn_mac_overflow`: a convolution's partial sums beyond the accumulator;
* :func:`check_cnn_still_refused`: empty products, bad divisors, a pool with ``col_en``.

tests/hw/trainers/test_conformance.py runs them on every core of the project.
"""

from __future__ import annotations

import numpy as np
import pytest

from golden.datasets import one_hot
from golden.network import Network, NetworkSpec
from hw import contract as isa
from hw.contract import (INSTRUCTION_FIELDS, Control, Op, Reg, Region, lane_width,
                         pack_instruction, unpack_instruction)
from nitrod.backends import AcceleratorBackend, AcceleratorError
from nitrod.isa_model import IsaError, IsaMachine

__all__ = ["NETWORKS", "network_id", "check_steps", "check_overflow", "check_mac_overflow",
           "check_loss_padding", "check_access_errors", "check_bad_divisors", "instruction",
           "BAD_DIVISORS", "CNN_REFUSED", "check_cnn_refused", "CNN_NETWORKS", "cnn_spec",
           "cnn_cycle_bound", "check_cnn_steps", "CNN_OPS", "check_cnn_instructions",
           "POOL_CASES", "check_pools", "CNN_STILL_REFUSED", "check_cnn_still_refused",
           "check_cnn_mac_overflow", "check_profiled_step"]

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


def _check_step(where, backend, net, yhat, want, retired, model):
    """After a training step: every weight equals golden's, the predictions equal golden's,
    the core retired the model's instructions, and every word of every memory, padding
    included, equals the NumPy machine model's."""
    got = backend.weights()
    for name, w in net.weights().items():
        bad = np.argwhere(got[name] != w)
        assert len(bad) == 0, (f"{where}: {name}{tuple(bad[0])} is "
                               f"{got[name][tuple(bad[0])]}, golden {w[tuple(bad[0])]}")
    assert np.array_equal(yhat, want), where
    assert backend.read_reg(Reg.RETIRED) == retired, where
    for region in MEMORIES:
        diff = np.argwhere(_image(backend, region) != model.mem[region])
        assert len(diff) == 0, f"{where}: {region.name} {tuple(diff[0])} differs from the model"


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
        _check_step(where, backend, net, yhat, want, stats.retired, model)
        # cycles: the engine's beats plus a bounded per-instruction overhead
        cycles = backend.last_cycles
        assert stats.beats <= cycles <= bound, (where, cycles)
        if program_cycles is not None:
            assert cycles == program_cycles(plan.program(lr_inv, m)), where




def check_profiled_step(bus, geometry, spec: NetworkSpec, batch: int, runs_cnn: bool = False,
                        program_cycles=None, seed: int = 3):
    """A whole step, then the next run one instruction at a time (``profile_step``): both
    bit-exact with golden; the second's instruction cycles (one per instruction, END
    excluded) each positive, adding up with an END's to the whole step's within a cycle per
    instruction (the cores' runs do not depend on the data); with ``program_cycles`` (the
    core's exact cycle model) each instruction's exactly."""
    rng = np.random.default_rng(seed)
    net = Network(spec, seed=seed)
    backend = AcceleratorBackend(bus, spec, batch=batch, seed=seed, runs_cnn=runs_cnn)
    backend.max_cycles = 10_000_000
    classes = spec.classes
    shape = spec.input_shape if spec.is_cnn else (spec.input_shape[-1],)
    for step in ("whole", "profiled"):
        x = rng.integers(-127, 128, size=(batch,) + shape).astype(np.int8)
        target = one_hot(rng.integers(0, classes, size=batch), classes)
        want = net.train_step(x.reshape((batch,) + spec.input_shape), target, 384)
        if step == "whole":
            yhat = backend.train_step(x, target, 384)
            whole = backend.last_cycles
        else:
            yhat, cycles = backend.profile_step(x, target, 384)
        assert np.array_equal(yhat, want), step
        for name, w in backend.weights().items():
            assert np.array_equal(w, net.weights()[name]), (step, name)
    assert backend.last_cycles == sum(cycles)
    program = backend.plan.program(384, batch)
    assert len(cycles) == len(program) - 1 == len(backend.plan.instruction_products(batch))
    assert min(cycles) > 0
    end = backend.run_program(1)                 # the END after the first instruction, alone
    assert abs(sum(cycles) + end - whole) <= len(cycles), (sum(cycles), end, whole)
    if program_cycles is not None:
        lone = program_cycles(program[-1:])
        assert end == lone
        assert cycles == [program_cycles([i, program[-1]]) - lone for i in program[:-1]]


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
    """A word beyond a memory is an access error; op 7 with divisor 0 (SCALE, or an op the
    core does not know) stops the program with ``op_error``."""
    spec = NetworkSpec((1, 1, 4), 3, ("l4",))
    backend = AcceleratorBackend(bus, spec, batch=4, seed=0)
    # a word beyond ACT's depth: dropped, flagged
    bus.write(isa.bus_address(Region.ACT, g.act_depth, 0, g.word_bits(Region.ACT)), [1, 2, 3])
    assert backend.read_reg(Reg.STATUS) >> isa.STATUS_BITS["access_error"] & 1
    with pytest.raises(AcceleratorError, match="access_error"):
        backend._check_flags()
    backend.write_reg(Reg.CONTROL, Control.CLEAR)
    # op 7 with divisor 0 stops the program with op_error (a bad divisor, or an unknown op)
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
    fields = BAD_DIVISORS[case](g)
    with pytest.raises(IsaError):
        IsaMachine(g).run([instruction(row_base=0, col_base=0, **fields),
                           instruction(op=Op.END)])
    _check_refused(bus, g, fields)


def _check_refused(bus, g, fields: dict):
    """The instruction of ``fields`` stops the program with ``op_error`` before it retires,
    writes nothing, and CLEAR leaves the core ready."""
    backend = _raw_backend(bus, g, max_cycles=10_000)
    regions = (Region.ACT, Region.WGT, Region.ERR)
    backend._write_blocks([(r, 0, list(range(1, 9))) for r in regions])
    prog = [instruction(row_base=0, col_base=0, **fields), instruction(op=Op.END)]
    backend._write_words(Region.PROG, 0, [pack_instruction(i) for i in prog])
    with pytest.raises(AcceleratorError, match="op_error"):
        backend.run_program()
    assert backend.read_reg(Reg.RETIRED) == 0
    for r in regions:
        assert backend._read_words(r, 0, 8) == list(range(1, 9)), r.name
    backend.write_reg(Reg.CONTROL, Control.CLEAR)
    assert backend.read_reg(Reg.STATUS) == 1 << isa.STATUS_BITS["done"]


#: instructions of CNN programs that a core without RUNS_CNN refuses: (ids, their
#: fields)
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
    retires and writes nothing (a core that does not run CNN programs)."""
    _check_refused(bus, g, CNN_REFUSED[case])


# --- CNN programs: the cores whose class says RUNS_CNN ---------------------------------------

#: CNNs trained step by step: input shape, layers, classes, batch capacity, decoder_dim,
#: slope, seed, lr_inv per step, batch per step; what each covers
CNN_NETWORKS = {
    # a max pool between blocks, a padded decoder pool (4 x 2 on 5 x 5), a linear block after
    # the convs, odd channel counts, sides not multiples of S, batches 3 and 1 at S = 4
    "c3-p-c5-l3": ((1, 5, 5), "c3,p,c5,l3", 3, 3, 20, 4, 1, [256, 512, 256], [3, 1, 3]),
    # an average pool a2 between blocks, decoder pools 8 x 4 and 4 x 2 on 6 x 5 and 3 x 2
    # (padded, rows cropped), two input channels, batch 1
    "c3-a-c5": ((2, 6, 5), "c3,a,c5", 4, 1, 6, 3, 2, [256, 768], [1, 1]),
    # small enough for the ECP5 run's memories: a max pool, a linear block, a padded decoder
    "c3-p-c5-l3-small": ((1, 4, 3), "c3,p,c5,l3", 3, 1, 6, 8, 3, [384, 256], [1, 1]),
}


def cnn_spec(cfg) -> NetworkSpec:
    shape, layers, classes, _, dd, slope, seed = cfg[:7]
    rng = np.random.default_rng(seed)
    return NetworkSpec(shape, classes, tuple(layers.split(",")), decoder_dim=dd,
                       relu_inv_slope=slope, fwd_decay_inv=int(rng.integers(300, 5000)),
                       subnet_decay_inv=int(rng.integers(50, 3000)))


def cnn_cycle_bound(geometry, factor=1):
    """A loose bound on a step's cycles from the model's ``RunStats``: every tile at least the
    MAC array's streaming time, the pools' reads twice (POOL_CODE) with their drains, an
    overhead per instruction."""
    S = geometry.side

    def bound(stats):
        return factor * (stats.beats + 16 * stats.tiles + 3 * S * stats.pool_beats
                         + 200 * (stats.retired + 1))
    return bound


def check_cnn_steps(bus, cfg, geometry, cycle_bound=None, program_cycles=None):
    """Whole training steps of the CNN ``cfg`` (:data:`CNN_NETWORKS`) bit-exact with golden
    ``Network.train_step``, the predictions too, every word of every memory equal to the
    machine model after every step, the full and the per-batch program alternately; the
    cycles equal to ``program_cycles(program)`` (the core's exact cycle model) if given, else
    at least the MAC-array beats and at most ``cycle_bound(stats)``."""
    shape, layers, classes, cap, dd, slope, seed, lrs, sizes = cfg
    spec = cnn_spec(cfg)
    rng = np.random.default_rng(seed)
    net = Network(spec, seed=seed)
    backend = AcceleratorBackend.__new__(AcceleratorBackend)    # clear memories first
    backend.bus, backend.geometry = bus, geometry
    _clear(backend)
    backend = AcceleratorBackend(bus, spec, batch=cap, seed=seed, runs_cnn=True)
    plan = backend.plan
    model = IsaMachine(geometry)
    model.load(plan.pack_init())
    model.load(plan.pack_weights(net.weights()))
    for name, w in backend.weights().items():
        assert np.array_equal(w, net.weights()[name]), name
    for step, (lr_inv, m) in enumerate(zip(lrs, sizes)):
        where = f"step {step} (batch {m}, lr_inv {lr_inv})"
        x = rng.integers(-127, 128, size=(m,) + shape).astype(np.int8)
        labels = rng.integers(0, classes, size=m)
        model.load(plan.pack_batch(x, labels))
        trimmed = step % 2 == 1
        program = plan.program(lr_inv, m if trimmed else None)
        stats = model.run(program)
        assert not any(stats.overflow.values()), where
        exact = program_cycles(program) if program_cycles is not None else None
        backend.max_cycles = (exact if exact is not None else cycle_bound(stats)) + 1_000
        backend._write_blocks(plan.pack_batch(x, labels))
        backend._write_words(Region.PROG, 0, [isa.pack_instruction(i) for i in program])
        backend._program_key = None
        backend.run_program()
        yhat = plan.unpack_yhat(backend._read_words, labels)
        want = net.train_step(x, one_hot(labels, classes), lr_inv)
        _check_step(where, backend, net, yhat, want, stats.retired, model)
        cycles = backend.last_cycles
        if exact is not None:
            assert cycles == exact, (where, cycles)
        else:
            assert stats.beats <= cycles <= cycle_bound(stats), (where, cycles)


def _random_memories(rng, g, *, act=127, wgt=1 << 10, err=1 << 10, labels=None):
    """Blocks filling ACT, WGT, ERR, CODE and LABEL with random words (lanes within the given
    magnitudes)."""
    S = g.side
    blocks = []
    for region, mag in ((Region.ACT, act), (Region.WGT, wgt), (Region.ERR, err)):
        v = rng.integers(-mag, mag + 1, size=(g.depth(region), S))
        blocks.append((region, 0, isa.pack_lanes(v, lane_width(g, region))))
    codes = rng.integers(0, 3, size=(g.code_depth, S))
    blocks.append((Region.CODE, 0, isa.pack_lanes(codes, 2, signed=False)))
    if labels is None:
        lab = rng.integers(0, 2 * S, size=g.label_depth)
        lab[rng.random(g.label_depth) < 0.1] = isa.PAD_LABEL
    else:
        lab = labels
    blocks.append((Region.LABEL, 0, [int(v) for v in lab]))
    return blocks


def _run_against_model(bus, g, blocks, prog, where=""):
    """Load ``blocks`` into the core and the model, run ``prog`` on both, compare every word
    of every memory, RETIRED and the overflow flags (the core must raise on any)."""
    backend = _raw_backend(bus, g, max_cycles=200_000)
    model = IsaMachine(g)
    model.load(blocks)
    stats = model.run(prog)
    backend._write_blocks(blocks + [(Region.PROG, 0, [pack_instruction(i) for i in prog])])
    raised = [k for k, v in model.overflow.items() if v]
    if raised:
        with pytest.raises(AcceleratorError, match=".*".join(f"overflow_{k}" for k in raised)):
            backend.run_program()
        flags = backend.flags()
        assert {k for k, v in flags.items() if v} == {f"overflow_{k}" for k in raised}, where
    else:
        backend.run_program()
    assert backend.read_reg(Reg.RETIRED) == stats.retired, where
    for region in MEMORIES:
        diff = np.argwhere(_image(backend, region) != model.mem[region])
        assert len(diff) == 0, (f"{where}: {region.name} {tuple(diff[0])} is "
                                f"{_image(backend, region)[tuple(diff[0])]}, the model's "
                                f"{model.mem[region][tuple(diff[0])]}")
    backend.write_reg(Reg.CONTROL, Control.CLEAR)
    return backend, model


#: the ops of :func:`check_cnn_instructions`
CNN_OPS = ("forward", "loss", "backward", "sgd", "scale", "pool", "pool_code")


def _random_cnn_instruction(rng, g, op: str) -> dict:
    """A random instruction of ``op`` using the spatial levels (tiles, repeats, beats,
    ``windows``, ``tile_b``): operands read from the low words of each memory, results
    written densely from the middle on (``tc_stride``, ``x_out``, ``y_out``), so that no word
    is written twice nor read and written (the model refuses the others: drawn again)."""
    S = g.side
    while True:
        f = {d: int(rng.choice([0, 1, 2, 3], p=[0.3, 0.2, 0.3, 0.2])) for d in (
            "y_tiles", "y_repeat", "x_tiles", "x_repeat", "y_beats", "x_beats")}
        # windows mostly where the compiler uses them (pools, SCALE), tile_b mostly in BACKWARD
        windowed = op in ("pool", "pool_code", "scale")
        f.update(windows=int(rng.random() < (0.7 if windowed else 0.3)),
                 tile_b=int(rng.random() < (0.6 if op == "backward" else 0.25)),
                 tiles_r=int(rng.integers(1, 3)), tiles_c=int(rng.integers(1, 3)),
                 k_len=int(rng.integers(1, 5)))
        pool = op in ("pool", "pool_code")
        if op == "pool_code":
            f.update(y_repeat=0, x_repeat=0, tiles_c=1)       # codes rewritten once each
        if pool:
            f.update(a_tile_stride=S, a_k_stride=f["tiles_r"] * S, k_len=int(rng.integers(1, 3)))
            span = f["tiles_r"] * S * f["k_len"]
            f.update(x_stride=span, y_stride=span * (max(1, f["x_beats"]) + 1)
                     * max(1, f["x_tiles"]))
        else:
            f.update({k: int(rng.integers(0, 5)) for k in (
                "a_tile_stride", "a_k_stride", "b_tile_stride", "b_k_stride", "y_stride",
                "x_stride", "y_b_stride", "x_b_stride")})
        f.update(a_base=int(rng.integers(0, 8)), b_base=int(rng.integers(0, 8)))
        n_pos = 1
        for d in ("y_tiles", "y_repeat", "x_tiles", "x_repeat"):
            n_pos *= max(1, f[d])
        rows = f["tiles_r"] * S
        tile_words = rows * f["tiles_c"]
        if n_pos * tile_words > g.code_depth // 4:
            continue
        f.update(tc_stride=rows, x_out=tile_words,
                 y_out=tile_words * max(1, f["x_tiles"]) * max(1, f["x_repeat"]),
                 col_tr_stride=f["tiles_c"] * S, row_len=int(rng.integers(1, rows + 1)),
                 col_len=int(rng.integers(1, f["tiles_c"] * S + 1)))
        half = {r: g.depth(r) // 2 for r in (Region.ACT, Region.WGT, Region.ERR, Region.CODE)}
        if op == "forward":
            f.update(op=Op.FORWARD, b_src=int(rng.integers(2)), col_en=int(rng.integers(2)),
                     divisor=int(rng.integers(1, 60)), inv_slope=int(rng.choice(isa.SLOPES)),
                     row_base=half[Region.ACT], aux_base=half[Region.CODE],
                     col_base=half[Region.ACT] + half[Region.ACT] // 2)
        elif op in ("loss", "scale"):
            f.update(op=Op.LOSS if op == "loss" else Op.SCALE, b_src=int(rng.integers(2)),
                     col_en=int(rng.integers(2)), divisor=int(rng.integers(1, 60)),
                     row_base=half[Region.ERR if op == "loss" else Region.ACT]
                     + (half[Region.ACT] // 2 if op == "scale" else 0),
                     col_base=half[Region.ACT])
        elif op == "backward":
            f.update(op=Op.BACKWARD, b_src=int(rng.integers(2)),
                     inv_slope=int(rng.choice(isa.SLOPES)), row_base=half[Region.ERR],
                     aux_base=int(rng.integers(0, 8)))
        elif op == "sgd":
            f.update(op=Op.SGD, b_src=1, col_en=int(rng.integers(2)),
                     d_g=int(rng.integers(1, 3000)), d_w=int(rng.integers(0, 800)),
                     row_base=half[Region.WGT],
                     col_base=half[Region.WGT] + half[Region.WGT] // 2)
        else:
            f.update(op=Op.POOL if op == "pool" else Op.POOL_CODE,
                     row_base=half[Region.ACT], aux_base=int(rng.integers(0, 8)))
        ins = instruction(**f)
        try:
            IsaMachine(g).execute(unpack_instruction(pack_instruction(ins)))
        except (IsaError, IndexError):
            continue
        return ins


def check_cnn_instructions(bus, g, op: str, count: int = 8, seed: int = 0):
    """``count`` random instructions of ``op`` with the spatial levels (tiles, repeats,
    beats, windows, tile_b, the masks; :func:`_random_cnn_instruction`), each from random
    memories, against the machine model word for word: an off-by-one in any address sum (A,
    B, the written rows, columns and codes, the offset O of the repeats) fails here."""
    rng = np.random.default_rng(seed + 1000 * CNN_OPS.index(op))
    for n in range(count):
        ins = _random_cnn_instruction(rng, g, op)
        blocks = _random_memories(rng, g, act=3 if op.startswith("pool") else 127)
        _run_against_model(bus, g, blocks, [ins, instruction(op=Op.END)],
                           where=f"{op} instruction {n}: "
                                 f"{ {k: v for k, v in ins.items() if v} }")


#: the pool unit's cases: ids -> (what it covers)
POOL_CASES = ("ties", "pool-code-first-maximum", "padded-decoder-pool")


def check_pools(bus, g, case: str):
    """The pool unit against NumPy: ``ties`` (every value from {-1, 0, 1}: the maximum and
    the code of its first beat), ``pool-code-first-maximum`` (the hand-made window of
    tests/nitrod/test_cnn.py: codes kept at each lane's first maximum only),
    ``padded-decoder-pool`` (a compiled padded decoder pool's POOL and POOL_CODE, every word
    the window classes never walk set to the largest value: a read of one would win)."""
    S = g.side
    rng = np.random.default_rng(POOL_CASES.index(case))
    Z = isa.ReluCode.ZERO
    if case == "ties":
        # a 4 x 4 map of tiles_r tile rows, 2 x 2 windows: pooled rows and codes by NumPy
        side = 4
        tiles_r = 2 if g.code_depth >= side * side * 2 * S else 1
        pos_words = tiles_r * S
        vals = rng.integers(-1, 2, size=(side, side, pos_words, S))
        codes = rng.integers(0, 3, size=(side, side, pos_words, S))
        blocks = _random_memories(rng, g)
        flat = vals.reshape(-1, S)
        blocks += [(Region.ACT, 0, isa.pack_lanes(flat, g.act_width)),
                   (Region.CODE, 0, isa.pack_lanes(codes.reshape(-1, S), 2, signed=False))]
        out = side * side * pos_words
        prog = [instruction(op=op, a_base=0, a_tile_stride=S, k_len=1, tiles_r=tiles_r,
                            tiles_c=1, windows=1, y_tiles=2, y_beats=2,
                            y_stride=side * pos_words, x_tiles=2, x_beats=2, x_stride=pos_words,
                            y_out=2 * pos_words, x_out=pos_words, row_base=base, aux_base=0)
                for op, base in ((Op.POOL, out), (Op.POOL_CODE, out + 4 * pos_words))]
        prog.append(instruction(op=Op.END))
        backend, model = _run_against_model(bus, g, blocks, prog, where=case)
        win = vals.reshape(2, 2, 2, 2, pos_words, S).transpose(0, 2, 4, 5, 1, 3).reshape(
            2, 2, pos_words, S, 4)                    # (py, px, word, lane, beat)
        first = win.argmax(axis=-1)
        pooled = win.max(axis=-1).reshape(-1, S)
        for base in (out, out + 4 * pos_words):
            got = [isa.unpack_word(w, g.act_width, S)
                   for w in backend._read_words(Region.ACT, base, 4 * pos_words)]
            assert np.array_equal(np.array(got), pooled), base
        cw = codes.reshape(2, 2, 2, 2, pos_words, S).transpose(0, 2, 4, 5, 1, 3).reshape(
            2, 2, pos_words, S, 4)
        beat = np.arange(4)
        kept = np.where(beat == first[..., None], cw, Z)   # (py, px, word, lane, beat)
        want = kept.reshape(2, 2, pos_words, S, 2, 2).transpose(0, 4, 1, 5, 2, 3).reshape(-1, S)
        got = [isa.unpack_word(w, 2, S, signed=False)
               for w in backend._read_words(Region.CODE, 0, side * side * pos_words)]
        assert np.array_equal(np.array(got), want)
        assert (vals == vals.max()).sum() > 2 * side * side     # the values did tie
    elif case == "pool-code-first-maximum":
        window = [[5, 7, -3, 0], [5, 9, -3, 0], [6, 9, -4, 0], [1, 2, -3, 0]]
        codes = [[1, 0, 1, 2], [0, 0, 1, 0], [0, 1, 0, 1], [1, 1, 1, 1]]
        blocks = _random_memories(rng, g)
        for pos, (v, c) in enumerate(zip(window, codes)):
            v = (v + [0] * S)[:S]
            c = (c + [0] * S)[:S]
            blocks += [(Region.ACT, 4 * S * pos, [isa.pack_word(v, g.act_width)]),
                       (Region.CODE, 4 * S * pos, isa.pack_lanes([c], 2, signed=False))]
        prog = [instruction(op=Op.POOL_CODE, a_base=0, a_tile_stride=4 * S, tiles_r=1,
                            tiles_c=1, k_len=1, row_base=32 * S, aux_base=0, windows=1,
                            y_beats=2, y_stride=8 * S, x_beats=2, x_stride=4 * S),
                instruction(op=Op.END)]
        backend, model = _run_against_model(bus, g, blocks, prog, where=case)
        first = [isa.unpack_word(w, g.act_width, S)[:4]
                 for w in backend._read_words(Region.ACT, 32 * S, 1)]
        assert first == [[6, 9, -3, 0][:S]]                 # the window's lanes the core has
        got = [isa.unpack_word(backend._read_words(Region.CODE, 4 * S * pos, 1)[0], 2, S,
                               signed=False)[:4] for pos in range(4)]
        assert got == [row[:S] for row in
                       [[Z, Z, 1, 2], [Z, 0, Z, Z], [0, Z, Z, Z], [Z, Z, Z, Z]]]
    else:
        from nitrod.compiler import compile_network

        spec = NetworkSpec((1, 3, 3), 3, ("c3",), decoder_dim=6)
        plan = compile_network(spec, g, 1)
        stage = plan.stages[0]
        assert stage.pool.ph and stage.pool.pw            # padded on both axes (4 x 2)
        pools = [i for i in plan.program(256) if i["op"] in (Op.POOL, Op.POOL_CODE)]
        assert len(pools) > 2                             # several window classes
        h = plan.grids["block0"]
        blocks = _random_memories(rng, g)
        real = np.zeros(g.act_depth, dtype=bool)
        for name in ("block0.h_fm", "block0.h_sm"):
            base = plan.regions[name].base
            for y in range(h.h):
                for x in range(h.w):
                    real[base + h.at(y, x):base + h.at(y, x) + h.pb] = True
        act = rng.integers(-127, 127, size=(g.act_depth, S))
        # the words no window walks (beyond the cropped rows, other memory) hold 255
        walked = np.zeros(g.act_depth, dtype=bool)
        for ins in pools:
            n = isa.loop_counts(ins)
            for py in range(n["y_tiles"]):
                for px in range(n["x_tiles"]):
                    for ky in range(n["y_beats"]):
                        for kx in range(n["x_beats"]):
                            for tr in range(n["tiles_r"]):
                                a = (ins["a_base"] + tr * ins["a_tile_stride"]
                                     + (py * n["y_beats"] + ky) * ins["y_stride"]
                                     + (px * n["x_beats"] + kx) * ins["x_stride"])
                                walked[a:a + S] = True
        assert walked.any() and not (walked & ~real).any() and (real & ~walked).any()
        act[~walked] = 255
        blocks.append((Region.ACT, 0, isa.pack_lanes(act, g.act_width)))
        _run_against_model(bus, g, blocks, pools + [instruction(op=Op.END)], where=case)


#: instructions of CNN programs a RUNS_CNN core still refuses: (ids, their fields)
CNN_STILL_REFUSED = {
    "pool-empty": dict(op=Op.POOL, k_len=0, windows=1, y_beats=2, y_stride=1),
    "pool-code-col-en": dict(op=Op.POOL_CODE, col_en=1),
    "scale-divisor-0": dict(op=Op.SCALE, divisor=0, x_tiles=2, x_out=8),
    "scale-divisor-too-large": lambda g: dict(op=Op.SCALE, divisor=g.divisor_max + 1),
    "forward-no-tile-rows": dict(op=Op.FORWARD, divisor=1, inv_slope=4, tiles_r=0,
                                 y_tiles=2, y_out=8),
}


def check_cnn_still_refused(bus, g, case: str):
    """The instruction ``CNN_STILL_REFUSED[case]`` (empty, a divisor no unit divides by, a
    pool with ``col_en``) stops the program with ``op_error`` before it retires and writes
    nothing."""
    fields = CNN_STILL_REFUSED[case]
    fields = fields(g) if callable(fields) else fields
    backend = _raw_backend(bus, g, max_cycles=10_000)
    regions = (Region.ACT, Region.WGT, Region.ERR, Region.CODE)
    backend._write_blocks([(r, 0, list(range(1, 9))) for r in regions])
    prog = [instruction(row_base=0, col_base=0, **fields), instruction(op=Op.END)]
    backend._write_words(Region.PROG, 0, [pack_instruction(i) for i in prog])
    with pytest.raises(AcceleratorError, match="op_error"):
        backend.run_program()
    assert backend.read_reg(Reg.RETIRED) == 0
    for r in regions:
        assert backend._read_words(r, 0, 8) == list(range(1, 9)), r.name
    backend.write_reg(Reg.CONTROL, Control.CLEAR)


def check_cnn_mac_overflow(bus, g):
    """A convolution's FORWARD (2 x 2 output positions, 3 x 3 windows sliding on a 4 x 4
    padded map, 40 input channels or as many as ERR holds), B from ERR at the largest values:
    partial sums beyond the accumulator set OVERFLOW.mac, and the wrapped results and codes
    equal the model's."""
    S = g.side
    rng = np.random.default_rng(5)
    big = 2 ** (g.err_width - 1) - 1
    channels = min(40, g.err_depth // 9)
    side = 4                                          # the padded map: 2 x 2 outputs
    assert channels * 9 * 255 * big > 2 ** (g.acc_width - 1)
    act = rng.integers(200, 256, size=(side * side * channels, S))
    err = np.full((9 * channels, S), big)
    err[:, 1::2] = rng.integers(-1000, 1000, size=err[:, 1::2].shape)     # some lanes fit
    act[:, 1::2] = rng.integers(-3, 4, size=act[:, 1::2].shape)
    blocks = _random_memories(rng, g)
    blocks += [(Region.ACT, 0, isa.pack_lanes(act, g.act_width)),
               (Region.ERR, 0, isa.pack_lanes(err, g.err_width))]
    out = side * side * channels
    prog = [instruction(op=Op.FORWARD, b_src=1, a_base=0, a_tile_stride=channels, a_k_stride=1,
                        b_base=0, b_tile_stride=0, b_k_stride=1, k_len=channels, tiles_r=1,
                        tiles_c=1, y_tiles=2, y_beats=3, y_stride=side * channels,
                        y_b_stride=3 * channels, x_tiles=2, x_beats=3, x_stride=channels,
                        x_b_stride=channels, y_out=2 * S, x_out=S, row_base=out, aux_base=0,
                        divisor=9 * channels, inv_slope=4, col_en=1, col_base=out + 4 * S),
            instruction(op=Op.END)]
    _, model = _run_against_model(bus, g, blocks, prog, where="conv mac overflow")
    assert model.overflow == {"mac": True, "backerr": False, "sgd": False}
