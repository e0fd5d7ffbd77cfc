"""The ``nitrod`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .options import (OptionError, add_link_args, add_network_args, add_out_args,
                      add_run_args, check_applicable, int_list, nonnegative_int,
                      positive_int,
                      prepare_out, spec_from_args, train_config)

__all__ = ["main"]


def _log(args):
    """Per-epoch lines: print, or nothing with --quiet."""
    return (lambda s: None) if args.quiet else print


def cmd_train(args) -> int:
    from golden.datasets import load_dataset
    from golden.network import Network
    from golden.train import train
    check_applicable(args)
    out = prepare_out(args)
    ds = load_dataset(args.dataset, args.data_dir)
    spec = spec_from_args(args, ds)
    cfg = train_config(args)
    print(f"dataset {ds.name}: {len(ds.x_train)} train / {len(ds.x_test)} test, "
          f"images {ds.input_shape}, {ds.classes} classes")
    print(Network(spec, seed=args.seed).describe())
    if cfg.compat != "spec":
        print(f"compat {cfg.compat}: " + ", ".join(spec.active_quirks() + ("drop_last_batch",)))
    res = train(ds, spec, cfg, out_dir=out, progress=not args.quiet, log=_log(args),
                threads=args.threads, resume=args.resume, interruptible=True)
    m = res.metrics
    print(f"best test accuracy {100 * m['best_test_accuracy']:.2f}% (epoch {m['best_epoch']}), "
          f"final {100 * m['final_test_accuracy']:.2f}%, "
          f"{m['samples_per_second']:.0f} training samples/s")
    if out is not None:
        print(f"wrote {out}/metrics.json, learning_curves.png, checkpoint.npz")
    return 0


def cmd_eval(args) -> int:
    from golden.datasets import load_dataset
    from golden.train import evaluate, load_checkpoint
    net, norm, meta = load_checkpoint(args.checkpoint)
    name = args.dataset or meta.get("dataset")
    if not name:
        raise OptionError(f"--dataset: {args.checkpoint} does not say which dataset it was "
                          "trained on")
    check_applicable(argparse.Namespace(dataset=name, data_dir=args.data_dir))
    ds = load_dataset(name, args.data_dir)
    if ds.input_shape != net.spec.input_shape:
        raise ValueError(f"dataset {name} has images {ds.input_shape}, the checkpoint expects "
                         f"{net.spec.input_shape}")
    acc = evaluate(net, norm(ds.x_test), ds.y_test)
    print(json.dumps({"dataset": name, "test_accuracy": acc, "test_samples": len(ds.y_test)}))
    return 0


def cmd_ranges(args) -> int:
    from golden.datasets import load_dataset
    from golden.train import train
    check_applicable(args)
    out = prepare_out(args)
    ds = load_dataset(args.dataset, args.data_dir)
    spec = spec_from_args(args, ds)
    res = train(ds, spec, train_config(args), out_dir=out, progress=not args.quiet,
                log=_log(args), threads=args.threads, resume=args.resume, interruptible=True)
    print(f"largest magnitudes over {res.metrics['epochs']} epochs "
          f"({ds.name}, layers {','.join(spec.layers)}, seed {args.seed}):")
    print(res.ranges.table())
    if args.json:
        Path(args.json).write_text(json.dumps(res.ranges.as_dict(), indent=2))
    return 0


def cmd_sim(args) -> int:
    from nitrod.accel_train import cmd_sim as run
    return run(args)


def cmd_board_train(args) -> int:
    from nitrod.accel_train import cmd_board_train as run
    return run(args)


def cmd_bench(args) -> int:
    from nitrod import bench
    return (bench.cmd_bench_sim if args.what == "sim" else bench.cmd_bench_golden)(args)


def cmd_sweep(args) -> int:
    from nitrod.sweep import cmd_sweep as run
    return run(args)


def cmd_synth_unit(argv) -> int:
    from boards.synth_unit import main as synth_unit_main
    return synth_unit_main(argv, prog="nitrod synth-unit")


def cmd_build(argv) -> int:
    from nitrod.board_build import main as build_main
    return build_main(argv, prog="nitrod build")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nitrod", description=__doc__ or "NITRO-D integer training")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def train_like(name, help_):
        p = sub.add_parser(name, help=help_)
        add_network_args(p)
        add_run_args(p)
        p.add_argument("--threads", type=positive_int, default=1, help="BLAS threads (default 1)")
        add_out_args(p)
        p.set_defaults(parser=p)
        return p

    p = train_like("train", "train with the golden model (NumPy)")
    p.set_defaults(func=cmd_train)

    p = train_like("ranges", "train and print the largest magnitude of each tensor kind")
    p.add_argument("--json", default=None, help="also write the ranges to this JSON file")
    p.set_defaults(func=cmd_ranges)

    p = train_like("sim", "train on the Trainer gateware simulated in Verilator")
    p.add_argument("--check", action="store_true",
                   help="train the golden model beside it; compare every weight after every "
                        "batch and stop at the first difference")
    p.add_argument("--side", type=positive_int, default=None,
                   help="MAC array side S (S x S MACs; default 8)")
    p.add_argument("--depth", action="append", default=[], metavar="MEM=WORDS",
                   help="a memory depth of the simulated geometry (MEM: act, wgt, err, code, "
                        "label, prog; repeat the option), e.g. --depth act=65536 for a CNN")
    p.add_argument("--steps", type=positive_int, default=None, metavar="N",
                   help="stop after N training steps (no epoch is scored)")
    p.add_argument("--board", default=None,
                   help="simulate the core `nitrod build --board BOARD --core trainer` builds, "
                        "with its geometry (icebreaker: the SerialTrainer)")
    p.add_argument("--waves-batch", type=nonnegative_int, default=None, metavar="N",
                   help="replay batch N (from 0) with waveform tracing into OUT/waves.vcd")
    p.add_argument("--link", choices=("bus", "uart"), default="bus",
                   help="bus: drive the Trainer's host bus directly (fast); uart: through the "
                        "board's UART frame protocol, bit by bit (slow, like a board)")
    p.add_argument("--sim-server", choices=("native", "cocotb"), default=None,
                   help="--link bus: what serves the simulated bus: native (C++ compiled with "
                        "the model; default) or cocotb (Python; the old path). Same results")
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("board", help="train on a board over its USB serial link")
    bsub = p.add_subparsers(dest="board_cmd", required=True)
    p = bsub.add_parser("train", help="the training of `nitrod sim`, on the board's Trainer")
    add_network_args(p)
    p.add_argument("--port", required=True, help="the board's serial device, e.g. /dev/ttyUSB0")
    add_run_args(p)
    add_out_args(p)
    p.add_argument("--check", action="store_true",
                   help="train the golden model beside it and compare after every batch")
    add_link_args(p)
    p.set_defaults(func=cmd_board_train, waves_batch=None, side=None, parser=p)

    p = sub.add_parser("sweep", help="run a grid of trainings or board builds on Dask "
                                      "(a sweep file, or --paper for the paper's table)")
    from nitrod.sweep import add_arguments as add_sweep_arguments
    add_sweep_arguments(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("eval", help="score a checkpoint on its dataset's test split")
    p.set_defaults(parser=p)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", default=None, help="defaults to the checkpoint's dataset")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_eval)

    # Its own parser lives in boards/synth_unit.py; importing it (and Amaranth) only when
    # the command runs keeps the other commands' start-up light.
    # (main() hands `nitrod synth-unit ...` to it before this parser sees the arguments.)
    sub.add_parser("synth-unit", help="synthesise, place and route one RTL unit; print "
                                      "LUT/DSP/RAM counts and Fmax (nitrod synth-unit --help)")
    # Likewise boards/build.py (main() hands `nitrod build ...` to it).
    sub.add_parser("build", help="build a board bitstream (host link + core) and report.json "
                                 "(nitrod build --help)")

    p = sub.add_parser("bench", help="print performance figures (golden: NumPy samples/s; "
                                      "sim: Trainer cycles per step vs the bound, MLP or CNN)")
    p.add_argument("what", choices=("golden", "sim"))
    p.add_argument("--batches", type=positive_int, default=None,
                   help="golden: batches to time (default 400 MLP, 20 CNN)")
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp", help="the network")
    p.add_argument("--arch", default="small",
                   help="--model cnn: small, vgg8b or a layer list (c16,p,c32,l64)")
    p.add_argument("--input-shape", default=None, metavar="CxHxW",
                   help="--model cnn (and golden's MLP): the input shape (default 1x8x8 for "
                        "the small CNN, else 1x28x28)")
    p.add_argument("--threads", type=positive_int, default=1, help="golden: BLAS threads")
    p.add_argument("--steps", type=positive_int, default=2, help="sim: training steps to run")
    p.add_argument("--side", type=positive_int, default=None,
                   help="sim: MAC array side (default 8)")
    p.add_argument("--board", default=None,
                   help="sim: the core and geometry of this board's trainer build; adds the "
                        "samples/s at its core clock, compute-only and end-to-end (the link "
                        "at its baud rate)")
    p.add_argument("--depth", action="append", default=[], metavar="MEM=WORDS",
                   help="sim: a memory depth of the simulated geometry (repeat the option)")
    p.add_argument("--link", choices=("bus", "uart"), default="bus",
                   help="sim with --board: uart also runs the steps through the simulated "
                        "UART and checks the bytes each moved against the link cost model")
    p.add_argument("--inputs", type=positive_int, default=784, help="sim: MLP inputs")
    p.add_argument("--hidden", type=int_list, default=(100, 50), help="MLP hidden sizes")
    p.add_argument("--classes", type=positive_int, default=10, help="classes")
    p.add_argument("--batch", type=positive_int, default=64, help="batch size")
    p.add_argument("--json", default=None, help="sim: also write the figures to this file")
    p.add_argument("--sim-server", choices=("native", "cocotb", "both"), default="native",
                   help="sim: what serves the simulated bus: native (C++ compiled with the "
                        "model), cocotb (Python; the old path) or both, one after the other, "
                        "with both speeds (the cycles must agree)")
    p.set_defaults(func=cmd_bench, parser=p)
    return ap


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["synth-unit"]:
        return cmd_synth_unit(argv[1:])
    if argv[:1] == ["build"]:
        return cmd_build(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except OptionError as exc:         # like argparse's own errors: the option, one line
        prog = args.parser.prog if hasattr(args, "parser") else "nitrod"
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nitrod: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return _report(exc, args)


def _report(exc: Exception, args) -> int:
    """One line for an error the commands expect (else re-raise: a bug shows its traceback)."""
    from golden.datasets import DatasetError
    from golden.train import CheckpointError, TrainingInterrupted
    from nitrod.link import LinkError

    if isinstance(exc, TrainingInterrupted):
        print(f"nitrod: {exc}", file=sys.stderr)
        return 130
    if isinstance(exc, LinkError):
        port = getattr(args, "port", None)
        where = f"the link to {port}" if port else "the simulated link"
        print(f"nitrod: {where} failed: {exc}", file=sys.stderr)
        return 1
    if isinstance(exc, (DatasetError, CheckpointError)):
        print(f"nitrod: error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, (ValueError, TypeError, KeyError, FileNotFoundError, ZeroDivisionError,
                        OverflowError, OSError, RuntimeError)):
        print(f"nitrod: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    raise exc


if __name__ == "__main__":
    sys.exit(main())
