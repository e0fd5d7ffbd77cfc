"""``nitrod sweep``: grids of training runs or board builds, run on Dask.

A sweep file (TOML) names a grid; every point of it is one *run*, a task on a Dask cluster
(a local one sized to the machine, or ``--scheduler ADDRESS``) that calls the project's own
functions in the worker: :func:`golden.train.train` (backend ``golden``),
:func:`nitrod.accel_train.train_on_accelerator` (backend ``sim``), or
:func:`boards.build.build_board` with :func:`nitrod.board_build.annotate` (builds).

Training grid (``kind = "train"``, the default)::

    datasets = ["digits", "mnist5k"]        # digits, mnist5k (bundled); mnist, fashion,
    data_dir = "/data"                      #   cifar10 from data_dir (or --data-dir)
    networks = ["mlp:100,50", "cnn:small", "cnn:c16,p,c32,p,c64,l64"]
    seeds = 10                              # a count (seeds 1..10) or a list [1, 5, 9]
    backends = ["golden"]                   # golden | sim (the Trainer in Verilator, MLPs)

    [options]                               # a value, or a list of values to sweep
    epochs = 150
    compat = ["spec", "authors"]
    lr_inv = [512, 256]

Build grid (``kind = "build"``)::

    kind = "build"
    boards = ["ulx3s-85f"]
    seeds = [1, 2, 3, 4]                    # nextpnr placement seeds
    core = "trainer"                        # trainer | memory (a list sweeps it)
    geometries = [{}, {depth = {act = 8192}}, {side = 4}]   # {} is the board's own
    freq = 100                              # optional core clock, MHz
    nextpnr_opts = ["--placer-heap-beta 0.6"]

Every run writes its own directory ``OUT/runs/<hash>``, the hash of its resolved
configuration (:func:`config_hash`): ``config.json``, the run's files (``metrics.json``,
``checkpoint.npz``, ``learning_curves.png``, ``train.log``; for a build ``report.json`` and
the build tree) and, last, the marker ``done.json``.  A run is written in a temporary
directory renamed into place once complete, so a directory with ``done.json`` is always
whole and one without it never exists; a rerun of the sweep skips the runs that have it.
A run whose worker dies is run again elsewhere by Dask (its scheduler's
``allowed-failures``), a run that raises is retried once (``retries``).  At the end
``summary.md``, ``summary.csv``, ``runs.csv`` and ``summary.png``: the paper's table form
(mean +- std of the best test accuracy over seeds, and of the epoch it was reached) or, for
builds, Fmax (min, median, max) and projected samples/s over placement seeds.

``nitrod sweep --paper`` builds the grid of the paper's table (NITRO-D, Table 1) for the
datasets present, spec and ``--compat authors`` side by side.
"""

from .cluster import local_cluster, run_sweep
from .command import add_arguments, cmd_sweep
from .estimate import estimate, estimate_table
from .plan import (PAPER_RESULTS, Plan, Run, SweepError, load_sweep_file, paper_plan,
                   parse_network, plan_from_dict, resolve_train_run)
from .store import MARKER, config_hash, is_done, write_atomic
from .summary import summarise
from .worker import run_one

__all__ = ["SweepError", "Run", "Plan", "load_sweep_file", "plan_from_dict", "paper_plan",
           "parse_network", "resolve_train_run", "config_hash", "write_atomic", "is_done",
           "run_one", "local_cluster", "run_sweep", "estimate", "estimate_table", "summarise",
           "add_arguments", "cmd_sweep", "PAPER_RESULTS", "MARKER"]
