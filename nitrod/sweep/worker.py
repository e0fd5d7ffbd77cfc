"""One run, in a Dask worker: a training (golden or sim) or a board build."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

from .plan import Run, network_args
from .store import MARKER, run_dir, write_atomic

def _code_version() -> str | None:
    import subprocess
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True, timeout=10, cwd=Path(__file__).resolve().parent)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_one(run: Run, out) -> dict:
    """Run ``run`` unless its directory is complete; returns its result row.

    The run is written in ``OUT/runs/.tmp-<hash>-<unique>`` and renamed to
    ``OUT/runs/<hash>`` once its marker is written: a run killed half way leaves only a
    temporary directory (removed by the next sweep), and two attempts of one run never write
    into the same directory; if another attempt finished first, its result stands."""
    out = Path(out)
    final = run_dir(out, run.hash)
    if (final / MARKER).is_file():
        return result_row(run, final, skipped=True)
    tmp = out / "runs" / f".tmp-{run.hash}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    started = time.time()
    try:
        write_atomic(tmp / "config.json", json.dumps(
            {"hash": run.hash, "label": run.label, "config": run.config,
             "data_dir": run.data_dir}, indent=2, default=str) + "\n")
        status = (_train(run, tmp) if run.kind == "train" else _build(run, tmp, final))
        write_atomic(tmp / MARKER, json.dumps(
            {"hash": run.hash, "status": status, "seconds": round(time.time() - started, 2),
             "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": socket.gethostname(),
             "pid": os.getpid(), "code": _code_version()}, indent=2) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / MARKER).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)      # another attempt finished first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result_row(run, final, skipped=False)


def _train(run: Run, tmp: Path) -> str:
    cfg, label = run.config, run.label
    logf = open(tmp / "train.log", "w")

    def log(line):
        logf.write(line + "\n")
        logf.flush()

    try:
        if cfg["backend"] == "golden":
            from golden.datasets import load_dataset
            from golden.network import NetworkSpec
            from golden.train import TrainConfig, train
            ds = load_dataset(cfg["dataset"], run.data_dir)
            spec = NetworkSpec.from_json(json.dumps(cfg["spec"]))
            train(ds, spec, TrainConfig(**cfg["train"]), out_dir=tmp, progress=False, log=log,
                  threads=1)
            return "ok"
        from contextlib import redirect_stderr, redirect_stdout
        from nitrod.accel_train import train_on_accelerator
        opts = {**{k: cfg["train"][k] for k in ("epochs", "batch", "lr_inv")},
                **{k: cfg["spec"][k] for k in ("relu_inv_slope", "decoder_dim", "fwd_decay_inv",
                                              "subnet_decay_inv", "conv_amp_extra",
                                              "int8_loss_error", "compat")},
                **cfg["sim"]}
        args = network_args(label["network"], cfg["dataset"], run.data_dir, "sim", opts,
                             cfg["train"]["seed"])
        args.out = str(tmp)
        with redirect_stdout(logf), redirect_stderr(logf):
            status = train_on_accelerator(args, "sim")
        if status == 1:
            return "mismatch"
        if status != 0:
            raise RuntimeError(f"nitrod sim exited with status {status} (see train.log)")
        return "ok"
    finally:
        logf.close()


def _build(run: Run, tmp: Path, final: Path) -> str:
    from boards.build import build_board
    from boards.fit import FitError
    from hw.contract import Geometry
    from nitrod.board_build import annotate
    cfg = run.config
    geometry = Geometry(**cfg["geometry"])
    try:
        build_board(cfg["board"], tmp, core=cfg["core"], geometry=geometry, seed=cfg["seed"],
                    freq_mhz=cfg["freq"], nextpnr_opts=cfg["nextpnr_opts"],
                    annotate=annotate)
        status = "ok"
    except FitError:
        status = "refused"           # report.json says why: a result, not a failure
    # the report names the directory it was built in: point it at the final one
    report = tmp / "report.json"
    if report.exists():
        text = report.read_text().replace(str(tmp), str(final))
        write_atomic(report, text)
    return status


def result_row(run: Run, final: Path, skipped: bool) -> dict:
    marker = json.loads((final / MARKER).read_text())
    row = {"hash": run.hash, **run.label, "status": marker.get("status", "ok"),
           "skipped": skipped, "seconds": marker.get("seconds")}
    if run.kind == "train":
        mpath = final / "metrics.json"
        if mpath.exists():
            m = json.loads(mpath.read_text())
            row.update(best_test_accuracy=m.get("best_test_accuracy"),
                       best_epoch=m.get("best_epoch"), epochs=m.get("epochs"),
                       final_test_accuracy=m.get("final_test_accuracy"),
                       samples_per_second=m.get("samples_per_second"),
                       train_seconds=m.get("train_seconds"),
                       mismatches=m.get("mismatches"))
    else:
        rpath = final / "report.json"
        if rpath.exists():
            r = json.loads(rpath.read_text())
            row.update(fmax_mhz=r.get("fmax_mhz"), target_mhz=r.get("target_mhz"),
                       timing_met=r.get("timing_met"), luts=r.get("luts"),
                       compute_samples_per_second=r.get("compute_samples_per_second"),
                       error=r.get("error"))
    return row
