"""Time estimates of a plan, from the MAC rate measured on this machine."""

from __future__ import annotations

import json

from .plan import Plan, Run, dataset_info
from .store import is_done
from .summary import group_key, key_text

#: simulated Trainer cycles per second in Verilator (README's measured 13-17 k, rounded)
SIM_CYCLES_PER_SECOND = 15_000.0
#: seconds of a board build, by family (README: iCE40 memory core ~1 min, ECP5 Trainer ~1 h)
BUILD_SECONDS = {("ice40", "memory"): 90, ("ice40", "trainer"): 600,
                 ("ecp5", "memory"): 300, ("ecp5", "trainer"): 3600}


def _measure_rate(spec, batch=64, budget_macs=4e9, work_macs=5e8, trials=2) -> float | None:
    """Training MACs per second of ``spec`` on this machine, one BLAS thread: the best of
    ``trials`` timings of about ``work_macs`` each (at least two steps, after a warm-up
    pass; the best, since other load only slows), or None when a step would exceed
    ``budget_macs``."""
    from golden.benchmark import bench_golden
    from golden.network import Network
    macs = Network(spec, seed=0).macs_per_sample()
    if macs * batch > budget_macs:
        return None
    steps = max(2, int(work_macs // (macs * batch)))
    best = max(bench_golden(batches=steps, batch=batch, threads=1, spec=spec)["samples_per_second"]
               for _ in range(trials))
    return best * macs


def _rate_key(run: Run) -> str:
    """What a run's speed depends on: the network's shape and the batch (not its decay
    constants or mode)."""
    s = run.config["spec"]
    return json.dumps({k: s[k] for k in ("input_shape", "classes", "layers", "decoder_dim")}
                      | {"batch": run.config["train"]["batch"]}, sort_keys=True)


def estimate(plan: Plan, log=None) -> dict:
    """Fill every run's ``estimate_s`` (all epochs run, no early stop) and return
    ``{"rates": {...}, "total_s": ...}``.  Golden runs: MACs per sample x (train samples + half
    the test samples) x epochs / the MAC rate measured here for that network (networks too
    large to time in a few seconds take the slowest CNN rate measured, or 2e9 MAC/s)."""
    from golden.network import Network, NetworkSpec
    rates, specs, total = {}, {}, 0.0
    for run in plan.runs:
        if run.kind == "build":
            from boards.boards import get_board
            fam = get_board(run.config["board"]).family
            run.estimate_s = BUILD_SECONDS.get((fam, run.config["core"]), 600)
            total += run.estimate_s
            continue
        key = _rate_key(run)
        if key not in specs:
            spec = NetworkSpec.from_json(json.dumps(run.config["spec"]))
            specs[key] = (spec, Network(spec, seed=0).macs_per_sample())
    for key, (spec, _) in specs.items():
        batch = json.loads(key)["batch"]
        rates[key] = _measure_rate(spec, batch)
        if log and rates[key]:
            log(f"# measured {','.join(spec.layers)} on {'x'.join(map(str, spec.input_shape))}: "
                f"{rates[key] / 1e9:.2f} GMAC/s")
    cnn_rates = [r for k, r in rates.items() if r and specs[k][0].is_cnn]
    fallback = min(cnn_rates) if cnn_rates else 2e9
    for run in plan.runs:
        if run.kind != "train":
            continue
        key = _rate_key(run)
        spec, macs = specs[key]
        info = dataset_info(run.config["dataset"], run.data_dir)
        epochs = run.config["train"]["epochs"]
        work = macs * (info["train"] + info["test"] / 2) * epochs
        if run.config["backend"] == "sim":
            side = (run.config["sim"]["side"] or 8)
            run.estimate_s = macs * info["train"] * epochs / side ** 2 * 1.2 / SIM_CYCLES_PER_SECOND
        else:
            run.estimate_s = work / (rates[key] or fallback)
        total += run.estimate_s
    return {"rates_gmacs": {",".join(specs[k][0].layers): (r / 1e9 if r else None)
                            for k, r in rates.items()},
            "total_s": total}


def duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def estimate_table(plan: Plan, workers: int, out=None) -> str:
    """The plan grouped by row: runs, done, estimated time of one run and of the rest."""
    rows: dict = {}
    for run in plan.runs:
        key = group_key(run)
        r = rows.setdefault(key, {"runs": 0, "done": 0, "one": run.estimate_s or 0, "todo": 0.0})
        r["runs"] += 1
        if out is not None and is_done(out, run.hash):
            r["done"] += 1
        else:
            r["todo"] += run.estimate_s or 0
    lines = ["| row | runs | done | one run (at most) | to run (at most) |", "|---|---|---|---|---|"]
    for key, r in rows.items():
        lines.append(f"| {key_text(key)} | {r['runs']} | {r['done']} | {duration_text(r['one'])} "
                     f"| {duration_text(r['todo'])} |")
    todo = sum(r["todo"] for r in rows.values())
    lines.append(f"\nat most {duration_text(todo)} of work left, about {duration_text(todo / workers)} "
                 f"on {workers} worker(s)" + (" (early stopping usually ends training sooner)"
                                               if plan.kind == "train" else ""))
    return "\n".join(lines)
