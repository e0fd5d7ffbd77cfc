"""The ``nitrod`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .options import add_network_args, spec_from_args, train_config

__all__ = ["main"]


def cmd_train(args) -> int:
    from golden.datasets import load_dataset
    from golden.network import Network
    from golden.train import train
    ds = load_dataset(args.dataset, args.data_dir)
    spec = spec_from_args(args, ds)
    print(f"dataset {ds.name}: {len(ds.x_train)} train / {len(ds.x_test)} test, "
          f"images {ds.input_shape}, {ds.classes} classes")
    print(Network(spec, seed=args.seed).describe())
    cfg = train_config(args)
    if cfg.compat != "spec":
        print(f"compat {cfg.compat}: " + ", ".join(spec.active_quirks() + ("drop_last_batch",)))
    res = train(ds, spec, cfg, out_dir=args.out, progress=not args.quiet, threads=args.threads)
    m = res.metrics
    print(f"best test accuracy {100 * m['best_test_accuracy']:.2f}% (epoch {m['best_epoch']}), "
          f"final {100 * m['final_test_accuracy']:.2f}%, "
          f"{m['samples_per_second']:.0f} training samples/s")
    if args.out:
        print(f"wrote {args.out}/metrics.json, learning_curves.png, checkpoint.npz")
    return 0


def cmd_eval(args) -> int:
    from golden.datasets import load_dataset
    from golden.train import evaluate, load_checkpoint
    net, norm, meta = load_checkpoint(args.checkpoint)
    name = args.dataset or meta["dataset"]
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
    ds = load_dataset(args.dataset, args.data_dir)
    spec = spec_from_args(args, ds)
    res = train(ds, spec, train_config(args), out_dir=args.out, progress=not args.quiet,
                log=(lambda s: None) if args.quiet else print, threads=args.threads)
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
        p.add_argument("--epochs", type=int, default=60)
        p.add_argument("--batch", type=int, default=64)
        p.add_argument("--lr-inv", type=int, default=512)
        p.add_argument("--seed", type=int, default=42)
        p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
        p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
        return p

    p = train_like("train", "train with the golden model (NumPy)")
    p.add_argument("--out", default=None, help="folder for metrics.json, curves and checkpoint")
    p.set_defaults(func=cmd_train)

    p = train_like("ranges", "train and print the largest magnitude of each tensor kind")
    p.add_argument("--out", default=None)
    p.add_argument("--json", default=None, help="also write the ranges to this JSON file")
    p.set_defaults(func=cmd_ranges)

    p = train_like("sim", "train on the Trainer gateware simulated in Verilator (MLPs)")
    p.add_argument("--out", default=None, help="folder for metrics.json, curves and checkpoint")
    p.add_argument("--check", action="store_true",
                   help="train the golden model beside it; compare every weight after every "
                        "batch and stop at the first difference")
    p.add_argument("--side", type=int, default=None,
                   help="MAC array side S (S x S MACs; default 8)")
    p.add_argument("--board", default=None,
                   help="simulate the core `nitrod build --board BOARD --core trainer` builds, "
                        "with its geometry (icebreaker: the SerialTrainer)")
    p.add_argument("--waves-batch", type=int, default=None, metavar="N",
                   help="replay batch N (from 0) with waveform tracing into OUT/waves.vcd")
    p.add_argument("--link", choices=("bus", "uart"), default="bus",
                   help="bus: drive the Trainer's host bus directly (fast); uart: through the "
                        "board's UART frame protocol, bit by bit (slow, like a board)")
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("board", help="train on a board over its USB serial link")
    bsub = p.add_subparsers(dest="board_cmd", required=True)
    p = bsub.add_parser("train", help="the training of `nitrod sim`, on the board's Trainer")
    add_network_args(p)
    p.add_argument("--port", required=True, help="the board's serial device, e.g. /dev/ttyUSB0")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr-inv", type=int, default=512)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--check", action="store_true",
                   help="train the golden model beside it and compare after every batch")
    p.set_defaults(func=cmd_board_train, waves_batch=None, side=None)

    p = sub.add_parser("sweep", help="run a grid of trainings or board builds on Dask "
                                      "(a sweep file, or --paper for the paper's table)")
    from nitrod.sweep import add_arguments as add_sweep_arguments
    add_sweep_arguments(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("eval", help="score a checkpoint on its dataset's test split")
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
                                      "sim: Trainer cycles per step vs the bound)")
    p.add_argument("what", choices=("golden", "sim"))
    p.add_argument("--batches", type=int, default=None,
                   help="golden: batches to time (default 400 MLP, 20 CNN)")
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp", help="golden: the network")
    p.add_argument("--arch", default="small",
                   help="golden --model cnn: small, vgg8b or a layer list (c16,p,c32,l64)")
    p.add_argument("--input-shape", default=None, metavar="CxHxW",
                   help="golden: input shape (default 1x8x8 for the small CNN, else 1x28x28)")
    p.add_argument("--threads", type=int, default=1, help="golden: BLAS threads")
    p.add_argument("--steps", type=int, default=2, help="sim: training steps to run")
    p.add_argument("--side", type=int, default=None, help="sim: MAC array side (default 8)")
    p.add_argument("--board", default=None,
                   help="sim: the core and geometry of this board's trainer build")
    p.add_argument("--inputs", type=int, default=784, help="sim: MLP inputs")
    p.add_argument("--hidden", default="100,50", help="MLP hidden sizes")
    p.add_argument("--classes", type=int, default=10, help="classes")
    p.add_argument("--batch", type=int, default=64, help="batch size")
    p.add_argument("--json", default=None, help="sim: also write the figures to this file")
    p.set_defaults(func=cmd_bench)
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
    except (ValueError, TypeError, KeyError, FileNotFoundError, ZeroDivisionError,
            OverflowError, OSError, RuntimeError) as exc:
        from golden.datasets import DatasetError
        kind = "error" if isinstance(exc, DatasetError) else type(exc).__name__
        print(f"nitrod: {kind}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
