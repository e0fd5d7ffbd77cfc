"""``nitrod bench``: performance figures (golden samples/s; a core's cycles per step, and with
``--board`` the samples/s at the board's core clock: compute-only and end-to-end, the link at
the board's baud rate counted by nitrod/link_cost.py; ``--link uart`` runs the steps through
the simulated UART and checks the bytes they move against the model)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from .accel_train import SimStats, core_name, geometry_of

__all__ = ["cmd_bench_golden", "cmd_bench_sim", "golden_bench_spec"]


def golden_bench_spec(args):
    """The network ``nitrod bench golden`` times: ``--model mlp`` (784-HIDDEN-CLASSES) or
    ``--model cnn --arch NAME|LAYERS`` on ``--input-shape`` (default 1x8x8 for the ``small``
    CNN, which is the digits network, else 1x28x28)."""
    from golden.network import ARCHITECTURES, NetworkSpec, mlp_layers, parse_layers
    arch = getattr(args, "arch", "small")
    text = getattr(args, "input_shape", None) or (
        "1x8x8" if args.model == "cnn" and arch == "small" else "1x28x28")
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--input-shape {text!r}: expected CxHxW, e.g. 1x28x28") from None
    if len(shape) != 3:
        raise ValueError(f"--input-shape {text!r}: expected CxHxW, e.g. 1x28x28")
    if args.model == "mlp":
        return NetworkSpec(shape, args.classes, mlp_layers(args.hidden))
    layers, extra = ARCHITECTURES.get(arch, (arch, {}))
    return NetworkSpec(shape, args.classes, parse_layers(layers), fwd_decay_inv=30000,
                       decoder_dim=extra.get("decoder_dim", 2048))


def cmd_bench_golden(args) -> int:
    """Training samples/s of the golden model (default MLP 784-100-50-10 at batch 64)."""
    from golden.benchmark import bench_golden
    spec = golden_bench_spec(args)
    batches = args.batches or (400 if args.model == "mlp" else 20)
    r = bench_golden(batches=batches, batch=args.batch, threads=args.threads, spec=spec)
    shape = "x".join(map(str, spec.input_shape))
    print(f"{args.model.upper()} {','.join(spec.layers)} on {shape}, batch {args.batch}, "
          f"{r['threads']} BLAS thread(s): {r['macs_per_sample']} MACs/sample, "
          f"{r['gmacs']:.2f} GMAC/s")
    print(f"{r['samples_per_second']:.0f} samples/s")
    return 0


def _bench_run(args, spec, geometry, server: str) -> tuple[dict, str]:
    """``args.steps`` training steps on random data (the same for every server)."""
    from golden.datasets import one_hot
    from nitrod.backends import open_backend
    from nitrod.compiler import CompileError

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    backend = open_backend("sim", spec, batch=args.batch, seed=0, geometry=geometry,
                           board=getattr(args, "board", None), sim_server=server)
    start = time.perf_counter() - t0
    stats = SimStats(backend)
    shape = spec.input_shape if spec.is_cnn else (args.inputs,)
    try:
        for _ in range(args.steps):
            x = rng.integers(-127, 128, size=(args.batch, *shape)).astype(np.int8)
            y = rng.integers(0, args.classes, size=args.batch)
            backend.train_step(x, one_hot(y, args.classes), 512)
        m = stats.metrics()
        x = rng.integers(-127, 128, size=(args.batch, *shape)).astype(np.int8)
        y = rng.integers(0, args.classes, size=args.batch)
        try:
            _, cycles = backend.profile_step(x, one_hot(y, args.classes), 512)
        except CompileError as exc:          # PROG too short for an END after each instruction
            m["profile"] = {"not_measured": str(exc)}
        else:
            m["profile"] = _profile(backend.plan, args.batch, cycles, backend.mac_elements)
    finally:
        backend.close()
    m["simulator_start_seconds"] = start
    m["mac_elements"] = backend.mac_elements
    m["sim_server"] = backend.bus.server
    m["step_cycles"] = list(stats.cycles)
    return m, core_name(backend)


def _profile(plan, batch: int, cycles: list[int], macs: int) -> dict:
    """Per product (nitrod.compiler.PRODUCTS): the cycles of its instructions run one at a
    time, its useful MACs and its lower bound (useful MACs / MAC elements); per instruction:
    its op, stage, product, cycles and MAC-array cycles (every beat of every tile, padding
    included, on ``macs`` elements)."""
    from hw.contract import Op, beat_count, tile_count
    from nitrod.compiler import PRODUCTS

    useful = plan.product_macs(batch)
    out = {p: {"instructions": 0, "cycles": 0, "useful_macs": useful[p],
               "bound": useful[p] / macs} for p in PRODUCTS}
    rows = []
    program = plan.program(512, batch)[:-1]
    s2 = plan.side * plan.side
    for ins, product, stage, c in zip(program, plan.instruction_products(batch),
                                      plan.instruction_stages(batch), cycles, strict=True):
        out[product]["instructions"] += 1
        out[product]["cycles"] += c
        array = 0 if product == "pool" else tile_count(ins) * beat_count(ins) * s2 // macs
        rows.append({"op": Op(ins["op"]).name, "stage": stage, "product": product,
                     "cycles": c, "array_cycles": array})
    return {"products": out, "instructions": rows, "instruction_cycles": list(cycles)}


def _print_profile(m: dict) -> None:
    prof = m.get("profile")
    if not prof:
        return
    if "not_measured" in prof:
        print(f"  per product            not measured: {prof['not_measured']}")
        return
    total = sum(prof["instruction_cycles"])
    print(f"  per product            (its instructions run one at a time: {total:,} cycles "
          f"in all)")
    print(f"    {'product':<16} {'instr':>5} {'cycles':>11} {'share':>6} {'bound':>11} "
          f"{'utilisation':>11}")
    for name, p in prof["products"].items():
        if not p["instructions"]:
            continue
        util = p["bound"] / p["cycles"] if p["cycles"] else 0.0
        print(f"    {name:<16} {p['instructions']:>5} {p['cycles']:>11,} "
              f"{p['cycles'] / total:>6.1%} {p['bound']:>11,.0f} {util:>11.3f}")
    worst = sorted((r for r in prof["instructions"] if r["product"] != "pool"),
                   key=lambda r: r["array_cycles"] - r["cycles"])[:3]
    print("  the array waits most in (cycles beyond its beats, padding included; pools aside):")
    for r in worst:
        print(f"    {r['op']:<10} {r['stage']:<8} {r['product']:<15} {r['cycles']:>9,} cycles, "
              f"{r['array_cycles']:>9,} array: {r['cycles'] - r['array_cycles']:>8,} waiting")


def _link_model(args, spec, geometry, cycles_per_batch: float, macs: int):
    """The link cost model of the bench's network on ``--board`` at its baud rate and burst,
    with the run's cycles (the core's exact cycle model where it has one, else the measured
    cycles per batch)."""
    from boards.boards import get_board
    from nitrod.link_cost import LinkCostModel, LinkSettings

    board = get_board(args.board)
    measured = round(cycles_per_batch)
    holder = {}

    def cycles(m):
        exact = board.trainer.program_cycles(geometry, holder["plan"].program(512, m))
        return exact if exact is not None else measured

    model = LinkCostModel(spec, geometry, args.batch,
                          LinkSettings(baud=board.baud, max_burst=board.link_max_burst),
                          macs=macs, cycles=cycles, core=board.trainer,
                          clock_hz=board.core_mhz() * 1e6)
    holder["plan"] = model.plan
    return board, model


def _link_report(args, spec, geometry, m: dict) -> dict:
    """Compute-only and end-to-end samples/s on ``--board`` (printed, and returned)."""
    board, model = _link_model(args, spec, geometry, m["cycles_per_batch"], m["mac_elements"])
    clock = board.core_mhz()
    step = model.step()
    t = step["traffic"]
    compute = args.batch * clock * 1e6 / model.cycles()
    layers = [args.inputs, *map(int, args.hidden), args.classes]
    same_network = not spec.is_cnn and layers == board.network["layers"]
    epoch = model.epoch(board.network["train_samples"]) if same_network else None
    print(f"  on {board.name} at {clock:g} MHz, {board.baud:,} baud (link burst "
          f"{board.link_max_burst}, pipelined):")
    print(f"    compute-only         {compute:,.1f} samples/s ({model.cycles():,} cycles)")
    print(f"    link per step        {t.to_board:,} bytes to the board, {t.from_board:,} back "
          f"({t.frames} frames, {t.round_trips - step['polls']} round trips and "
          f"{step['polls']} polls): {1e3 * step['link_seconds']:.2f} ms of line")
    print(f"    end-to-end           {step['samples_per_s']:,.1f} samples/s a full step"
          + (f"; {epoch['samples_per_s']:,.1f} over an epoch of {epoch['samples']} samples "
             "(the weights read once)" if epoch else ""))
    return {"board": board.name, "core_mhz": clock, "baud": board.baud,
            "compute_samples_per_s": compute, "end_to_end_step_samples_per_s":
            step["samples_per_s"], "end_to_end_samples_per_s":
            epoch["samples_per_s"] if epoch else None,
            "step_bytes_to_board": t.to_board, "step_bytes_from_board": t.from_board,
            "step_frames": t.frames, "step_round_trips": t.round_trips - step["polls"],
            "step_link_seconds": step["link_seconds"]}


def _uart_check(args, spec, geometry) -> list[dict]:
    """``args.steps`` steps of the bench's network through ``--board``'s core behind the
    simulated UART (4 cycles a bit: the bytes do not depend on it), the board's burst,
    pipelined: each step's bytes both ways and frames, measured on the line, and the model's
    (with the polls the step made)."""
    from golden.datasets import one_hot
    from nitrod.backends import open_backend
    from nitrod.link_cost import LineMeter

    meters = []

    def wrap(transport):
        meters.append(LineMeter(transport))
        return meters[-1]

    from boards.boards import get_board
    board = get_board(args.board)
    backend = open_backend("sim-uart", spec, batch=args.batch, seed=0, geometry=geometry,
                           board=args.board, clocks_per_bit=4, link_timeout=64 * 40,
                           max_burst=board.link_max_burst, transport_wrapper=wrap)
    rng = np.random.default_rng(0)
    rows = []
    try:
        _, model = _link_model(args, spec, geometry, 1, backend.mac_elements)
        meter = meters[0]
        meter.take()
        for i in range(args.steps):
            shape = spec.input_shape if spec.is_cnn else (args.inputs,)
            x = rng.integers(-127, 128, size=(args.batch,) + shape).astype(np.int8)
            y = rng.integers(0, args.classes, size=args.batch)
            backend.train_step(x, one_hot(y, args.classes), 512)
            got = meter.take()
            polls = got["status_reads"] - 1
            want = model.step_traffic(polls=polls, program=i == 0)
            rows.append({"step": i, "polls": polls, "measured": got,
                         "model": {"to_board": want.to_board, "from_board": want.from_board,
                                   "frames": want.frames, "status_reads": polls + 1}})
    finally:
        backend.close()
    return rows


def _model_cycles(args, spec, geometry):
    """The cycles of a step by the simulated core's cycle model (None without one)."""
    from nitrod.backends import core_choice
    from nitrod.compiler import compile_network

    choice = core_choice(getattr(args, "board", None), geometry)
    plan = compile_network(spec, choice.geometry, args.batch)
    return choice.core.program_cycles(choice.geometry, plan.program(512, args.batch))


def cmd_bench_sim(args) -> int:
    """Cycles of one training step of MLP 784-100-50-10 at batch 64 (random data) on the
    simulated Trainer vs the lower bound, MAC utilisation and simulated cycles per second
    (``--sim-server both``: under each server, which must agree on every step's cycles)."""
    from golden.network import NetworkSpec

    hidden = [int(v) for v in args.hidden]          # options.int_list: checked by the parser
    if args.model == "cnn":
        try:
            spec = golden_bench_spec(args)
        except ValueError as exc:
            print(f"nitrod bench sim: {exc}", file=sys.stderr)
            return 2
    else:
        spec = NetworkSpec((1, 1, args.inputs), args.classes, tuple(f"l{n}" for n in hidden))
    geometry = geometry_of(args)
    choice = getattr(args, "sim_server", None) or "native"
    servers = ["native", "cocotb"] if choice == "both" else [choice]
    runs = {}
    for server in servers:
        runs[server], core = _bench_run(args, spec, geometry, server)
    m = dict(runs[servers[0]])
    if spec.is_cnn:
        m["network"] = (f"CNN {','.join(spec.layers)} on {'x'.join(map(str, spec.input_shape))}, "
                        f"{args.classes} classes")
    else:
        m["network"] = f"MLP {args.inputs}-{'-'.join(map(str, hidden))}-{args.classes}"
    m["batch"] = args.batch
    m["sim_cycles_per_second_by_server"] = {k: r["sim_cycles_per_second"] for k, r in runs.items()}
    model = _model_cycles(args, spec, geometry)
    if model is not None:
        m["model_cycles_per_step"] = model
    print(f"{m['network']}, batch {args.batch}, {core}, {args.steps} steps:")
    print(f"  cycles per step        {m['cycles_per_batch']:.0f}"
          + (f"  (the core's cycle model: {model})" if model is not None else ""))
    print(f"  lower bound            {m['cycles_lower_bound_per_batch']:.0f}  "
          f"(useful MACs / MAC elements)")
    print(f"  cycles / bound         {m['cycles_over_bound']:.3f}")
    print(f"  MAC utilisation        {m['mac_utilisation']:.3f}")
    _print_profile(m)
    for server, r in runs.items():
        print(f"  simulated cycles/s     {r['sim_cycles_per_second']:.0f}  ({server} server, "
              f"{r['sim_seconds']:.2f} s for {r['steps']} steps; started in "
              f"{r['simulator_start_seconds']:.1f} s)")
    status = 0
    if len(runs) == 2:
        a, b = runs["native"], runs["cocotb"]
        if b["sim_cycles_per_second"]:
            ratio = a["sim_cycles_per_second"] / b["sim_cycles_per_second"]
            print(f"  native / cocotb        {ratio:.1f}x")
        if a["step_cycles"] != b["step_cycles"]:
            print(f"nitrod bench sim: the servers disagree on the cycles per step: native "
                  f"{a['step_cycles']}, cocotb {b['step_cycles']}", file=sys.stderr)
            status = 1
    if getattr(args, "board", None):
        m["link"] = _link_report(args, spec, geometry, m)
        if getattr(args, "link", "bus") == "uart":
            rows = _uart_check(args, spec, geometry)
            m["link"]["uart_check"] = rows
            for r in rows:
                got, want = r["measured"], r["model"]
                same = got == want
                print(f"    simulated UART       step {r['step']}: {got['to_board']:,} + "
                      f"{got['from_board']:,} bytes, {got['frames']} frames "
                      f"({r['polls']} polls): {'= the model' if same else 'model: ' + str(want)}")
                if not same:
                    status = 1
    elif getattr(args, "link", "bus") == "uart":
        print("nitrod bench sim: --link uart needs --board", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(m, indent=2))
    return status
