"""The sweep's summaries: the paper's table form, build Fmax over seeds, CSVs, a plot."""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

from .plan import label_text, PAPER_DATASET, PAPER_RESULTS, Plan, Run
from .store import write_atomic

def group_key(run: Run) -> tuple:
    """A run's row in the summary: its label without the seed."""
    return tuple((k, v) for k, v in run.label.items() if k != "seed")


_PLAIN_FIELDS = ("dataset", "network", "backend", "compat", "board", "core", "geometry")


def key_text(key: tuple) -> str:
    return " ".join(str(v) if k in _PLAIN_FIELDS else f"{k}={v}" for k, v in key)


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _by_group(plan, rows) -> dict:
    """``{group key: [rows]}`` in the plan's order (every group, even one without results)."""
    runs = {r.hash: r for r in plan.runs}
    groups = {k: [] for k in dict.fromkeys(group_key(r) for r in plan.runs)}
    for row in rows:
        groups[group_key(runs[row["hash"]])].append(row)
    return groups


def _train_groups(plan, rows):
    groups = []
    for key, rs in _by_group(plan, rows).items():
        d = dict(key)
        acc_m, acc_s = _mean_std([100 * r["best_test_accuracy"] for r in rs
                                  if r.get("best_test_accuracy") is not None])
        ep_m, ep_s = _mean_std([r.get("best_epoch") for r in rs])
        run_m, _ = _mean_std([r.get("epochs") for r in rs])
        sec_m, _ = _mean_std([r.get("train_seconds") for r in rs])
        paper = PAPER_RESULTS.get((d.get("network"), PAPER_DATASET.get(d.get("dataset"))))
        expected = sum(1 for r in plan.runs if group_key(r) == key)
        mism = [r["mismatches"] for r in rs if r.get("mismatches") is not None]
        if mism:
            d["mismatches"] = sum(mism)         # sim runs with check: weights unlike golden's
        groups.append({**d, "runs": len(rs), "planned": expected, "best_mean": acc_m,
                       "best_std": acc_s, "best_epoch_mean": ep_m, "best_epoch_std": ep_s,
                       "epochs_mean": run_m, "train_seconds_mean": sec_m,
                       "epochs_max": _epochs_of(plan, key),
                       "paper": paper, "paper_dataset": PAPER_DATASET.get(d.get("dataset"))})
    return groups


def _epochs_of(plan, key):
    for r in plan.runs:
        if group_key(r) == key:
            return r.config.get("train", {}).get("epochs")
    return None


def _build_groups(plan, rows):
    groups = []
    for key, rs in _by_group(plan, rows).items():
        fmax = sorted(r["fmax_mhz"] for r in rs if r.get("fmax_mhz") is not None)
        sps = sorted(r["compute_samples_per_second"] for r in rs
                     if r.get("compute_samples_per_second") is not None)
        groups.append({**dict(key), "runs": len(rs),
                       "seeds": ",".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"])),
                       "fmax_min": fmax[0] if fmax else None,
                       "fmax_median": statistics.median(fmax) if fmax else None,
                       "fmax_max": fmax[-1] if fmax else None,
                       "target_mhz": next((r["target_mhz"] for r in rs if r.get("target_mhz")), None),
                       "met": sum(1 for r in rs if r.get("timing_met")),
                       "sps_min": sps[0] if sps else None,
                       "sps_median": statistics.median(sps) if sps else None,
                       "sps_max": sps[-1] if sps else None,
                       "refused": sum(1 for r in rs if r.get("status") == "refused")})
    return groups


def _f(v, fmt="{:.2f}"):
    return "" if v is None else fmt.format(v)


def summary_markdown(plan, groups, failed, rows=()) -> str:
    lines = []
    if plan.kind == "train":
        lines += ["| dataset | network | backend | mode | other | runs | best test % (mean ± std) "
                  "| epoch of best (mean ± std) | epochs run (mean, of max) | train s/run | paper |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for g in groups:
            other = " ".join(f"{k}={v}" for k, v in g.items()
                             if k not in _TRAIN_GROUP_FIELDS)
            acc = (f"{g['best_mean']:.2f} ± {g['best_std']:.2f}" if g["best_mean"] is not None
                   else "")
            ep = (f"{g['best_epoch_mean']:.1f} ± {g['best_epoch_std']:.1f}"
                  if g["best_epoch_mean"] is not None else "")
            paper = (f"{g['paper']:.2f} ({g['paper_dataset']})" if g["paper"] is not None else "")
            lines.append(f"| {g['dataset']} | {g['network']} | {g['backend']} | {g['compat']} | "
                         f"{other} | {g['runs']}/{g['planned']} | {acc} | {ep} | "
                         f"{_f(g['epochs_mean'], '{:.1f}')} / {g['epochs_max']} | "
                         f"{_f(g['train_seconds_mean'], '{:.0f}')} | {paper} |")
        lines.append("\nbest test %: each run's best test accuracy over its epochs (the paper's "
                     "figure), mean and sample standard deviation over seeds; paper: NITRO-D "
                     "Table 1, mean of 10 runs on the full dataset named.")
    else:
        lines += ["| board | core | geometry | seeds | Fmax MHz min | median | max | clock MHz | "
                  "met | samples/s min | median | max |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for g in groups:
            lines.append(f"| {g['board']} | {g['core']} | {g['geometry']} | {g['seeds']} | "
                         f"{_f(g['fmax_min'])} | {_f(g['fmax_median'])} | {_f(g['fmax_max'])} | "
                         f"{_f(g['target_mhz'], '{:g}')} | {g['met']}/{g['runs']} | "
                         f"{_f(g['sps_min'], '{:.0f}')} | {_f(g['sps_median'], '{:.0f}')} | "
                         f"{_f(g['sps_max'], '{:.0f}')} |")
        lines.append("\nFmax: post-route, the core clock, over the placement seeds; samples/s: "
                     "the projected compute-only training throughput at the clock the build "
                     "runs (only where timing is met).")
    odd = [r for r in rows if r.get("status") not in (None, "ok")]
    if odd:
        lines.append("\nruns that completed with another status than ok:")
        lines += [f"* {r['hash']} {' '.join(str(r.get(k)) for k in _plot_fields(plan))} seed "
                  f"{r.get('seed')}: {r['status']}" for r in odd]
    for note in plan.notes:
        lines.append(f"\n* {note}")
    if failed:
        lines.append(f"\n{len(failed)} run(s) failed (rerun the sweep to retry them):")
        for run, err in failed:
            lines.append(f"* {run.hash} {label_text(run.label)}: {err}")
    return "\n".join(lines) + "\n"


_TRAIN_GROUP_FIELDS = ("dataset", "network", "backend", "compat", "runs", "planned", "best_mean",
                       "best_std", "best_epoch_mean", "best_epoch_std", "epochs_mean",
                       "train_seconds_mean", "epochs_max", "paper", "paper_dataset")


def _csv(rows: list) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def summarise(plan: Plan, rows: list, out, failed=()) -> list:
    """Write ``summary.md``, ``summary.csv`` (one line per group), ``runs.csv`` (one per run)
    and ``summary.png``; returns the groups."""
    out = Path(out)
    groups = (_train_groups if plan.kind == "train" else _build_groups)(plan, rows)
    write_atomic(out / "summary.md", summary_markdown(plan, groups, list(failed), rows))
    write_atomic(out / "summary.csv", _csv(groups) if groups else "")
    write_atomic(out / "runs.csv", _csv(rows) if rows else "")
    if any(g["runs"] for g in groups):
        _plot(plan, groups, rows, out / "summary.png")
    return groups


def _plot(plan, groups, rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shown = [g for g in groups if g["runs"]]
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(shown) + 2), 5))
    names = [key_text(tuple((k, g[k]) for k in g if k in _plot_fields(plan)))
             for g in shown]
    x = range(len(shown))
    if plan.kind == "train":
        ax.bar(x, [g["best_mean"] for g in shown], yerr=[g["best_std"] for g in shown],
               capsize=4, color=["C0" if g["compat"] == "spec" else "C1" for g in shown])
        for i, g in enumerate(shown):
            if g["paper"] is not None:
                ax.plot([i - 0.4, i + 0.4], [g["paper"]] * 2, "k--", lw=1)
        ax.set_ylabel("best test accuracy, % (mean ± std)")
        lo = min(g["best_mean"] - (g["best_std"] or 0) for g in shown)
        ax.set_ylim(max(0, lo - 5), 100)
        ax.set_title("best test accuracy over seeds\n(blue: spec, orange: --compat authors; "
                     "dashed: the paper's figure)", fontsize=10)
    else:
        by_group = _by_group(plan, rows)
        for i, g in enumerate(shown):
            key = tuple((k, g[k]) for k in ("board", "core", "geometry"))
            fm = [r["fmax_mhz"] for r in by_group.get(key, []) if r.get("fmax_mhz")]
            ax.plot([i] * len(fm), fm, "o", color="C0")
            if g["target_mhz"]:
                ax.plot([i - 0.3, i + 0.3], [g["target_mhz"]] * 2, "r-", lw=1)
        ax.set_ylabel("post-route Fmax, MHz (red: the core clock)")
        ax.set_title("post-route Fmax over placement seeds", fontsize=10)
    ax.set_xticks(list(x))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_fields(plan):
    return (("dataset", "network", "backend", "compat") if plan.kind == "train"
            else ("board", "core", "geometry"))
