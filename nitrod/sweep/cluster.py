"""The sweep on Dask: a local cluster or a scheduler's, runs submitted, results gathered."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from .plan import label_text, Plan
from .store import is_done, run_dir, write_atomic
from .summary import summarise
from .worker import result_row, run_one

def local_cluster(workers: int | None = None):
    """A local Dask cluster of ``workers`` single-threaded worker processes (default: the
    cores this process may use)."""
    import logging
    from dask.distributed import LocalCluster
    n = workers or len(os.sched_getaffinity(0))
    return LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                        dashboard_address=":0", silence_logs=logging.ERROR)


def _clean_stale(out: Path) -> int:
    """Remove temporary run directories left by attempts that died (run only when no other
    sweep writes into ``out``)."""
    n = 0
    for p in (out / "runs").glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)
        n += 1
    return n


def run_sweep(plan: Plan, out, client=None, workers=None, progress=True, log=print,
              retries: int = 1) -> dict:
    """Run ``plan``'s unfinished runs on ``client`` (default: a new local cluster), then
    write the summary.  Returns ``{"rows": [...], "failed": [(run, error)], "ran": n,
    "skipped": n}``."""
    from dask.distributed import Client, as_completed
    out = Path(out).resolve()          # the workers may run elsewhere (a shared file system)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    _clean_stale(out)
    write_atomic(out / "sweep.json", json.dumps(
        {"kind": plan.kind, "source": plan.source, "notes": plan.notes,
         "runs": [{"hash": r.hash, "label": r.label, "estimate_s": r.estimate_s}
                  for r in plan.runs]}, indent=2, default=str) + "\n")
    todo = [r for r in plan.runs if not is_done(out, r.hash)]
    skipped = len(plan.runs) - len(todo)
    log(f"{len(plan.runs)} runs: {skipped} already complete, {len(todo)} to run; "
        f"results in {out}")
    failed = []
    own = None
    if todo:
        if client is None:
            own = Client(local_cluster(workers))
            client = own
        try:
            futures = {}
            for run in sorted(todo, key=lambda r: -(r.estimate_s or 0)):   # longest first
                fut = client.submit(run_one, run, str(out), key=f"nitrod-run-{run.hash}",
                                    retries=retries, priority=int(run.estimate_s or 0))
                futures[fut] = run
            bar = None
            if progress:
                from tqdm import tqdm
                bar = tqdm(total=len(futures), unit="run", file=sys.stderr, dynamic_ncols=True)
            for fut in as_completed(futures):
                run = futures[fut]
                if fut.status == "error":
                    exc = fut.exception()
                    failed.append((run, f"{type(exc).__name__}: {exc}"))
                    log(f"run {run.hash} ({label_text(run.label)}) failed: "
                        f"{type(exc).__name__}: {exc}")
                if bar is not None:
                    bar.set_postfix_str(label_text(run.label)[:60])
                    bar.update(1)
            if bar is not None:
                bar.close()
        finally:
            if own is not None:
                cluster = own.cluster
                own.close()
                cluster.close()
    rows = [result_row(r, run_dir(out, r.hash), skipped=False) for r in plan.runs
            if is_done(out, r.hash)]
    summarise(plan, rows, out, failed)
    return {"rows": rows, "failed": failed, "ran": len(todo) - len(failed), "skipped": skipped}
