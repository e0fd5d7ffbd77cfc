"""The command line's network and training options, shared by the commands that train."""

from __future__ import annotations

import argparse

__all__ = ["add_network_args", "spec_from_args", "train_config"]


def add_network_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True,
                   help="digits | mnist5k (bundled) | mnist | fashion | cifar10 (need --data-dir)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset's files")
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    p.add_argument("--hidden", default="100,50", help="MLP hidden sizes, e.g. 100,50")
    p.add_argument("--arch", default="small",
                   help="CNN: a named architecture (small, vgg8b) or a layer list "
                        "such as c32,p,c64,p,l100")
    p.add_argument("--relu-inv-slope", type=int, default=4)
    p.add_argument("--decoder-dim", type=int, default=None,
                   help="largest local-classifier input of conv blocks (default 2048; vgg8b 4096)")
    p.add_argument("--fwd-decay-inv", type=int, default=None,
                   help="weight decay divisor of forward layers (0: off; default 12000 MLP, 30000 CNN)")
    p.add_argument("--subnet-decay-inv", type=int, default=3000,
                   help="weight decay divisor of local classifiers and the output layer (0: off)")
    p.add_argument("--conv-amp-extra", action="store_true",
                   help="multiply conv blocks' amplification by H_out**2 // (kh*kw) (the authors' "
                        "unused factor)")
    p.add_argument("--int8-loss-error", action="store_true",
                   help="wrap the loss error to int8 like the authors' implementation")
    p.add_argument("--compat", choices=("spec", "authors"), default="spec",
                   help="spec: the arithmetic specification (default); authors: reproduce the "
                        "authors' published code (int8 loss error, int32 wrapping accumulators, "
                        "CNNs' linear blocks updated twice per step, decoder pools padded with "
                        "0, last partial batch of each epoch dropped)")


def spec_from_args(args, ds):
    from golden.network import ARCHITECTURES, NetworkSpec, mlp_layers, parse_layers
    extra = {}
    if args.model == "mlp":
        layers = mlp_layers(args.hidden)
        fwd_decay = 12000
    else:
        if args.arch in ARCHITECTURES:
            text, extra = ARCHITECTURES[args.arch]
        else:
            text = args.arch
        layers = parse_layers(text)
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
