"""The Trainer (hw/trainer.py) in Verilator against the golden model, step by step.

Random small MLPs (several depths and widths, odd sizes that do not fill the array, partial
batches, every kind of constant) are compiled (nitrod/compiler.py), loaded through the host
bus (sim/bus_client.py: the simulator runs as a child process) by the same API the CLI uses
(nitrod/backends.py) and trained for several steps in one simulation; after every step all
weights and the
output layer's predictions are read back and compared with golden ``Network.train_step``
exactly.  The NumPy model of the Trainer (nitrod/isa_model.py) runs beside it and must agree
on every word read, padding included.  Crafted instructions force the BACKERR and SGD
overflow flags, which must show in the OVERFLOW register and clear with CONTROL bit 1.
"""

from __future__ import annotations

import numpy as np
import pytest

from golden.datasets import one_hot
from golden.network import Network, NetworkSpec
from hw.trainer import Trainer
from nitrod import isa
from nitrod.backends import AcceleratorBackend, AcceleratorError
from nitrod.isa import INSTRUCTION_FIELDS, Geometry, Op, Reg, Region, pack_instruction
from nitrod.isa_model import IsaMachine
from sim.bus_client import SimBus
# A 4 x 4 array with small memories cut into banks of 32 words (hw/banked_memory.py), so that
# every memory (PROG and LABEL included) has several banks and the test networks' data, weights
# and program cross bank boundaries on every read path (host, engine, front, sequencer, writer)
GEOMETRY = Geometry(side=4, act_depth=1024, wgt_depth=1024, err_depth=512, code_depth=512)
BANK_DEPTH = 32
#: the ECP5 blocks' run: memories just deep enough for its networks (each DP16KD model instance
#: adds its own code to the Verilator build: 62 of them here, 304 with GEOMETRY), still in
#: banks of BANK_DEPTH words that the networks cross in ACT, WGT and ERR (CODE: one bank)
GEOMETRY_ECP5 = Geometry(side=4, act_depth=256, wgt_depth=256, err_depth=64, code_depth=64)

# in_features, hidden, classes, batch capacity, seed, slope, lr_inv per step, batch per step
NETWORKS = [
    (13, [7], 5, 9, 1, 4, [256, 256, 768], [9, 5, 9]),
    (21, [11, 6], 3, 16, 2, 8, [512, 512, 512], [16, 16, 3]),
    (6, [5, 9, 4], 10, 7, 3, 3, [128, 384, 384], [7, 2, 7]),
    (8, [4], 4, 8, 4, 16, [64, 64], [8, 8]),
]


def _spec(k, hidden, classes, slope, rng):
    return NetworkSpec((1, 1, k), classes, tuple(f"l{n}" for n in hidden), relu_inv_slope=slope,
                       fwd_decay_inv=int(rng.integers(300, 5000)),
                       subnet_decay_inv=int(rng.integers(50, 3000)))


MEMORIES = (Region.ACT, Region.WGT, Region.ERR, Region.CODE, Region.LABEL)


@pytest.fixture(scope="module")
def bus():
    with SimBus.start(lambda: Trainer(GEOMETRY, bank_depth=BANK_DEPTH), "trainer",
                      read_latency=Trainer.READ_LATENCY) as b:
        yield b


def _lane_width(g, region):
    return {Region.ACT: g.act_width, Region.WGT: g.wgt_width, Region.ERR: g.err_width,
            Region.CODE: 2, Region.LABEL: 8}[region]


def _image(backend, region):
    """A whole memory read back through the bus, as lanes (LABEL: one value per word)."""
    g = backend.geometry
    words = backend._read_words(region, 0, g.depth(region))
    if region == Region.LABEL:
        return np.array(words)
    return np.array([isa.unpack_word(w, _lane_width(g, region), g.side,
                                     signed=region != Region.CODE) for w in words])


def _clear(backend):
    g = backend.geometry
    for region in MEMORIES:
        backend._write_words(region, 0, [0] * g.depth(region))


@pytest.mark.parametrize("net_cfg", NETWORKS, ids=lambda c: f"{c[0]}-{'-'.join(map(str, c[1]))}"
                         f"-{c[2]}_M{c[3]}")
def test_steps_are_bit_exact_with_golden(bus, net_cfg):
    _check_steps(bus, net_cfg)


@pytest.fixture(scope="module")
def bus_ecp5():
    """The Trainer as the ECP5 boards build it: each MAC element's MULT18X18D with its own
    registers (hw/mac_array.py: "ecp5_dsp"), ACT, WGT, ERR and CODE in DP16KD with their output
    registers (hw/ecp5_bram.py); Verilator runs the blocks' models."""
    with SimBus.start(lambda: Trainer(GEOMETRY_ECP5, bank_depth=BANK_DEPTH,
                                      mac_options={"multiplier": "ecp5_dsp"},
                                      memory_block="dp16kd"),
                      "trainer_ecp5", read_latency=Trainer.READ_LATENCY) as b:
        yield b


@pytest.mark.parametrize("net_cfg", NETWORKS[::2], ids=lambda c: f"{c[0]}-{'-'.join(map(str, c[1]))}"
                         f"-{c[2]}_M{c[3]}")
def test_steps_are_bit_exact_with_golden_on_the_ecp5_blocks(bus_ecp5, net_cfg):
    _check_steps(bus_ecp5, net_cfg, geometry=GEOMETRY_ECP5)


@pytest.fixture(scope="module")
def bus_rows1():
    """A Trainer whose lanes take a row every cycle (``row_cycles=1``: one Scaler, NitroRelu
    and SgdUpdate unit per lane), so that the front and the writer take rows back to back in
    FORWARD, LOSS and SGD too, and each memory's address register must load the walkers' next
    address, not their address."""
    with SimBus.start(lambda: Trainer(GEOMETRY, bank_depth=BANK_DEPTH, row_cycles=1),
                      "trainer_rows1", read_latency=Trainer.READ_LATENCY) as b:
        yield b


@pytest.mark.parametrize("net_cfg", NETWORKS[1::2], ids=lambda c: f"{c[0]}-{'-'.join(map(str, c[1]))}"
                         f"-{c[2]}_M{c[3]}")
def test_steps_are_bit_exact_with_golden_with_a_row_every_cycle(bus_rows1, net_cfg):
    _check_steps(bus_rows1, net_cfg)


@pytest.fixture(scope="module")
def bus_fifo1():
    """A Trainer whose writer FIFO holds one row: the front then waits for a credit before
    every row (the lanes hold several), which a 64-row FIFO never makes it do in these tests
    (a front that ignores the credits passes every other whole-step test)."""
    with SimBus.start(lambda: Trainer(GEOMETRY, bank_depth=BANK_DEPTH, fifo_depth=1),
                      "trainer_fifo1", read_latency=Trainer.READ_LATENCY) as b:
        yield b


def test_steps_are_bit_exact_with_golden_with_a_one_row_fifo(bus_fifo1):
    # the credits make it slower, not different: the cycle bound is the only thing loosened
    _check_steps(bus_fifo1, NETWORKS[1], cycle_factor=40)


def test_fifo_depth_is_checked():
    # two is refused: Amaranth's SyncFIFOBuffered of depth 2 does not always take the second
    # row that a second credit promises (a run with it reports STATUS.row_lost)
    for depth in (0, 2):
        with pytest.raises(ValueError, match="fifo_depth must be 1 or at least 3"):
            Trainer(GEOMETRY, fifo_depth=depth)


def _check_steps(bus, net_cfg, cycle_factor=1, geometry=GEOMETRY, cycle_bound=None,
                 program_cycles=None):
    """``cycle_bound(stats)``: the most cycles a step of the model's ``RunStats`` may take
    (default: ``cycle_factor`` times the beats plus 160 per instruction);
    ``program_cycles(program)``, if given, the exact cycles of a step's program."""
    k, hidden, classes, cap, seed, slope, lrs, sizes = net_cfg
    rng = np.random.default_rng(seed)
    spec = _spec(k, hidden, classes, slope, rng)
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


# ---------------------------------------------------------------------- forced overflows

def _ins(**f):
    ins = {name: 0 for name, _ in INSTRUCTION_FIELDS}
    ins.update(row_len=0xFFFF, col_len=0xFFFF, tiles_r=1, tiles_c=1, k_len=1, a_k_stride=1,
               b_k_stride=1)
    ins.update(f)
    return ins


def test_overflow_is_flagged_saturated_reported_and_cleared(bus):
    check_overflow(bus, GEOMETRY)


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
        _ins(op=Op.BACKWARD, inv_slope=4, row_base=16, aux_base=0, tc_stride=0, k_len=2),
        _ins(op=Op.SGD, b_src=1, b_base=8, row_base=8, d_g=1, d_w=0),
        _ins(op=Op.END),
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
        got = [isa.unpack_word(w, _lane_width(g, region), S)
               for w in backend._read_words(region, base, S)]
        assert got == model.read(region, base, S).tolist(), region.name
    # the saturated values really are the limits (a wrong clamp fails here)
    assert model.read(Region.ERR, 16, 1).tolist()[0][0] == 2 ** (g.err_width - 1) - 1
    assert model.read(Region.WGT, 8, 1).tolist()[0][0] == wmax
    backend.write_reg(Reg.CONTROL, 2)
    assert backend.read_reg(Reg.OVERFLOW) == 0
    assert backend.read_reg(Reg.STATUS) == 1 << isa.STATUS_BITS["done"]


def test_loss_zeroes_the_rows_labelled_padding(bus):
    check_loss_padding(bus, GEOMETRY)


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
        _ins(op=Op.LOSS, a_base=0, a_tile_stride=k, b_base=0, b_tile_stride=k, k_len=k,
             tiles_r=tiles_r, tiles_c=tiles_c, row_base=0, tc_stride=rows, divisor=3,
             col_en=1, col_base=64, col_tr_stride=tiles_c * S),
        _ins(op=Op.END),
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
        got = [isa.unpack_word(w, _lane_width(g, region), S)
               for w in backend._read_words(region, base, n)]
        assert got == model.read(region, base, n).tolist(), region.name


def test_memory_access_while_running_or_out_of_range_is_an_error(bus):
    check_access_errors(bus, GEOMETRY)


def check_access_errors(bus, g):
    spec = NetworkSpec((1, 1, 4), 3, ("l4",))
    backend = AcceleratorBackend(bus, spec, batch=4, seed=0)
    # a word beyond ACT's depth: dropped, flagged
    bus.write(isa.bus_address(Region.ACT, g.act_depth, 0, g.word_bits(Region.ACT)), [1, 2, 3])
    assert backend.read_reg(Reg.STATUS) >> isa.STATUS_BITS["access_error"] & 1
    with pytest.raises(AcceleratorError, match="access_error"):
        backend._check_flags()
    backend.write_reg(Reg.CONTROL, 2)
    # an unknown op stops the program with op_error
    backend._write_words(Region.PROG, 0, [pack_instruction(_ins(op=7))])
    with pytest.raises(AcceleratorError, match="op_error"):
        backend.run_program()
    backend.write_reg(Reg.CONTROL, 2)
    assert backend.read_reg(Reg.STATUS) == 1 << isa.STATUS_BITS["done"]


# ------------------------------------------------------------- the array's flow-control watch

def test_a_tile_lost_in_the_array_is_reported_and_cleared():
    """STATUS.tile_lost reaches the host: a Trainer whose MacArray takes every last beat
    (tests/test_mac_array.py: _NoFlowControl) loses tiles of one beat on the first FORWARD
    and then waits forever for their rows; the API gives up after max_cycles naming the
    flag (the Trainer stays busy: only a reset frees it), and CONTROL bit 1 clears the flag.
    (Every other Trainer run checks the flag stays low with the real array.)"""
    from test_mac_array import _NoFlowControl

    g = Geometry(side=2, act_depth=256, wgt_depth=256, err_depth=128, code_depth=128,
                 label_depth=64, prog_depth=16)

    def broken_trainer():
        trainer = Trainer(g, bank_depth=64)
        mac = trainer.engine.mac
        mac._MustUse__silence = True             # replaced, never elaborated
        trainer.engine.mac = _NoFlowControl(rows=mac.rows, cols=mac.cols, a_width=mac.a_width,
                                            b_width=mac.b_width, acc_width=mac.acc_width,
                                            multiplier=mac.multiplier)
        return trainer

    spec = NetworkSpec((1, 1, 1), 2, ("l2",))
    rng = np.random.default_rng(5)
    with SimBus.start(broken_trainer, "trainer", read_latency=Trainer.READ_LATENCY) as b:
        backend = AcceleratorBackend(b, spec, batch=8, seed=0, max_cycles=20_000)
        x = rng.integers(-128, 128, size=(8, 1, 1, 1), dtype=np.int8)
        with pytest.raises(AcceleratorError, match="did not end.*tile_lost") as info:
            backend.train_step(x, one_hot(rng.integers(0, 2, 8), 2), lr_inv=256)
        assert info.value.flags["tile_lost"]
        backend.write_reg(Reg.CONTROL, 2)
        bits = isa.STATUS_BITS                   # still waiting for the lost rows: busy
        assert backend.read_reg(Reg.STATUS) == 1 << bits["busy"]


def test_a_row_the_lanes_were_not_ready_for_is_reported_and_cleared():
    """STATUS.row_lost reaches the host: a Trainer whose front hands FORWARD rows to the lanes
    every cycle while their units take a row only every second cycle (``row_spacing`` set
    to 1 against the lanes' ``row_cycles`` of 2) drops rows, never finishes the program, and
    the API names the flag after max_cycles.  (Every other Trainer run checks it stays low.)"""
    g = Geometry(side=2, act_depth=256, wgt_depth=256, err_depth=128, code_depth=128,
                 label_depth=64, prog_depth=16)

    def unspaced_trainer():
        trainer = Trainer(g, bank_depth=64, row_cycles=2)
        assert trainer.row_spacing == 2
        trainer.row_spacing = 1
        return trainer

    spec = NetworkSpec((1, 1, 4), 2, ("l2",))
    rng = np.random.default_rng(6)
    with SimBus.start(unspaced_trainer, "trainer", read_latency=Trainer.READ_LATENCY) as b:
        backend = AcceleratorBackend(b, spec, batch=8, seed=0, max_cycles=20_000)
        x = rng.integers(-128, 128, size=(8, 1, 1, 4), dtype=np.int8)
        with pytest.raises(AcceleratorError, match="did not end.*row_lost") as info:
            backend.train_step(x, one_hot(rng.integers(0, 2, 8), 2), lr_inv=256)
        assert info.value.flags["row_lost"]
        assert not info.value.flags["tile_lost"]
        backend.write_reg(Reg.CONTROL, 2)
        assert not backend.read_reg(Reg.STATUS) >> isa.STATUS_BITS["row_lost"] & 1


# ------------------------------------------------------------- START, seen from the bus

# A 2 x 2 Trainer for the tests that drive its bus cycle by cycle in Amaranth's simulator
SMALL = Geometry(side=2, act_depth=64, wgt_depth=64, err_depth=64, code_depth=64,
                 prog_depth=16, label_depth=16)


def _small_trainer():
    return Trainer(SMALL, bank_depth=32, mac_options={"multiplier": "dsp"})  # no Instance here


def _small_addr(region, word=0, chunk=0):
    return isa.bus_address(region, word, chunk, SMALL.word_bits(region))


async def _bus_access(ctx, dut, address, data=None):
    """One bus cycle: a write of ``data``, or a read (its word comes READ_LATENCY later)."""
    ctx.set(dut.bus.addr, address)
    ctx.set(dut.bus.w_data, data or 0)
    ctx.set(dut.bus.w_en, data is not None)
    ctx.set(dut.bus.r_en, data is None)
    await ctx.tick()
    ctx.set(dut.bus.w_en, 0)
    ctx.set(dut.bus.r_en, 0)


async def _bus_read(ctx, dut, address):
    """A read bus cycle, then the READ_LATENCY - 1 cycles to its word; returns the word."""
    await _bus_access(ctx, dut, address)
    await ctx.tick().repeat(Trainer.READ_LATENCY - 1)
    return ctx.get(dut.bus.r_data)


def test_start_is_busy_and_refuses_memory_writes_from_the_next_bus_cycle():
    """The START strobe is registered after the bus decode (one cycle before the sequencer
    leaves IDLE); from the very next bus cycle the host must still see STATUS.busy, and a
    memory write there must be refused with access_error, not lost to the datapath's port.
    Amaranth's simulator, one bus access per cycle; the program is PROG[0] = 0, an END."""
    from amaranth.sim import Simulator

    dut = _small_trainer()
    got = {}
    addr = _small_addr

    async def access(ctx, address, data=None):
        await _bus_access(ctx, dut, address, data)

    async def read_after(ctx):              # access() has ticked once since r_en
        await ctx.tick().repeat(Trainer.READ_LATENCY - 1)
        return ctx.get(dut.bus.r_data)

    async def bench(ctx):
        await access(ctx, addr(Region.REGS, Reg.CONTROL), 1)
        await access(ctx, addr(Region.REGS, Reg.STATUS))
        got["status"] = await read_after(ctx)
        await ctx.tick().repeat(40)
        await access(ctx, addr(Region.REGS, Reg.STATUS))
        got["status_end"] = await read_after(ctx)
        await access(ctx, addr(Region.REGS, Reg.CONTROL), 1)
        await access(ctx, addr(Region.ACT, 3), 0x5A)
        await ctx.tick().repeat(40)
        await access(ctx, addr(Region.REGS, Reg.STATUS))
        got["status_write"] = await read_after(ctx)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    bits = isa.STATUS_BITS
    assert got["status"] >> bits["busy"] & 1, hex(got["status"])
    assert got["status_end"] == 1 << bits["done"], hex(got["status_end"])
    assert got["status_write"] >> bits["access_error"] & 1, hex(got["status_write"])
    assert not got["status_write"] >> bits["busy"] & 1


def test_a_host_write_reads_back_from_the_next_bus_cycle_without_a_collision():
    """The memories register a write once more in front of their blocks (registered_ports):
    a host write lands one cycle after the bus decode; a read passes one more register too
    (the read enable's copy beside each bank), so a read in the very next bus cycle reads
    after the write: it sees the new word and STATUS.collision stays clear (docs section 7).
    Amaranth's simulator, one bus access per cycle."""
    from amaranth.sim import Simulator

    dut = _small_trainer()
    got = {}
    addr = _small_addr

    async def access(ctx, address, data=None):
        await _bus_access(ctx, dut, address, data)

    async def read(ctx, address):
        return await _bus_read(ctx, dut, address)

    async def bench(ctx):
        # (region, word, its 32-bit chunks in order: the last one writes the word)
        prog = [0x100 + c for c in range(isa.chunks_of(SMALL.word_bits(Region.PROG)))]
        for region, word, chunks in ((Region.ACT, 3, [0x5A]), (Region.ERR, 5, [0x1234, 0x5]),
                                     (Region.WGT, 2, [0x789, 0x6]), (Region.CODE, 7, [0x3]),
                                     (Region.LABEL, 1, [0x42]), (Region.PROG, 2, prog)):
            assert len(chunks) == isa.chunks_of(SMALL.word_bits(region))
            for c, value in enumerate(chunks):
                await access(ctx, addr(region, word, c), value)
            # the very next bus cycle
            got[region, "next"] = await read(ctx, addr(region, word, len(chunks) - 1))
        got["status"] = await read(ctx, addr(Region.REGS, Reg.STATUS))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got[Region.ACT, "next"] == 0x5A
    assert got[Region.ERR, "next"] == 0x5
    assert got[Region.WGT, "next"] == 0x6
    assert got[Region.CODE, "next"] == 0x3
    assert got[Region.LABEL, "next"] == 0x42
    assert got[Region.PROG, "next"] == 0x100 + isa.chunks_of(SMALL.word_bits(Region.PROG)) - 1
    assert got["status"] == 0, hex(got["status"])


def test_a_memory_collision_reaches_status_and_is_cleared(monkeypatch):
    """STATUS.collision reaches the host: the host cannot make a memory's ports collide (the
    test above), so a stand-in BankedMemory also reports one on every write to word 3 of any
    memory.  A write to word 2 leaves the flag clear, a write to word 3 sets it (sticky),
    CONTROL bit 1 clears it.  (Every other Trainer run checks it stays low.)"""
    from amaranth import Signal
    from amaranth.sim import Simulator

    import hw.trainer
    from hw.banked_memory import BankedMemory

    class _Colliding(BankedMemory):
        def elaborate(self, platform):
            port, inner = self.collision, Signal(name="watch")
            self.collision = inner               # the watch drives a signal of its own
            try:
                m = super().elaborate(platform)
            finally:
                self.collision = port
            m.d.comb += port.eq(inner | (self.wr.en & (self.wr.addr == 3)))
            return m

    monkeypatch.setattr(hw.trainer, "BankedMemory", _Colliding)
    dut = _small_trainer()
    got = {}
    status = _small_addr(Region.REGS, Reg.STATUS)

    async def bench(ctx):
        await _bus_access(ctx, dut, _small_addr(Region.ACT, 2), 0x11)
        got["word2"] = await _bus_read(ctx, dut, status)
        await _bus_access(ctx, dut, _small_addr(Region.ACT, 3), 0x22)
        await ctx.tick().repeat(4)
        got["word3"] = await _bus_read(ctx, dut, status)
        got["sticky"] = await _bus_read(ctx, dut, status)
        await _bus_access(ctx, dut, _small_addr(Region.REGS, Reg.CONTROL), 2)
        got["cleared"] = await _bus_read(ctx, dut, status)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    bit = 1 << isa.STATUS_BITS["collision"]
    assert got["word2"] == 0, hex(got["word2"])
    assert got["word3"] == got["sticky"] == bit, (hex(got["word3"]), hex(got["sticky"]))
    assert got["cleared"] == 0, hex(got["cleared"])


def test_a_clear_shows_in_status_from_the_next_bus_cycle():
    """CONTROL bit 1 loads a clear flip-flop (the decode stays off the sticky flags'
    enables), which clears the flags one cycle later; STATUS must still read them as cleared
    in the very next bus cycle.  Amaranth's simulator, one bus access per cycle."""
    from amaranth.sim import Simulator

    dut = _small_trainer()
    got = {}

    async def read(ctx, address):
        return await _bus_read(ctx, dut, address)

    async def bench(ctx):
        status = _small_addr(Region.REGS, Reg.STATUS)
        await _bus_access(ctx, dut, _small_addr(Region.ACT, SMALL.act_depth + 3))  # refused
        got["set"] = await read(ctx, status)
        await _bus_access(ctx, dut, _small_addr(Region.REGS, Reg.CONTROL), 2)
        got["next"] = await read(ctx, status)
        got["later"] = await read(ctx, status)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    bit = 1 << isa.STATUS_BITS["access_error"]
    assert got["set"] & bit, hex(got["set"])
    assert got["next"] == got["later"] == 0, (hex(got["next"]), hex(got["later"]))


def test_reads_in_consecutive_bus_cycles_each_return_their_own_word():
    """The bus allows pipelined reads (r_en high in consecutive cycles, each word
    READ_LATENCY cycles after its r_en; hw/host_link.py BusSignature).  Words and chunks of
    every memory and a register, read back to back, each in its own output cycle; the
    region and chunk differ from one read to the next.  Amaranth's simulator."""
    from amaranth.sim import Simulator

    dut = _small_trainer()
    got = {}
    addr = _small_addr
    nprog = isa.chunks_of(SMALL.word_bits(Region.PROG))
    words = {(Region.ACT, 3): [0x5A], (Region.ACT, 4): [0x33], (Region.ERR, 5): [0x1234, 0x5],
             (Region.WGT, 2): [0x789, 0x6], (Region.CODE, 7): [0x3], (Region.LABEL, 1): [0x42],
             (Region.PROG, 2): [0x100 + c for c in range(nprog)],
             (Region.PROG, 3): [0x200 + c for c in range(nprog)]}
    reads = [(addr(r, w, c), v) for (r, w), chunks in words.items() for c, v in enumerate(chunks)]
    # interleave so that consecutive reads differ in region, word and chunk
    regs = [(Reg.ID, isa.MAGIC), (Reg.ACT_DEPTH, SMALL.act_depth), (7, 0),
            (Reg.PROG_DEPTH, SMALL.prog_depth), (Reg.STATUS, 0), (40, 0), (Reg.SIDE, SMALL.side),
            (Reg.D_W_WIDTH, SMALL.d_w_width), (Reg.PROG_START, 0), (8 + 32, 0)]
    reads = reads[::2] + [(addr(Region.REGS, r), v) for r, v in regs] + reads[1::2]
    reads += [(addr(Region.PROG, 2, c), 0x100 + c) for c in reversed(range(nprog))]

    async def bench(ctx):
        for (region, word), chunks in words.items():
            for c, value in enumerate(chunks):
                await _bus_access(ctx, dut, addr(region, word, c), value)
        await ctx.tick().repeat(4)
        lat = Trainer.READ_LATENCY
        for step in range(len(reads) + lat):
            if step < len(reads):
                ctx.set(dut.bus.addr, reads[step][0])
            ctx.set(dut.bus.r_en, step < len(reads))
            await ctx.tick()
            if 0 <= step + 1 - lat < len(reads):
                got[step + 1 - lat] = ctx.get(dut.bus.r_data)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    want = {i: value for i, (_, value) in enumerate(reads)}
    assert {i: hex(v) for i, v in got.items()} == {i: hex(v) for i, v in want.items()}
