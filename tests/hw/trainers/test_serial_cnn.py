"""The SerialTrainer (hw/trainers/serial_trainer.py) runs CNN programs: whole
training steps of small CNNs bit-exact with golden, every word of every memory equal to the
NumPy machine model (nitrod/isa_model.py), cycles equal to ``SerialTrainer.program_cycles``,
on ``lib.memory`` and on the SB_SPRAM256KA model; a conv-shaped product's partial sums beyond
the accumulator; single instructions of every spatial kind (windows, repeats, ``tile_b``,
POOL_CODE's codes) equal to the model, with a check that an off-by-one in their addressing
would be seen.
"""

from __future__ import annotations

import numpy as np
import pytest

from golden.datasets import one_hot
from golden.network import Network, NetworkSpec
from hw import contract as isa
from hw.contract import (INSTRUCTION_FIELDS, Control, Geometry, Op, Reg, Region, lane_signed,
                         lane_width, pack_instruction, signed_range)
from hw.trainers.core import TrainerCore
from hw.trainers.serial_trainer import SerialTrainer
from nitrod.backends import AcceleratorBackend, AcceleratorError
from nitrod.compiler import CNN_CORES_NEEDED, compile_network, hardware_refusal
from nitrod.isa_model import IsaMachine
from sim.bus_client import SimBus

#: the iCEBreaker's widths (boards/boards.py) with memories for the networks below
GEOMETRY = Geometry(side=2, act_depth=4096, wgt_depth=1024, err_depth=512, code_depth=512,
                    label_depth=256, prog_depth=64, wgt_width=16, acc_width=36, d_g_width=36)
MEMORIES = (Region.ACT, Region.WGT, Region.ERR, Region.CODE, Region.LABEL)
VARIANTS = {"memory": {}, "spram": {"memory_block": "spram"}}

# input shape, layers, classes, decoder_dim, batch capacity, batch per step, slope, what
NETWORKS = [
    ((1, 7, 7), "c3,p,c5,a,l3", 3, 20, 3, (3, 1, 2), 4,
     "a max pool and an a2 between conv blocks, a linear block after them; decoders 4x4 and "
     "2x2, both padded; batch 1 and 3 (not a multiple of S = 2)"),
    ((3, 5, 5), "c3,l5", 5, 8, 5, (5, 4), 8,
     "three input channels; a decoder 8x4 padded (4, 2) on a 5x5 map: one partial window"),
    ((2, 7, 5), "c3,p,c3", 3, 64, 5, (3, 5), 3,
     "a non-square map; the output layer after a conv block; decoders 2x1 padded on y (its "
     "classes of several windows: tile_b) and 1x1"),
]


def network_id(net) -> str:
    return f"{'x'.join(map(str, net[0]))}_{net[1].replace(',', '-')}_M{net[4]}"


@pytest.fixture(scope="module")
def buses():
    """One simulator per memory variant, started on first use, kept for the module."""
    started = {}

    def get(variant):
        if variant not in started:
            params = VARIANTS[variant]
            started[variant] = SimBus.start(lambda: SerialTrainer(GEOMETRY, **params),
                                            f"serial_cnn_{variant}",
                                            read_latency=SerialTrainer.READ_LATENCY)
        return started[variant]
    yield get
    for bus in started.values():
        bus.close()


def _raw_backend(bus, max_cycles=2_000_000):
    """A backend on ``bus`` without a network: for raw programs."""
    backend = AcceleratorBackend.__new__(AcceleratorBackend)
    backend.bus, backend.geometry, backend.max_cycles = bus, GEOMETRY, max_cycles
    backend.total_cycles = 0
    backend.write_reg(Reg.CONTROL, Control.CLEAR)
    return backend


def _image(backend, region):
    """A whole memory read back through the bus, as lanes (LABEL: one value per word)."""
    g = backend.geometry
    words = backend._read_words(region, 0, g.depth(region))
    if region == Region.LABEL:
        return np.array(words)
    return np.array([isa.unpack_word(w, lane_width(g, region), g.side,
                                     signed=lane_signed(region)) for w in words])


def _fill(backend, model, rng):
    """Every data memory of the core and of the model full of the same random lane values
    (the SPRAM's power-up state)."""
    g = backend.geometry
    for region in MEMORIES:
        if region == Region.LABEL:
            lanes = rng.integers(0, 256, size=g.depth(region))
            model.mem[region][:] = lanes
            backend._write_words(region, 0, [int(v) for v in lanes])
            continue
        w = lane_width(g, region)
        lo, hi = signed_range(w) if lane_signed(region) else (0, 2)
        lanes = rng.integers(lo, hi + 1, size=model.mem[region].shape)
        model.mem[region][:] = lanes
        backend._write_words(region, 0, isa.pack_lanes(lanes, w, region.name,
                                                        signed=lane_signed(region)))


def _assert_memories_equal(backend, model, where):
    for region in MEMORIES:
        diff = np.argwhere(_image(backend, region) != model.mem[region])
        assert len(diff) == 0, (f"{where}: {region.name} {tuple(diff[0])} is "
                                f"{_image(backend, region)[tuple(diff[0])]}, the model's "
                                f"{model.mem[region][tuple(diff[0])]}")


STEPS = [(variant, n) for variant in VARIANTS for n in range(len(NETWORKS))
         if variant == "memory" or n == 0]


@pytest.mark.parametrize("variant, net", STEPS,
                         ids=[f"{v}-{network_id(NETWORKS[n])}" for v, n in STEPS])
def test_cnn_steps_are_bit_exact_with_golden_the_model_and_the_cycle_model(buses, variant, net):
    shape, layers, classes, dd, cap, sizes, slope, _ = NETWORKS[net]
    bus = buses(variant)
    rng = np.random.default_rng(net + 1)
    spec = NetworkSpec(shape, classes, tuple(layers.split(",")), decoder_dim=dd,
                       relu_inv_slope=slope, fwd_decay_inv=int(rng.integers(300, 3000)),
                       subnet_decay_inv=int(rng.integers(50, 1000)))
    model = IsaMachine(GEOMETRY)
    _fill(_raw_backend(bus), model, rng)            # training must not read the garbage
    backend = AcceleratorBackend(bus, spec, batch=cap, seed=net, runs_cnn=True)
    plan = backend.plan
    net_g = Network(spec, seed=net)
    model.load(plan.pack_init())
    model.load(plan.pack_weights(net_g.weights()))
    ops = {i["op"] for i in plan.program(256)}
    assert {Op.POOL, Op.POOL_CODE} <= ops
    for step, m in enumerate(sizes):
        lr_inv = 256 * (step + 1)
        where = f"step {step} (batch {m}, lr_inv {lr_inv})"
        x = rng.integers(-127, 128, size=(m,) + shape).astype(np.int8)
        labels = rng.integers(0, classes, size=m)
        model.load(plan.pack_batch(x, labels))
        program = plan.program(lr_inv, m)
        stats = model.run(program)
        assert stats.overflow == {"mac": False, "backerr": False, "sgd": False}
        backend.max_cycles = SerialTrainer.program_cycles(GEOMETRY, program) + 1_000
        yhat = backend.train_step(x, one_hot(labels, classes), lr_inv)
        want = net_g.train_step(x, one_hot(labels, classes), lr_inv)
        got = backend.weights()
        for name, w in net_g.weights().items():
            bad = np.argwhere(got[name] != w)
            assert len(bad) == 0, (f"{where}: {name}{tuple(bad[0])} is "
                                   f"{got[name][tuple(bad[0])]}, golden {w[tuple(bad[0])]}")
        assert np.array_equal(yhat, want), where
        assert backend.read_reg(Reg.RETIRED) == stats.retired == len(program) - 1, where
        _assert_memories_equal(backend, model, where)
        assert backend.last_cycles == SerialTrainer.program_cycles(GEOMETRY, program), where


def test_the_networks_cover_the_cnn_instructions():
    """Between them the networks run every op, windows, repeats, tile_b, both spatial
    levels' tiles and beats, and partial batches."""
    seen = set()
    for shape, layers, classes, dd, cap, sizes, slope, _ in NETWORKS:
        spec = NetworkSpec(shape, classes, tuple(layers.split(",")), decoder_dim=dd)
        plan = compile_network(spec, GEOMETRY, cap)
        for ins in plan.program(256, min(sizes)):
            seen.add(Op(ins["op"]).name)
            for f in ("windows", "tile_b", "y_repeat", "x_repeat", "y_tiles", "x_tiles",
                      "y_beats", "x_beats"):
                if ins[f]:
                    seen.add(f)
        seen.update("odd batch" for m in sizes if m % GEOMETRY.side)
        seen.update("batch 1" for m in sizes if m == 1)
    assert seen >= {"FORWARD", "LOSS", "BACKWARD", "SGD", "POOL", "POOL_CODE", "SCALE", "END",
                    "windows", "tile_b", "y_repeat", "x_repeat", "y_tiles", "x_tiles",
                    "y_beats", "x_beats", "odd batch", "batch 1"}


def instruction(**f):
    ins = {name: 0 for name, _ in INSTRUCTION_FIELDS}
    ins.update(row_len=0xFFFF, col_len=0xFFFF, tiles_r=1, tiles_c=1, k_len=1, a_k_stride=1,
               b_k_stride=1)
    ins.update(f)
    return ins


def test_a_conv_products_partial_sums_beyond_the_accumulator_set_overflow_mac(buses):
    """A conv-shaped FORWARD (3 x 3 beats on both spatial levels over 2 x 2 tile steps, B from
    ERR at its largest): its partial sums leave the 36-bit accumulator, OVERFLOW.mac rises and
    the wrapped results and codes equal the model's."""
    g, S = GEOMETRY, GEOMETRY.side
    backend = _raw_backend(buses("memory"))
    big = 2 ** (g.err_width - 1) - 1
    rng = np.random.default_rng(5)
    act = rng.integers(200, 256, size=(64, S)) * np.array([1, -1])   # sums of one sign
    err = np.full((64, S), big)
    err[:, 1] -= rng.integers(0, 99999, size=64)
    blocks = [(Region.ACT, 0, isa.pack_lanes(act, g.act_width, "act")),
              (Region.ERR, 0, isa.pack_lanes(err, g.err_width, "err")),
              (Region.ACT, 512, [0] * 32), (Region.CODE, 0, [0] * 32)]
    ins = instruction(op=Op.FORWARD, b_src=1, k_len=3, a_k_stride=1, b_k_stride=1, divisor=1,
                      inv_slope=4, row_base=512, aux_base=0, tc_stride=0,
                      y_tiles=2, y_beats=3, y_stride=12, y_b_stride=9, y_out=8,
                      x_tiles=2, x_beats=3, x_stride=3, x_b_stride=3, x_out=2)
    prog = [ins, instruction(op=Op.END)]
    model = IsaMachine(g)
    model.load(blocks)
    model.run(prog)
    assert model.overflow == {"mac": True, "backerr": False, "sgd": False}
    backend._write_blocks(blocks + [(Region.PROG, 0, [pack_instruction(i) for i in prog])])
    with pytest.raises(AcceleratorError, match="overflow_mac"):
        backend.run_program()
    assert backend.read_reg(Reg.OVERFLOW) == 1 << isa.OVERFLOW_BITS["mac"]
    for region, base in ((Region.ACT, 512), (Region.CODE, 0)):
        got = [isa.unpack_word(w, lane_width(g, region), S, signed=lane_signed(region))
               for w in backend._read_words(region, base, 32)]
        assert got == model.read(region, base, 32).tolist(), region.name
    assert backend.read_reg(Reg.CYCLES) == SerialTrainer.program_cycles(g, prog)
    backend.write_reg(Reg.CONTROL, Control.CLEAR)
    assert backend.read_reg(Reg.OVERFLOW) == 0


#: single instructions of the spatial kinds, each with fields whose off-by-one the check
#: must see: (id, fields, the fields to move by one)
SPATIAL = {
    "pool-windows": (dict(op=Op.POOL, windows=1, a_base=40, a_tile_stride=2, tiles_r=2,
                          y_tiles=2, y_beats=3, y_stride=24, y_out=16,
                          x_tiles=3, x_beats=2, x_stride=4, x_out=4, row_base=600),
                     ("y_beats", "x_beats", "y_tiles", "x_tiles", "y_stride", "x_out")),
    "pool-code": (dict(op=Op.POOL_CODE, windows=1, a_base=40, a_tile_stride=2, tiles_r=2,
                       y_tiles=2, y_beats=2, y_stride=40, y_out=8,
                       x_tiles=2, x_beats=3, x_stride=4, x_out=4, row_base=600, aux_base=100),
                  ("y_beats", "x_beats", "x_stride", "aux_base")),
    "backward-repeats-tile-b": (dict(op=Op.BACKWARD, inv_slope=5, tile_b=1, k_len=3,
                                     a_base=10, a_tile_stride=3, b_base=20, b_tile_stride=3,
                                     tiles_r=1, tiles_c=2, row_base=100, aux_base=0,
                                     tc_stride=2, y_tiles=2, y_repeat=2, y_stride=12,
                                     y_out=32, x_tiles=2, x_repeat=3, x_stride=6, x_out=4),
                                ("y_repeat", "x_repeat", "y_stride", "x_stride", "x_out")),
    "scale-windows": (dict(op=Op.SCALE, windows=1, divisor=4, k_len=3, a_base=50,
                           a_tile_stride=3, b_base=900, b_tile_stride=3, tiles_r=1, tiles_c=2,
                           row_base=800, tc_stride=2, col_en=1, col_base=1000,
                           col_tr_stride=4, y_tiles=2, y_beats=2, y_stride=27, y_out=20,
                           x_tiles=2, x_beats=2, x_stride=6, x_out=5, row_len=2, col_len=3),
                      ("y_beats", "x_tiles", "x_stride", "y_out")),
    "forward-conv": (dict(op=Op.FORWARD, inv_slope=3, divisor=30, k_len=2, a_base=5,
                          a_tile_stride=2, b_base=30, b_tile_stride=18, tiles_r=2, tiles_c=2,
                          row_base=600, tc_stride=4, aux_base=300, col_en=1, col_base=900,
                          col_tr_stride=4, y_tiles=3, y_beats=3, y_stride=20, y_b_stride=6,
                          y_out=40, x_tiles=2, x_beats=3, x_stride=4, x_b_stride=2, x_out=8,
                          row_len=3, col_len=4),
                     ("y_beats", "x_b_stride", "y_tiles", "x_out")),
    "sgd-tiles-beats": (dict(op=Op.SGD, b_src=1, d_g=300, d_w=500, k_len=3, a_base=8,
                             a_tile_stride=3, b_base=4, b_tile_stride=3, tiles_r=2, tiles_c=1,
                             row_base=500, tc_stride=8, col_en=1, col_base=700,
                             col_tr_stride=2, y_tiles=3, y_beats=2, y_stride=30, y_b_stride=12,
                             y_out=16, x_tiles=2, x_beats=2, x_stride=5, x_b_stride=6,
                             x_out=4, row_len=4, col_len=2),
                        ("y_tiles", "x_beats", "y_b_stride", "x_out")),
}


def _off_by_one(ins, field):
    out = dict(ins)
    out[field] = ins[field] + 1
    return out


@pytest.mark.parametrize("case", list(SPATIAL))
def test_a_spatial_instruction_equals_the_model_and_an_off_by_one_would_not(buses, case):
    """One instruction on random memories: every word of every memory equals the model's,
    the cycles the cycle model's; and the model with any of the named fields one larger
    leaves different memories, so an off-by-one in the repeat, window or stride addressing
    fails this test."""
    fields, moved = SPATIAL[case]
    g = GEOMETRY
    rng = np.random.default_rng(sorted(SPATIAL).index(case))
    backend = _raw_backend(buses("memory"))
    model = IsaMachine(g)
    _fill(backend, model, rng)
    # small values: no overflow, and a pool's ties happen
    for region, bound in ((Region.ACT, 3), (Region.WGT, 2000), (Region.ERR, 2000)):
        v = rng.integers(-bound, bound + 1, size=model.mem[region].shape)
        model.mem[region][:] = v
        backend._write_words(region, 0, isa.pack_lanes(v, lane_width(g, region), region.name))
    before = {r: model.mem[r].copy() for r in MEMORIES}
    prog = [instruction(**fields), instruction(op=Op.END)]
    stats = model.run(prog)
    assert stats.overflow == {"mac": False, "backerr": False, "sgd": False}
    backend._write_words(Region.PROG, 0, [pack_instruction(i) for i in prog])
    backend.run_program()
    _assert_memories_equal(backend, model, case)
    assert backend.read_reg(Reg.CYCLES) == SerialTrainer.program_cycles(g, prog)
    for field in moved:
        other = IsaMachine(g)
        for r in MEMORIES:
            other.mem[r][:] = before[r]
        other.run([_off_by_one(prog[0], field), prog[1]])
        assert any(not np.array_equal(other.mem[r], model.mem[r]) for r in MEMORIES), field


def test_pool_code_with_beats_of_k_is_an_op_error(buses):
    """POOL_CODE counts a window's beats in 16 bits: one beat per window position (``k_len``
    1, as the compiler's); another ``k_len`` stops with op_error and writes nothing."""
    backend = _raw_backend(buses("memory"), max_cycles=10_000)
    backend._write_blocks([(r, 0, list(range(1, 9))) for r in (Region.ACT, Region.CODE)])
    prog = [instruction(op=Op.POOL_CODE, k_len=2, row_base=0, aux_base=0),
            instruction(op=Op.END)]
    backend._write_words(Region.PROG, 0, [pack_instruction(i) for i in prog])
    with pytest.raises(AcceleratorError, match="op_error"):
        backend.run_program()
    assert backend.read_reg(Reg.RETIRED) == 0
    for r in (Region.ACT, Region.CODE):
        assert backend._read_words(r, 0, 8) == list(range(1, 9)), r.name
    backend.write_reg(Reg.CONTROL, Control.CLEAR)


def test_the_host_reads_what_a_core_runs():
    """RUNS_CNN on the core class: the SerialTrainer's CNN programs are compiled for it, a core
    without it is refused a CNN by name."""
    cnn = NetworkSpec((1, 5, 5), 3, ("c3", "l4"))
    assert SerialTrainer.RUNS_CNN and not TrainerCore.RUNS_CNN
    assert hardware_refusal(cnn, SerialTrainer.RUNS_CNN) is None
    assert hardware_refusal(cnn) == CNN_CORES_NEEDED
    assert hardware_refusal(NetworkSpec((1, 1, 6), 3, ("l4",))) is None


def test_bench_sim_runs_a_cnn_on_the_icebreaker_core_at_its_cycle_model(capsys, tmp_path):
    """``nitrod bench sim --board icebreaker --model cnn --arch ...``: a CNN's steps on the iCEBreaker's
    SerialTrainer take the cycles of its cycle model."""
    import json

    from nitrod.cli import main
    out = tmp_path / "bench.json"
    assert main(["bench", "sim", "--board", "icebreaker", "--model", "cnn", "--arch", "c3,p,l4",
                 "--input-shape", "1x6x6", "--classes", "3", "--batch", "3", "--steps", "1",
                 "--json", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["step_cycles"] == [m["model_cycles_per_step"]]
    assert "CNN c3,p,l4" in capsys.readouterr().out
