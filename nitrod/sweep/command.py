"""``nitrod sweep``: the command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .cluster import run_sweep
from .estimate import duration_text, estimate, estimate_table
from .plan import SweepError, load_sweep_file, paper_plan
from .store import is_done

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", default=None, help="the sweep file (TOML)")
    p.add_argument("--paper", action="store_true",
                   help="the grid of the paper's table for --datasets (default: digits, "
                        "mnist5k and those of mnist, fashion, cifar10 found in --data-dir), "
                        "spec and --compat authors side by side")
    p.add_argument("--datasets", default=None, help="--paper: comma-separated datasets")
    p.add_argument("--data-dir", default=None, help="folder with the datasets' files")
    p.add_argument("--seeds", type=int, default=10, help="--paper: seeds 1..N (default 10)")
    p.add_argument("--epochs", type=int, default=150,
                   help="--paper: most epochs per run, early stopping as the paper (default 150)")
    p.add_argument("--cnn-epochs", type=int, default=None,
                   help="--paper: most epochs of the CNN rows (default --epochs)")
    p.add_argument("--rows", default="mlp,cnn",
                   help="--paper: the rows to run, mlp and/or cnn (default both; the VGG rows "
                        "with --include-vgg)")
    p.add_argument("--include-vgg", action="store_true",
                   help="--paper: also the VGG8B rows (hours to days per run in NumPy: meant "
                        "for a cluster)")
    p.add_argument("--out", default=None,
                   help="results folder (default runs/sweep-FILE, or runs/paper)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="an existing Dask scheduler (tcp://host:8786); its workers need nitrod "
                        "installed and --out on a shared file system")
    p.add_argument("--workers", type=int, default=None,
                   help="local cluster: worker processes (default: the cores)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the runs and the time estimate, run nothing")
    p.add_argument("--no-estimate", action="store_true",
                   help="skip measuring this machine's speed for the estimate")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _paper_datasets(args) -> list:
    if args.datasets:
        return [d.strip() for d in args.datasets.split(",") if d.strip()]
    found = ["digits", "mnist5k"]
    if args.data_dir:
        from golden.datasets import load_dataset
        for name in ("mnist", "fashion", "cifar10"):
            try:
                load_dataset(name, args.data_dir)
                found.append(name)
            except (ValueError, OSError):
                pass
    return found


def cmd_sweep(args) -> int:
    if args.paper == bool(args.file):
        print("nitrod sweep: give a sweep file or --paper (one of them)", file=sys.stderr)
        return 2
    for name in ("seeds", "epochs", "cnn_epochs", "workers"):
        v = getattr(args, name)
        if v is not None and v < 1:
            print(f"nitrod sweep: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    try:
        if args.paper:
            plan = paper_plan(_paper_datasets(args), seeds=args.seeds, data_dir=args.data_dir,
                              epochs=args.epochs, cnn_epochs=args.cnn_epochs,
                              include_vgg=args.include_vgg,
                              rows=tuple(r.strip() for r in args.rows.split(",") if r.strip()))
            out = Path(args.out or "runs/paper")
        else:
            plan = load_sweep_file(args.file, data_dir=args.data_dir)
            out = Path(args.out or f"runs/sweep-{Path(args.file).stem}")
    except SweepError as exc:
        print(f"nitrod sweep: {exc}", file=sys.stderr)
        return 2
    if not plan.runs:
        print("nitrod sweep: the grid has no run", file=sys.stderr)
        return 2
    client = None
    if args.scheduler and not args.dry_run:
        from dask.distributed import Client
        try:
            client = Client(args.scheduler, timeout="30s")
        except (OSError, TimeoutError, ValueError) as exc:
            print(f"nitrod sweep: cannot reach the scheduler {args.scheduler}: {exc}",
                  file=sys.stderr)
            return 2
        workers = max(1, sum(client.nthreads().values()))
    else:
        workers = args.workers or len(os.sched_getaffinity(0))
    try:
        if not args.no_estimate:
            est = estimate(plan, log=print)
            print(estimate_table(plan, workers, out))
            if args.dry_run:
                print(f"(dry run) at most {duration_text(est['total_s'])} of work in all")
        for note in plan.notes:
            print(f"# {note}")
        if args.dry_run:
            print(f"(dry run) {len(plan.runs)} runs in the grid, "
                  f"{sum(is_done(out, r.hash) for r in plan.runs)} complete in {out}")
            return 0
        res = run_sweep(plan, out, client=client, workers=args.workers,
                        progress=not args.quiet)
    finally:
        if client is not None:
            client.close()
    print((out / "summary.md").read_text())
    print(f"wrote {out}/summary.md, summary.csv, runs.csv, summary.png; "
          f"{res['ran']} run(s) now, {res['skipped']} already complete")
    return 1 if res["failed"] else 0
