"""The command line's network and training options, shared by the commands that train.

Option values are checked by argparse (``type=`` functions below: a bad value is refused
naming the option); options that do not apply to the run (``--arch`` on an MLP, ``--data-dir``
with a bundled dataset, ...) are refused by :func:`check_applicable` with :class:`OptionError`,
which the command line reports like argparse's own errors.  :func:`prepare_out` checks the
output folder (``--out``, ``--resume``, ``--force``) before anything is trained.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["add_network_args", "add_run_args", "add_out_args", "add_link_args", "positive_float", "spec_from_args", "train_config", "OptionError",
           "positive_int", "nonnegative_int", "int_list", "layer_list", "check_applicable",
           "prepare_out", "BUNDLED_DATASETS"]

#: Datasets shipped inside packages (golden/datasets.py): they read no --data-dir.
BUNDLED_DATASETS = ("digits", "mnist5k")


class OptionError(ValueError):
    """An option that does not apply, or a bad combination of options (reported as a usage
    error: one line naming the option)."""


def _int_at_least(text: str, low: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1, "a positive integer")


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0, "an integer >= 0")


def int_list(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated positive integers, e.g. ``100,50`` (no empty item)."""
    items = text.split(",")
    sizes = []
    for i, item in enumerate(items):
        item = item.strip()
        if not item:
            raise argparse.ArgumentTypeError(
                f"{text!r}: item {i + 1} is empty (expected sizes such as 100,50)")
        try:
            size = int(item)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: {item!r} is not an integer (expected sizes such as 100,50)") from None
        if size < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: sizes must be at least 1, got {size}")
        sizes.append(size)
    return tuple(sizes)


def layer_list(text: str) -> str:
    """argparse type: a named architecture or a layer list with no empty item."""
    if any(not item.strip() for item in text.split(",")):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty item (expected e.g. c32,p,l64)")
    return text


def add_network_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True,
                   help="digits | mnist5k (bundled) | mnist | fashion | cifar10 (need --data-dir)")
    p.add_argument("--data-dir", default=None,
                   help="folder with the dataset's files (mnist, fashion, cifar10)")
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    p.add_argument("--hidden", type=int_list, default=None,
                   help="MLP hidden sizes, e.g. 100,50 (default 100,50)")
    p.add_argument("--arch", type=layer_list, default=None,
                   help="CNN: a named architecture (small, the default; vgg8b) or a layer list "
                        "such as c32,p,c64,p,l100")
    p.add_argument("--relu-inv-slope", type=int, default=4)
    p.add_argument("--decoder-dim", type=positive_int, default=None,
                   help="CNN: largest local-classifier input of conv blocks (default 2048; "
                        "vgg8b 4096)")
    p.add_argument("--fwd-decay-inv", type=nonnegative_int, default=None,
                   help="weight decay divisor of forward layers (0: off; default 12000 MLP, 30000 CNN)")
    p.add_argument("--subnet-decay-inv", type=nonnegative_int, default=3000,
                   help="weight decay divisor of local classifiers and the output layer (0: off)")
    p.add_argument("--conv-amp-extra", action="store_true",
                   help="CNN: multiply conv blocks' amplification by H_out**2 // (kh*kw) (the "
                        "authors' unused factor)")
    p.add_argument("--int8-loss-error", action="store_true",
                   help="wrap the loss error to int8 like the authors' implementation")
    p.add_argument("--compat", choices=("spec", "authors"), default="spec",
                   help="spec: the arithmetic specification (default); authors: reproduce the "
                        "authors' published code (int8 loss error, int32 wrapping accumulators, "
                        "CNNs' linear blocks updated twice per step, decoder pools padded with "
                        "0, last partial batch of each epoch dropped)")


def add_run_args(p: argparse.ArgumentParser, *, epochs: bool = True) -> None:
    """The training loop's options (epochs, batch, learning rate, seed, quiet)."""
    if epochs:
        p.add_argument("--epochs", type=positive_int, default=60)
    p.add_argument("--batch", type=positive_int, default=64)
    p.add_argument("--lr-inv", type=positive_int, default=512)
    p.add_argument("--seed", type=nonnegative_int, default=42)
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")


def add_out_args(p: argparse.ArgumentParser) -> None:
    """``--out`` with ``--resume`` / ``--force``."""
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for checkpoint.npz (written after every epoch), metrics.json "
                        "and learning_curves.png")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true",
                   help="continue the run saved in --out (same dataset, network and settings; "
                        "--epochs may be larger)")
    g.add_argument("--force", action="store_true",
                   help="replace the run saved in --out")


def check_applicable(args) -> None:
    """Refuse options that the run would ignore (:class:`OptionError`)."""
    dataset = getattr(args, "dataset", None)
    if getattr(args, "data_dir", None) is not None and dataset in BUNDLED_DATASETS:
        raise OptionError(f"--data-dir: dataset {dataset} is bundled and reads no files "
                          "(--data-dir is for mnist, fashion and cifar10)")
    model = getattr(args, "model", None)
    if model == "mlp":
        for name, flag in (("arch", "--arch"), ("decoder_dim", "--decoder-dim")):
            if getattr(args, name, None) is not None:
                raise OptionError(f"{flag} applies to --model cnn (this is an MLP: --hidden)")
        if getattr(args, "conv_amp_extra", False):
            raise OptionError("--conv-amp-extra applies to --model cnn (an MLP has no conv block)")
    elif model == "cnn" and getattr(args, "hidden", None) is not None:
        raise OptionError("--hidden applies to --model mlp (a CNN's layers are --arch)")


def spec_from_args(args, ds):
    from golden.network import ARCHITECTURES, NetworkSpec, mlp_layers, parse_layers
    check_applicable(args)
    extra = {}
    if args.model == "mlp":
        layers = mlp_layers(list(args.hidden or (100, 50)))
        fwd_decay = 12000
    else:
        arch = args.arch or "small"
        if arch in ARCHITECTURES:
            text, extra = ARCHITECTURES[arch]
        else:
            text = arch
        try:
            layers = parse_layers(text)
        except ValueError as exc:
            raise OptionError(f"--arch: {exc}") from None
        fwd_decay = 30000
    decoder_dim = args.decoder_dim or extra.get("decoder_dim", 2048)
    return NetworkSpec(
        input_shape=ds.input_shape, classes=ds.classes, layers=layers,
        relu_inv_slope=args.relu_inv_slope, decoder_dim=decoder_dim,
        fwd_decay_inv=fwd_decay if args.fwd_decay_inv is None else args.fwd_decay_inv,
        subnet_decay_inv=args.subnet_decay_inv, conv_amp_extra=args.conv_amp_extra,
        int8_loss_error=args.int8_loss_error, compat=getattr(args, "compat", "spec"))


def train_config(args, **over):
    from golden.train import TrainConfig
    return TrainConfig(epochs=args.epochs, batch=args.batch, lr_inv=args.lr_inv, seed=args.seed,
                       compat=getattr(args, "compat", "spec"), **over)


def prepare_out(args) -> Path | None:
    """Check ``--out`` (with ``--resume`` / ``--force``) before training and create the folder.

    Refused (:class:`OptionError`): an empty path, a path that is a file or cannot be created
    or written, a folder holding a run without ``--resume`` or ``--force``, ``--resume`` with
    nothing to resume.  Without ``--out`` a note says that nothing will be saved."""
    from golden.train import CHECKPOINT_FILE, RUN_FILES

    out = getattr(args, "out", None)
    resume, force = getattr(args, "resume", False), getattr(args, "force", False)
    if out is None:
        if resume or force:
            raise OptionError(f"{'--resume' if resume else '--force'} needs --out DIR (the run's folder)")
        print("note: no --out DIR: this run's checkpoint and metrics will not be saved",
              file=sys.stderr)
        return None
    if not out.strip():
        raise OptionError("--out: empty path (give a folder, e.g. --out runs/mine)")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise OptionError(f"--out {out}: exists and is not a folder")
    existing = [name for name in RUN_FILES if (path / name).exists()]
    if resume:
        if not (path / CHECKPOINT_FILE).is_file():
            raise OptionError(f"--resume: {out} holds no {CHECKPOINT_FILE} to continue")
    elif existing and not force:
        raise OptionError(f"--out {out} holds a run ({', '.join(existing)}): pass --resume to "
                          "continue it or --force to replace it")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".nitrod-write-test-{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"ok")
        probe.unlink()
    except OSError as exc:
        raise OptionError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    return path


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def board_name(text: str) -> str:
    """argparse type: a board of boards/boards.py (imported only when the option is given)."""
    from boards.boards import BOARD

    if text not in BOARD:
        raise argparse.ArgumentTypeError(f"unknown board {text!r}; valid boards: "
                                         f"{', '.join(BOARD)}")
    return text


def add_link_args(p: argparse.ArgumentParser) -> None:
    """The serial link's options (``nitrod board train``)."""
    from hw.contract.link import DEFAULT_BAUD, DEFAULT_RETRIES, DEFAULT_TIMEOUT_S

    p.add_argument("--board", type=board_name, default=None,
                   help="the board (icebreaker, ulx3s-85f, orangecrab-85f): its bitstream's "
                        "baud rate is the default of --baud, and its core's class says whether "
                        "it trains CNNs (without it only MLPs are sent)")
    p.add_argument("--baud", type=positive_int, default=None,
                   help="the board's UART baud rate (default: --board's, as nitrod build set "
                        f"it; without --board {DEFAULT_BAUD:,}, the rate of the boards with a "
                        "USB-serial bridge)")
    p.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help="serial read timeout: how long a response may stay silent "
                        f"(default {DEFAULT_TIMEOUT_S})")
    p.add_argument("--retries", type=nonnegative_int, default=DEFAULT_RETRIES,
                   help="times a request is sent again after a lost or corrupted frame "
                        f"(default {DEFAULT_RETRIES}; safe: the board answers a repeated request "
                        "without running it twice)")
