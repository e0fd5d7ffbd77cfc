"""nitrod sweep: sweep files, run directories, the Dask run with a worker killed mid-run,
reruns, the paper's grid and the summaries."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from nitrod import sweep as sw
from nitrod.cli import main

TINY = """
datasets = ["digits"]
networks = ["mlp:12", "cnn:c6,l12"]
seeds = [3, 4]
[options]
epochs = 2
compat = ["spec", "authors"]
"""


def _file(tmp_path, text, name="s.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


# ---------------------------------------------------------------------------
# sweep files
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,msg", [
    ("datasets = [digits]", "invalid TOML"),
    ('datasets = ["digits"]\nnetworks = ["mlp:8"]\nseeds = 2\ncolour = 1', "unknown key 'colour'"),
    ('datasets = ["digits"]\nnetworks = ["mlp:8"]', "missing 'seeds'"),
    ('datasets = ["digits"]\nnetworks = ["mlp:8"]\nseeds = 0', "at least 1"),
    ('datasets = ["digits"]\nnetworks = ["mlp:8"]\nseeds = [1, 1]', "duplicates"),
    ('datasets = ["digits"]\nnetworks = ["mlp:8"]\nseeds = ["a"]', "seeds must be whole numbers"),
    ('datasets = []\nnetworks = ["mlp:8"]\nseeds = 1', "datasets is empty"),
    ('datasets = ["nope"]\nnetworks = ["mlp:8"]\nseeds = 1', "unknown dataset 'nope'"),
    ('datasets = ["mnist"]\nnetworks = ["mlp:8"]\nseeds = 1', "--data-dir"),
    ('datasets = ["digits"]\nnetworks = ["rnn:8"]\nseeds = 1', "expected mlp:SIZES"),
    ('datasets = ["digits"]\nnetworks = ["cnn:q3"]\nseeds = 1', "bad layer token 'q3'"),
    ('datasets = ["digits"]\nnetworks = ["mlp:8,x"]\nseeds = 1', "'x' is not an integer"),
    ('datasets = ["digits"]\nnetworks = ["mlp:8"]\nseeds = 1\nbackends = ["fpga"]',
     "backend 'fpga'"),
    ('datasets = ["digits"]\nnetworks = ["mlp:8"]\nseeds = 1\n[options]\nepochs = "ten"',
     "options.epochs must be whole numbers"),
    ('datasets = ["digits"]\nnetworks = ["mlp:8"]\nseeds = 1\n[options]\nepoch = 2',
     "unknown key 'epoch' in [options]"),
    ('datasets = ["digits"]\nnetworks = ["mlp:8"]\nseeds = 1\n[options]\nepochs = 0', "epochs must be >= 1"),
    ('datasets = ["digits"]\nnetworks = ["mlp:8"]\nseeds = 1\n[options]\ncompat = "both"',
     "compat must be one of"),
    ('datasets = ["digits"]\nnetworks = ["mlp:8"]\nseeds = 1\n[options]\nside = 4',
     "options.side is for the sim backend"),
    ('datasets = ["digits"]\nnetworks = ["cnn:small"]\nseeds = 1\nbackends = ["sim"]',
     "CNN programs need a core"),
    ('datasets = ["digits"]\nnetworks = ["mlp:8"]\nseeds = 1\nbackends = ["sim"]\n'
     '[options]\ncompat = "authors"', "backend sim:"),
    ('kind = "bake"', "expected \"train\" or \"build\""),
    ('kind = "build"\nboards = ["de10"]\nseeds = 1', "board 'de10'"),
    ('kind = "build"\nboards = ["icebreaker"]\nseeds = 1\ncore = "cpu"', "core 'cpu'"),
    ('kind = "build"\nboards = ["icebreaker"]\nseeds = 1\ngeometries = [{width = 3}]',
     "unknown key 'width' in [geometries[0]]"),
    ('kind = "build"\nboards = ["icebreaker"]\nseeds = 1\ngeometries = [{depth = {rom = 3}}]',
     "MEM one of"),
    ('kind = "build"\nboards = ["icebreaker"]\nseeds = 1\nnextpnr_opts = ["--seed 3"]',
     "set by the build flow"),
    ('kind = "build"\nboards = ["icebreaker"]\nseeds = 1\nfreq = -3', "freq must be a positive"),
])
def test_malformed_sweep_files_are_refused_with_one_line(tmp_path, capsys, text, msg):
    path = _file(tmp_path, text)
    with pytest.raises(sw.SweepError) as exc:
        sw.load_sweep_file(path)
    assert msg in str(exc.value) and str(path) in str(exc.value)
    assert main(["sweep", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and msg in err
    assert not (tmp_path / "o").exists()


def test_cli_needs_a_file_or_paper(tmp_path, capsys):
    assert main(["sweep"]) == 2
    assert "a sweep file or --paper" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_grid_and_hashes_resolve_defaults(tmp_path):
    plan = sw.load_sweep_file(_file(tmp_path, TINY))
    assert len(plan.runs) == 2 * 2 * 2          # networks x compat x seeds
    assert len({r.hash for r in plan.runs}) == len(plan.runs)
    # the same run written differently (a default given explicitly) hashes the same
    a = sw.resolve_train_run("digits", "mlp:12", 3, "golden", {"epochs": 2})
    b = sw.resolve_train_run("digits", "mlp:12", 3, "golden",
                             {"epochs": 2, "lr_inv": 512, "batch": 64, "compat": "spec"})
    c = sw.resolve_train_run("digits", "mlp:12", 4, "golden", {"epochs": 2})
    assert a.hash == b.hash != c.hash
    # the authors' mode sets int8_loss_error itself: sweeping it beside compat dedupes
    plan = sw.plan_from_dict({"datasets": ["digits"], "networks": ["mlp:8"], "seeds": 1,
                              "options": {"compat": "authors", "int8_loss_error": [False, True]}})
    assert len(plan.runs) == 1 and plan.notes


def test_write_atomic_replaces_whole_or_not_at_all(tmp_path):
    p = tmp_path / "f.json"
    sw.write_atomic(p, "old")
    sw.write_atomic(p, b"new")
    assert p.read_bytes() == b"new"
    with pytest.raises(TypeError):
        sw.write_atomic(p, 12345)               # fails half way: the old file stays
    assert p.read_bytes() == b"new"
    assert [f.name for f in tmp_path.iterdir()] == ["f.json"]


# ---------------------------------------------------------------------------
# The sweep on Dask
# ---------------------------------------------------------------------------

def _one_by_one(run, tmp_path):
    """The run made by hand with ``nitrod train``; returns (metrics, weights)."""
    lab = run.label
    model, arch = sw.parse_network(lab["network"])
    out = tmp_path / f"single-{run.hash}"
    argv = ["train", "--dataset", lab["dataset"], "--model", model,
            *(["--hidden", arch] if model == "mlp" else ["--arch", arch]),
            "--epochs", str(run.config["train"]["epochs"]), "--seed", str(lab["seed"]),
            "--compat", lab["compat"], "--quiet", "--out", str(out)]
    assert main(argv) == 0
    return _result(out)


def _result(folder):
    m = json.loads((Path(folder) / "metrics.json").read_text())
    with np.load(Path(folder) / "checkpoint.npz") as z:
        w = {k: z[k].copy() for k in z.files if k.startswith("w/")}
    return m, w


def _same(a, b):
    (ma, wa), (mb, wb) = a, b
    assert ma["history"] == mb["history"]
    assert ma["best_test_accuracy"] == mb["best_test_accuracy"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert np.array_equal(wa[k], wb[k]), k


def test_sweep_survives_a_killed_worker_and_a_rerun_skips(tmp_path, capsys):
    from dask.distributed import Client
    plan = sw.load_sweep_file(_file(tmp_path, TINY.replace("epochs = 2", "epochs = 3")))
    out = tmp_path / "out"
    cluster = sw.local_cluster(2)
    client = Client(cluster)
    killed = {}
    try:
        result = {}
        t = threading.Thread(target=lambda: result.update(
            sw.run_sweep(plan, out, client=client, progress=False, log=lambda s: None)))
        t.start()
        # kill the worker of a run that has just started (its config.json, the first file it
        # writes, is less than 0.3 s old; a run takes seconds)
        pids = client.run(os.getpid)
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline and t.is_alive():
            for addr, keys in client.processing().items():
                for key in keys:
                    h = str(key).rpartition("-")[2]
                    started = list((out / "runs").glob(f".tmp-{h}-*/config.json"))
                    if started and time.time() - started[0].stat().st_mtime < 0.3:
                        os.kill(pids[addr], signal.SIGKILL)
                        killed = {"hash": h, "worker": addr}
                        break
                if killed:
                    break
            time.sleep(0.02)
        t.join(300)
        assert not t.is_alive()
    finally:
        client.close()
        cluster.close()
    assert killed, "no run was caught in progress"
    assert result["failed"] == [] and result["ran"] == len(plan.runs)
    # the killed attempt left its temporary directory; the run was made again elsewhere
    assert list((out / "runs").glob(f".tmp-{killed['hash']}-*"))
    assert sw.is_done(out, killed["hash"])
    # every run present once, complete, and equal to the same run made by hand
    finals = sorted(p.name for p in (out / "runs").iterdir() if not p.name.startswith("."))
    assert finals == sorted(r.hash for r in plan.runs)
    for run in plan.runs:
        d = out / "runs" / run.hash
        assert json.loads((d / "config.json").read_text())["config"] == run.config
        _same(_result(d), _one_by_one(run, tmp_path))
    summary = (out / "summary.md").read_text()
    assert summary.count("| digits |") == 4 and "2/2" in summary
    assert len((out / "runs.csv").read_text().strip().splitlines()) == 1 + len(plan.runs)

    # a rerun skips every finished run (nothing recomputed) and removes the stale attempt
    markers = {r.hash: (out / "runs" / r.hash / sw.MARKER).read_text() for r in plan.runs}
    capsys.readouterr()
    assert main(["sweep", str(tmp_path / "s.toml"), "--out", str(out), "--quiet",
                 "--no-estimate", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert f"{len(plan.runs)} already complete, 0 to run" in text
    assert {r.hash: (out / "runs" / r.hash / sw.MARKER).read_text() for r in plan.runs} == markers
    assert not list((out / "runs").glob(".tmp-*"))


def test_run_one_skips_a_complete_directory_and_ignores_a_partial_one(tmp_path):
    run = sw.resolve_train_run("digits", "mlp:8", 1, "golden", {"epochs": 1})
    # a partial directory (no marker) under the final name is not taken as a result...
    final = tmp_path / "runs" / run.hash
    final.mkdir(parents=True)
    (final / "metrics.json").write_text("{}")
    with pytest.raises(OSError):
        sw.run_one(run, tmp_path)        # ...nor overwritten: the rename refuses
    assert not sw.is_done(tmp_path, run.hash)
    assert not list((tmp_path / "runs").glob(".tmp-*"))        # the attempt cleaned up
    (final / "metrics.json").unlink()
    final.rmdir()
    row = sw.run_one(run, tmp_path)
    assert not row["skipped"] and sw.is_done(tmp_path, run.hash)
    again = sw.run_one(run, tmp_path)
    assert again["skipped"] and again["best_test_accuracy"] == row["best_test_accuracy"]


# ---------------------------------------------------------------------------
# The paper's grid and the summaries
# ---------------------------------------------------------------------------

def test_paper_grid():
    plan = sw.paper_plan(["digits", "mnist5k"], seeds=3, epochs=150, cnn_epochs=30)
    rows = {(r.label["dataset"], r.label["network"], r.label["compat"]) for r in plan.runs}
    assert rows == {(d, n, c) for d, n in (("digits", "mlp:100,50"), ("digits", "cnn:small"),
                                           ("mnist5k", "mlp:100,50"),
                                           ("mnist5k", "cnn:c16,p,c32,p,c64,l64"))
                    for c in ("spec", "authors")}
    assert len(plan.runs) == 8 * 3
    epochs = {r.label["network"]: r.config["train"]["epochs"] for r in plan.runs}
    assert epochs["mlp:100,50"] == 150 and epochs["cnn:small"] == 30
    assert any("--include-vgg" in n for n in plan.notes)
    mlp = next(r for r in plan.runs if r.label["network"] == "mlp:100,50")
    assert mlp.config["spec"]["fwd_decay_inv"] == 12000 and mlp.config["train"]["batch"] == 64
    vgg = sw.paper_plan(["mnist5k"], seeds=1, include_vgg=True)
    v = next(r for r in vgg.runs if r.label["network"] == "cnn:vgg8b")
    assert v.config["spec"]["decoder_dim"] == 4096 and v.config["spec"]["fwd_decay_inv"] == 30000
    with pytest.raises(sw.SweepError, match="expected one of"):
        sw.paper_plan(["imagenet"])


def test_estimate_scales_with_the_work(tmp_path):
    plan = sw.plan_from_dict({"datasets": ["digits"], "networks": ["mlp:32", "mlp:32,32"],
                              "seeds": 1, "options": {"epochs": [1, 4]}})
    sw.estimate(plan)
    est = {(r.label["network"], r.config["train"]["epochs"]): r.estimate_s for r in plan.runs}
    assert all(v > 0 for v in est.values())
    assert est[("mlp:32", 4)] == pytest.approx(4 * est[("mlp:32", 1)])
    table = sw.estimate_table(plan, workers=2)
    assert "| digits mlp:32 golden spec epochs=4 | 1 | 0 |" in table


def test_train_summary_is_the_papers_table_form(tmp_path):
    plan = sw.paper_plan(["digits"], seeds=3)
    rows = []
    accs = {"spec": [0.90, 0.80, 0.85], "authors": [0.95, 0.95, 0.95]}
    for run in plan.runs:
        if run.label["network"] != "mlp:100,50":
            continue
        i = run.label["seed"] - 1
        rows.append({"hash": run.hash, **run.label, "status": "ok",
                     "best_test_accuracy": accs[run.label["compat"]][i], "best_epoch": 10 + i,
                     "epochs": 40 + i, "train_seconds": 2.0})
    groups = sw.summarise(plan, rows, tmp_path)
    g = {(x["network"], x["compat"]): x for x in groups}
    assert g[("mlp:100,50", "spec")]["best_mean"] == pytest.approx(85.0)
    assert g[("mlp:100,50", "spec")]["best_std"] == pytest.approx(5.0)
    assert g[("mlp:100,50", "authors")]["best_std"] == 0.0
    assert g[("cnn:small", "spec")]["runs"] == 0
    md = (tmp_path / "summary.md").read_text()
    assert "| digits | mlp:100,50 | golden | spec |  | 3/3 | 85.00 ± 5.00 | 11.0 ± 1.0 |" in md
    assert "97.36 (mnist)" in md
    assert (tmp_path / "summary.png").stat().st_size > 1000
    assert "best_mean" in (tmp_path / "summary.csv").read_text().splitlines()[0]


def test_build_summary_fmax_over_seeds(tmp_path):
    plan = sw.plan_from_dict({"kind": "build", "boards": ["icebreaker"], "seeds": [1, 2, 3, 4],
                              "core": "memory", "geometries": [{}, {"side": 4}]})
    assert len(plan.runs) == 8
    fmax = {1: 40.0, 2: 35.0, 3: 38.0, 4: 29.0}
    rows = [{"hash": r.hash, **r.label, "status": "ok", "fmax_mhz": fmax[r.label["seed"]],
             "target_mhz": 30.0, "timing_met": fmax[r.label["seed"]] >= 30,
             "compute_samples_per_second": 600.0 + r.label["seed"]}
            for r in plan.runs if r.label["geometry"] == "default"]
    groups = sw.summarise(plan, rows, tmp_path)
    g = groups[0]
    assert (g["fmax_min"], g["fmax_median"], g["fmax_max"]) == (29.0, 36.5, 40.0)
    assert g["met"] == 3 and g["seeds"] == "1,2,3,4" and g["sps_median"] == 602.5
    md = (tmp_path / "summary.md").read_text()
    assert "| icebreaker | memory | default | 1,2,3,4 | 29.00 | 36.50 | 40.00 | 30 | 3/4 |" in md
    assert "| icebreaker | memory | side=4 |" in md


@pytest.mark.synth
def test_build_sweep_on_dask(tmp_path, capsys):
    """The stand-in for a ULX3S placement-seed sweep: the iCEBreaker with the memory core,
    two seeds, two workers; summary.md has the Fmax row of both reports."""
    path = _file(tmp_path, 'kind = "build"\nboards = ["icebreaker"]\ncore = "memory"\n'
                           'seeds = [1, 2]\n')
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--workers", "2", "--quiet",
                 "--no-estimate"]) == 0
    plan = sw.load_sweep_file(path)
    fmax = []
    for run in plan.runs:
        rep = json.loads((out / "runs" / run.hash / "report.json").read_text())
        assert rep["out_dir"] == str(out / "runs" / run.hash)
        assert rep["bitstream"] and Path(rep["bitstream"]).exists()
        fmax.append(rep["fmax_mhz"])
    assert all(f > 30 for f in fmax)
    md = (out / "summary.md").read_text()
    lo, hi = sorted(fmax)
    assert (f"| icebreaker | memory | default | 1,2 | {lo:.2f} | {(lo + hi) / 2:.2f} | "
            f"{hi:.2f} | 30 | 2/2 |") in md


def test_sweep_on_an_existing_scheduler(tmp_path, capsys):
    """--scheduler ADDRESS: the runs go to that cluster's workers."""
    from dask.distributed import Client
    path = _file(tmp_path, 'datasets = ["digits"]\nnetworks = ["mlp:8"]\nseeds = 2\n'
                           '[options]\nepochs = 1\n')
    cluster = sw.local_cluster(1)
    try:
        assert main(["sweep", str(path), "--scheduler", cluster.scheduler_address, "--quiet",
                     "--out", str(tmp_path / "out")]) == 0
        with Client(cluster) as c:              # the runs were the cluster's tasks
            log = c.run_on_scheduler(lambda dask_scheduler: [
                str(k) for k in dask_scheduler.task_prefixes])
    finally:
        cluster.close()
    assert any(k.startswith("nitrod-run") for k in log)
    assert "2 run(s) now" in capsys.readouterr().out
    assert len(list((tmp_path / "out" / "runs").iterdir())) == 2


@pytest.mark.parametrize("name", ["digits-lr", "ulx3s-placement", "icebreaker-placement"])
def test_the_documented_sweep_files_are_valid(name):
    plan = sw.load_sweep_file(Path(__file__).parents[2] / "docs" / "sweeps" / f"{name}.toml")
    assert len(plan.runs) == {"digits-lr": 60, "ulx3s-placement": 4,
                              "icebreaker-placement": 4}[name]


def test_a_sim_run_in_a_sweep_trains_like_golden(tmp_path):
    """backend sim: nitrod sim's training (checked against golden after every batch) in a
    worker; its weights equal the golden run's of the same sweep (the 4 x 4 Trainer, the
    Verilator build tests/nitrod/test_sim_cli.py uses)."""
    plan = sw.plan_from_dict({"datasets": ["digits"], "networks": ["mlp:16"], "seeds": [1],
                              "backends": ["sim", "golden"],
                              "options": {"epochs": 1, "side": 4, "check": True}})
    res = sw.run_sweep(plan, tmp_path, workers=1, progress=False, log=lambda s: None)
    assert res["failed"] == []
    sim, gold = (next(r for r in plan.runs if r.config["backend"] == b) for b in ("sim", "golden"))
    m_sim, w_sim = _result(tmp_path / "runs" / sim.hash)
    assert m_sim["checked"] and m_sim["mismatches"] == 0 and m_sim["steps"] == 23
    _same((m_sim, w_sim), _result(tmp_path / "runs" / gold.hash))
    assert "mismatches=0" in (tmp_path / "summary.md").read_text()
