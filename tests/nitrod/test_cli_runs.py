"""The command line loses nothing and says so when it refuses: ``--out`` checked before
training, existing runs kept unless ``--resume`` / ``--force``, Ctrl-C saves and exits 130,
``--resume`` continues bit-exactly, ``--quiet`` is quiet, options that do not apply or have bad
values are refused naming the option."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nitrod.cli import main

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ["train", "--dataset", "digits", "--hidden", "20", "--seed", "1", "--quiet"]


def _weights(folder):
    with np.load(Path(folder) / "checkpoint.npz") as z:
        return {k: z[k] for k in z.files if k.startswith("w/")}


def _history(folder):
    return json.loads((Path(folder) / "metrics.json").read_text())["history"]


# --------------------------------------------------------------------------- --out

def test_an_existing_run_is_refused_unless_resume_or_force(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(TRAIN + ["--epochs", "1", "--out", out]) == 0
    before = (tmp_path / "run" / "checkpoint.npz").read_bytes()
    capsys.readouterr()
    assert main(TRAIN + ["--epochs", "2", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err and "--force" in err and out in err
    assert (tmp_path / "run" / "checkpoint.npz").read_bytes() == before
    assert main(TRAIN + ["--epochs", "2", "--seed", "2", "--out", out, "--force"]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]["seed"] == 2
    with pytest.raises(SystemExit) as exc:          # argparse: not both
        main(TRAIN + ["--epochs", "2", "--out", out, "--force", "--resume"])
    assert exc.value.code == 2


@pytest.mark.parametrize("make,out,msg", [
    (None, "", "empty path"),
    (None, "   ", "empty path"),
    ("file", "{tmp}/f", "is not a folder"),
    ("file", "{tmp}/f/sub", "cannot write there"),
    (None, "/proc/nitrod-run", "cannot write there"),
    (None, "{tmp}/fresh", None),
])
def test_out_is_checked_before_training(tmp_path, capsys, make, out, msg, monkeypatch):
    import golden.train as gt

    if make == "file":
        (tmp_path / "f").write_text("x")
    out = out.format(tmp=tmp_path)
    if msg is None:                    # a good folder: created, training starts
        monkeypatch.setattr(gt, "train", lambda *a, **k: (_ for _ in ()).throw(ValueError("ran")))
        assert main(TRAIN + ["--epochs", "1", "--out", out]) == 2
        assert "ran" in capsys.readouterr().err and Path(out).is_dir()
        return
    t0 = time.monotonic()
    monkeypatch.setattr(gt, "train", lambda *a, **k: pytest.fail("trained before checking --out"))
    assert main(TRAIN + ["--epochs", "1", "--out", out]) == 2
    err = capsys.readouterr().err
    assert msg in err and "--out" in err and err.count("\n") == 1
    assert time.monotonic() - t0 < 5


def test_resume_needs_a_run_and_no_out_says_nothing_is_saved(tmp_path, capsys):
    assert main(TRAIN + ["--epochs", "1", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "holds no checkpoint.npz" in capsys.readouterr().err
    assert main(TRAIN + ["--epochs", "1", "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
    assert main(TRAIN + ["--epochs", "1"]) == 0
    assert "will not be saved" in capsys.readouterr().err


def test_quiet_prints_no_epoch_lines(tmp_path, capsys):
    assert main(TRAIN + ["--epochs", "2", "--out", str(tmp_path / "q")]) == 0
    out = capsys.readouterr()
    assert not any(line.startswith("epoch") for line in out.out.splitlines()) and out.err == ""
    assert "best test accuracy" in out.out
    assert main([a for a in TRAIN if a != "--quiet"] + ["--epochs", "2"]) == 0
    assert "epoch   2" in capsys.readouterr().out


def test_resume_from_the_command_line_is_bit_exact(tmp_path):
    assert main(TRAIN + ["--epochs", "4", "--out", str(tmp_path / "whole")]) == 0
    assert main(TRAIN + ["--epochs", "2", "--out", str(tmp_path / "cut")]) == 0
    assert main(TRAIN + ["--epochs", "4", "--out", str(tmp_path / "cut"), "--resume"]) == 0
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert _history(tmp_path / "whole") == _history(tmp_path / "cut")


def test_sigint_saves_prints_one_line_exits_130_and_resume_is_bit_exact(tmp_path):
    """A real SIGINT to a running `nitrod train` (batch 4, so an epoch takes a while): it
    finishes the step, saves, prints one line, exits 130; --resume ends where an uninterrupted
    run ends."""
    args = ["train", "--dataset", "digits", "--hidden", "32", "--seed", "5", "--batch", "2",
            "--epochs", "8", "--quiet"]
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "nitrod.cli", *args, "--out", str(cut)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (cut / "checkpoint.npz").exists():        # the first epoch has been saved
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    time.sleep(0.05)                                    # into the second epoch
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert err.count("\n") == 1 and "interrupted at epoch" in err and "--resume" in err, err
    assert "Traceback" not in err
    from golden.train import load_train_state
    state = load_train_state(cut / "checkpoint.npz")[3]
    assert 2 <= state["epoch"] <= 8 and len(state["history"]) < 8, state
    assert main(args + ["--out", str(cut), "--resume"]) == 0
    assert main(args + ["--out", str(tmp_path / "whole")]) == 0
    a, b = _weights(tmp_path / "whole"), _weights(cut)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert _history(tmp_path / "whole") == _history(cut)


# --------------------------------------------------------------------------- options

@pytest.mark.parametrize("argv,msg", [
    (["--arch", "small"], "--arch applies to --model cnn"),
    (["--decoder-dim", "64"], "--decoder-dim applies to --model cnn"),
    (["--conv-amp-extra"], "--conv-amp-extra applies to --model cnn"),
    (["--data-dir", "/tmp"], "--data-dir: dataset digits is bundled"),
    (["--model", "cnn", "--hidden", "10"], "--hidden applies to --model mlp"),
])
def test_options_that_do_not_apply_are_refused(argv, msg, capsys):
    base = ["train", "--dataset", "digits", "--epochs", "1", "--quiet"]
    assert main(base + argv) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


@pytest.mark.parametrize("argv,msg", [
    (["train", "--dataset", "digits", "--hidden", "100,,50"], "argument --hidden: '100,,50': item 2 is empty"),
    (["train", "--dataset", "digits", "--hidden", "abc"], "argument --hidden: 'abc': 'abc' is not an integer"),
    (["train", "--dataset", "digits", "--hidden", "10,0"], "argument --hidden"),
    (["train", "--dataset", "digits", "--seed", "-1"], "argument --seed: must be at least 0, got -1"),
    (["train", "--dataset", "digits", "--epochs", "0"], "argument --epochs: must be at least 1"),
    (["train", "--dataset", "digits", "--batch", "x"], "argument --batch"),
    (["train", "--dataset", "digits", "--model", "cnn", "--arch", "c4,,p"], "argument --arch"),
    (["bench", "golden", "--batches", "-5"], "argument --batches: must be at least 1, got -5"),
    (["board", "train", "--dataset", "digits", "--port", "x", "--timeout", "0"], "argument --timeout"),
    (["board", "train", "--dataset", "digits", "--port", "x", "--retries", "-1"], "argument --retries"),
])
def test_bad_option_values_are_argparse_errors_naming_the_option(argv, msg, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_eval_of_a_bad_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "plain.npy"
    np.save(bad, np.arange(4))
    assert main(["eval", "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "plain array" in err


def test_eval_refuses_a_data_dir_for_a_bundled_dataset(tmp_path, capsys):
    assert main(TRAIN + ["--epochs", "1", "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "r" / "checkpoint.npz"),
                 "--data-dir", str(tmp_path)]) == 2
    assert "--data-dir: dataset digits is bundled" in capsys.readouterr().err


def test_bench_sim_reads_its_hidden_sizes(monkeypatch, capsys):
    """`nitrod bench sim --hidden` is parsed by the parser (sizes), the bench gets them."""
    from nitrod import bench

    seen = {}
    monkeypatch.setattr(bench, "cmd_bench_sim", lambda args: seen.update(h=args.hidden) or 0)
    assert main(["bench", "sim", "--hidden", "30,20"]) == 0 and seen["h"] == (30, 20)
