"""Runs that are saved every epoch, stopped and resumed (golden/train.py).

A run interrupted (SIGINT at a step, or stopped at an epoch's end) and resumed with
``resume=True`` ends bit for bit equal to the run that was not: every weight, the history
(accuracies and the schedule's lr_inv), the measured ranges.  Files are written atomically.
"""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from golden.datasets import load_dataset
from golden.network import NetworkSpec
from golden.train import (CHECKPOINT_FILE, CURVES_FILE, METRICS_FILE, CheckpointError,
                          TrainConfig, TrainingInterrupted, load_checkpoint, load_train_state,
                          train, write_files_atomically)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _spec(ds):
    return NetworkSpec(ds.input_shape, ds.classes, ("l24", "l16"))


def _cfg(**kw):
    # a schedule that moves within a few epochs: lr_inv changes, then early stopping
    base = dict(epochs=7, batch=64, seed=3, lr_start_epoch=2, lr_patience=1,
                plateau_threshold=0.3, stop_start_epoch=5, stop_patience=3)
    base.update(kw)
    return TrainConfig(**base)


def _quiet(**kw):
    return dict(progress=False, log=lambda s: None, **kw)


def _same_run(a, b):
    """The results (or saved folders) of two runs are bit-exact equal."""
    wa, wb = a.network.weights(), b.network.weights()
    assert wa.keys() == wb.keys()
    for k in wa:
        assert np.array_equal(wa[k], wb[k]), k
    assert a.metrics["history"] == b.metrics["history"]
    assert a.metrics["ranges"] == b.metrics["ranges"]
    for key in ("best_test_accuracy", "final_test_accuracy", "epochs", "stopped_early"):
        assert a.metrics[key] == b.metrics[key], key


def _interrupt_at(epoch, batch):
    """An after_step that sends this process SIGINT after step ``batch`` of ``epoch``."""
    def after_step(e, b, *rest):
        if (e, b) == (epoch, batch):
            signal.raise_signal(signal.SIGINT)
    return after_step


def test_a_run_that_ignores_sigint_keeps_ignoring_it(digits, tmp_path, request):
    """Started in the background or under nohup (SIGINT ignored), an interruptible run
    installs no handler: a SIGINT changes nothing and the run ends as an uninterrupted one."""
    spec = _spec(digits)
    whole = train(digits, spec, _cfg(), out_dir=tmp_path / "whole", **_quiet())
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, before))
    seen = []

    def after_step(e, b, *rest):
        seen.append(signal.getsignal(signal.SIGINT))
        _interrupt_at(2, 9)(e, b)

    run = train(digits, spec, _cfg(), out_dir=tmp_path / "bg", interruptible=True,
                after_step=after_step, **_quiet())
    assert seen and all(h is signal.SIG_IGN for h in seen)
    _same_run(whole, run)


def test_interrupted_mid_epoch_and_resumed_equals_the_uninterrupted_run(digits, tmp_path,
                                                                       request):
    spec = _spec(digits)
    whole = train(digits, spec, _cfg(), out_dir=tmp_path / "whole", **_quiet())
    assert len({h["lr_inv"] for h in whole.metrics["history"]}) > 1     # the schedule moved
    out = tmp_path / "cut"
    # as in a terminal (a run started in the background ignores SIGINT: below)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, before))
    with pytest.raises(TrainingInterrupted) as stop:
        train(digits, spec, _cfg(), out_dir=out, interruptible=True,
              after_step=_interrupt_at(2, 9), **_quiet())
    assert (stop.value.epoch, stop.value.batch, stop.value.finished_step) == (2, 10, True)
    assert "continue with --resume" in str(stop.value)
    state = load_train_state(out / CHECKPOINT_FILE)[3]
    assert (state["epoch"], state["batch"], len(state["history"])) == (2, 10, 1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handler restored
    resumed = train(digits, spec, _cfg(), out_dir=out, resume=True, **_quiet())
    _same_run(whole, resumed)
    for name in (CHECKPOINT_FILE, METRICS_FILE, CURVES_FILE):
        assert (out / name).is_file()
    a, b = np.load(tmp_path / "whole" / CHECKPOINT_FILE), np.load(out / CHECKPOINT_FILE)
    for key in a.files:
        if key.startswith("w/"):
            assert np.array_equal(a[key], b[key]), key
    ma, mb = (json.loads((d / METRICS_FILE).read_text()) for d in (tmp_path / "whole", out))
    assert ma["history"] == mb["history"] and ma["ranges"] == mb["ranges"]


def test_interrupted_twice_and_at_epoch_ends(digits, tmp_path):
    """Stopped at an epoch's end (a shorter --epochs), then interrupted in the first batch of
    an epoch, then resumed with more epochs: still the uninterrupted run."""
    spec = _spec(digits)
    cfg = _cfg(stop_start_epoch=50)         # no early stop: all 6 epochs
    whole = train(digits, spec, _cfg(epochs=6, stop_start_epoch=50), **_quiet())
    out = tmp_path / "run"
    train(digits, spec, _cfg(epochs=2, stop_start_epoch=50), out_dir=out, **_quiet())
    with pytest.raises(TrainingInterrupted) as stop:
        train(digits, spec, _cfg(epochs=6, stop_start_epoch=50), out_dir=out, resume=True,
              interruptible=True, after_step=_interrupt_at(4, 0), **_quiet())
    assert (stop.value.epoch, stop.value.batch) == (4, 1)
    resumed = train(digits, spec, _cfg(epochs=6, stop_start_epoch=50), out_dir=out,
                    resume=True, **_quiet())
    assert cfg.epochs == 7 and resumed.metrics["epochs"] == 6
    _same_run(whole, resumed)


def test_a_finished_run_resumes_to_nothing(digits, tmp_path):
    spec = _spec(digits)
    out = tmp_path / "done"
    first = train(digits, spec, _cfg(), out_dir=out, **_quiet())
    assert first.metrics["stopped_early"]
    before = {n: (out / n).read_bytes() for n in (CHECKPOINT_FILE, METRICS_FILE)}
    lines = []
    again = train(digits, spec, _cfg(epochs=20), out_dir=out, resume=True, progress=False,
                  log=lines.append)
    assert any("nothing to train" in s for s in lines)
    _same_run(first, again)
    assert {n: (out / n).read_bytes() for n in before} == before


def test_resume_refuses_another_run(digits, tmp_path):
    spec = _spec(digits)
    out = tmp_path / "run"
    train(digits, spec, _cfg(epochs=1), out_dir=out, **_quiet())
    with pytest.raises(CheckpointError, match="seed 3 there, 4 here"):
        train(digits, spec, _cfg(epochs=2, seed=4), out_dir=out, resume=True, **_quiet())
    with pytest.raises(CheckpointError, match="another network"):
        train(digits, NetworkSpec(digits.input_shape, 10, ("l25",)), _cfg(epochs=2),
              out_dir=out, resume=True, **_quiet())
    with pytest.raises(CheckpointError, match="batch 64 there, 32 here"):
        train(digits, spec, _cfg(epochs=2, batch=32), out_dir=out, resume=True, **_quiet())


def test_a_second_sigint_abandons_the_step_and_keeps_the_last_epoch(digits, tmp_path):
    spec = _spec(digits)
    out = tmp_path / "run"

    def after_step(e, b, *rest):
        if (e, b) == (2, 3):
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)      # the second: KeyboardInterrupt at once

    with pytest.raises(TrainingInterrupted) as stop:
        train(digits, spec, _cfg(), out_dir=out, interruptible=True, after_step=after_step,
              **_quiet())
    assert not stop.value.finished_step and "abandoned" in str(stop.value)
    state = load_train_state(out / CHECKPOINT_FILE)[3]
    assert (state["epoch"], state["batch"], len(state["history"])) == (2, 0, 1)


def test_files_are_replaced_atomically(tmp_path):
    """All temporary files are written before any is renamed: if one cannot be written, every
    old file stays as it was and no temporary file is left."""
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(b"old " + name.encode())
    os.mkdir(tmp_path / f".c.tmp-{os.getpid()}")      # the third temporary file cannot be opened
    with pytest.raises(IsADirectoryError):
        write_files_atomically(tmp_path, {"a": b"new", "b": b"new", "c": b"new"})
    assert [(tmp_path / n).read_bytes() for n in "abc"] == [b"old a", b"old b", b"old c"]
    os.rmdir(tmp_path / f".c.tmp-{os.getpid()}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]
    write_files_atomically(tmp_path, {"a": b"new", "b": b"new"})
    assert [(tmp_path / n).read_bytes() for n in "abc"] == [b"new", b"new", b"old c"]


def test_a_failing_plot_loses_nothing(digits, tmp_path, monkeypatch):
    """The plot of the last epoch cannot be drawn: the checkpoint and metrics of the epoch
    before stay consistent (nothing half-written), and --resume finishes the run."""
    import golden.train as gt

    spec = _spec(digits)
    out = tmp_path / "run"

    def broken(history):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gt, "_plot_bytes", broken)
    with pytest.raises(OSError, match="No space"):
        train(digits, spec, _cfg(epochs=3, stop_start_epoch=50), out_dir=out, **_quiet())
    metrics = json.loads((out / METRICS_FILE).read_text())
    state = load_train_state(out / CHECKPOINT_FILE)[3]
    assert metrics["epochs"] == len(state["history"]) == 2
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    monkeypatch.undo()
    done = train(digits, spec, _cfg(epochs=3, stop_start_epoch=50), out_dir=out, resume=True,
                 **_quiet())
    whole = train(digits, spec, _cfg(epochs=3, stop_start_epoch=50), **_quiet())
    _same_run(whole, done)
    assert (out / CURVES_FILE).stat().st_size > 1000


@pytest.mark.parametrize("make,msg", [
    (lambda p: np.save(p, np.arange(3)), "plain array"),
    (lambda p: np.savez(p, spec=np.array("{not json"), meta=np.array("{}")), "bad network spec"),
    (lambda p: np.savez(p, spec=np.array(NetworkSpec((1, 2, 2), 2, ("l3",)).to_json())),
     "no metadata"),
    (lambda p: np.savez(p, spec=np.array(NetworkSpec((1, 2, 2), 2, ("l3",)).to_json()),
                        meta=np.array("[oops")), "bad metadata"),
    (lambda p: np.savez(p, w=np.zeros(2)), "no network spec"),
    (lambda p: open(p, "wb").write(b"PK\x03\x04 not a zip"), "not a nitrod checkpoint"),
])
def test_bad_checkpoints_are_refused_naming_the_file(tmp_path, make, msg):
    path = tmp_path / "c.npz"
    make(path)
    if not path.exists():                      # np.save added .npy
        (tmp_path / "c.npz.npy").rename(path)
    with pytest.raises(CheckpointError, match=msg) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
