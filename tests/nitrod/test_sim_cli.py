"""`nitrod sim`: training on the simulated Trainer, checked against the golden model.

Runs with a 4 x 4 array (`--side 4`), the same Verilator build as tests/test_trainer.py.
"""

import json

import numpy as np

from nitrod.cli import main
from nitrod.accel_train import first_difference

SIM = ["sim", "--dataset", "digits", "--model", "mlp", "--hidden", "100,50", "--side", "4",
       "--seed", "42", "--quiet"]


def test_one_epoch_with_check_has_no_mismatch_and_matches_golden_training(tmp_path):
    out = tmp_path / "sim"
    assert main(SIM + ["--epochs", "1", "--check", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["checked"] and m["mismatches"] == 0 and m["first_mismatch"] is None
    assert m["steps"] == 23                       # 1437 samples in batches of 64
    assert 0 < m["mac_utilisation"] <= 1 and m["sim_cycles_per_second"] > 0
    assert m["cycles_lower_bound_per_batch"] <= m["cycles_per_batch"]
    # identical weights, so identical accuracy to the golden trainer with the same seed
    gold = tmp_path / "golden"
    assert main(["train", "--dataset", "digits", "--model", "mlp", "--hidden", "100,50",
                 "--epochs", "1", "--seed", "42", "--quiet", "--out", str(gold)]) == 0
    g = json.loads((gold / "metrics.json").read_text())
    assert m["history"][0]["test_accuracy"] == g["history"][0]["test_accuracy"]
    assert m["history"][0]["train_accuracy"] == g["history"][0]["train_accuracy"]
    z_sim, z_gold = np.load(out / "checkpoint.npz"), np.load(gold / "checkpoint.npz")
    for key in z_gold.files:
        if key.startswith("w/"):
            assert np.array_equal(z_sim[key], z_gold[key]), key


def test_check_stops_at_the_first_difference_and_names_it(tmp_path, monkeypatch, capsys):
    from nitrod import backends

    real = backends.AcceleratorBackend.weights

    def corrupted(self):
        ws = real(self)
        ws["block1.local"][2, 3] += 1
        return ws

    monkeypatch.setattr(backends.AcceleratorBackend, "weights", corrupted)
    out = tmp_path / "bad"
    assert main(SIM + ["--epochs", "1", "--check", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "MISMATCH at epoch 1 batch 0: block1.local(2, 3)" in err
    m = json.loads((out / "metrics.json").read_text())
    assert m["mismatches"] == 1
    f = m["first_mismatch"]
    assert f["layer"] == "block1.local" and f["index"] == [2, 3] and f["sim"] == f["golden"] + 1


def test_first_difference():
    a = {"x": np.zeros((2, 3), int), "y": np.arange(4)}
    b = {"x": np.zeros((2, 3), int), "y": np.arange(4)}
    assert first_difference(a, b) is None
    b["y"][2] = 7
    assert first_difference(a, b) == ("y", (2,), 2, 7)


def test_sim_refuses_cnn_on_a_core_without_runs_cnn(capsys, monkeypatch):
    """A CNN on a core class whose ``RUNS_CNN`` is False (every core of the project runs
    them; a stand-in here) is refused before its simulator is built."""
    from hw.trainers.trainer import Trainer

    monkeypatch.setattr(Trainer, "RUNS_CNN", False)
    assert main(["sim", "--dataset", "digits", "--model", "cnn", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "MLP" in err and "RUNS_CNN" in err


def test_a_cnn_on_the_trainer_with_check_for_a_few_steps(tmp_path, capsys):
    """`nitrod sim --model cnn` on the 4 x 4 Trainer (the build above): a conv block, an
    average pool, a second conv block and a linear block on digits, every weight after every
    step equal to golden's, stopped after 3 steps (``--steps``)."""
    out = tmp_path / "cnn"
    assert main(["sim", "--dataset", "digits", "--model", "cnn", "--arch", "c4,a,c5,l6",
                 "--side", "4", "--batch", "12", "--seed", "3", "--quiet", "--check",
                 "--steps", "3", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["checked"] and m["mismatches"] == 0 and m["steps"] == 3
    assert m["cycles_lower_bound_per_batch"] <= m["cycles_per_batch"]
    assert "stopped after 3 steps" in capsys.readouterr().out


def test_sim_depth_option_is_checked(capsys):
    assert main(["sim", "--dataset", "digits", "--epochs", "1", "--depth", "act=70000"]) == 2
    assert "act_depth = 70000" in capsys.readouterr().err


def test_bench_sim_step_has_no_collision(capsys):
    """`nitrod bench sim` on the 4 x 4 Trainer, MLP 256-100-50-10 at batch 64, one step.  WGT
    and ERR share the engine's B port: before each read only when the instruction takes its B
    operand from it (and CODE only in BACKWARD), the other memory read words at the operand's
    addresses while the writer was writing them, and STATUS.collision stopped this run."""
    assert main(["bench", "sim", "--side", "4", "--steps", "1", "--inputs", "256",
                 "--batch", "64"]) == 0
    out = capsys.readouterr().out
    assert "cycles per step" in out
    # the per-product table: the five products of an MLP step, no pool
    rows = {line.split()[0] + (" " + line.split()[1] if "sgd" in line else ""): line
            for line in out.split("per product")[1].splitlines()[2:7]}
    assert set(rows) == {"forward", "loss", "backward", "classifier sgd", "block sgd"}, rows
    assert all(0 < float(r.split()[-1]) <= 1 for r in rows.values()), rows
    waits = out.split("the array waits most in")[1].splitlines()[1:4]
    assert all("cycles," in line and "waiting" in line for line in waits), waits


def test_the_waveform_replay_runs_the_same_core_as_the_run(tmp_path):
    """``--waves-batch`` replays a batch with tracing on the core the run used: with
    ``--board icebreaker`` the SerialTrainer (here with small memories); the replayed step
    ends with the weights golden gives, and the VCD names the SerialTrainer's signals."""
    from types import SimpleNamespace

    from golden.datasets import one_hot
    from golden.network import Network, NetworkSpec
    from hw.contract import Geometry
    from nitrod.accel_train import _replay_with_waves

    geometry = Geometry(side=2, act_depth=256, wgt_depth=256, err_depth=128, code_depth=128,
                        label_depth=16, prog_depth=32, wgt_width=16, acc_width=36,
                        d_g_width=36)
    spec = NetworkSpec((1, 1, 6), 3, ("l5",))
    net = Network(spec, seed=3)
    rng = np.random.default_rng(3)
    x = rng.integers(-127, 128, size=(4, 6)).astype(np.int8)
    t = one_hot(rng.integers(0, 3, size=4), 3)
    snap = {"weights": net.weights(), "x": x, "t": t, "lr_inv": 256}
    net.train_step(x.reshape(4, 1, 1, 6), t, 256)
    snap["after"] = net.weights()
    args = SimpleNamespace(batch=4, seed=3, board="icebreaker")
    got = _replay_with_waves(spec, args, geometry, snap, tmp_path, 0)
    assert got["replay_identical"] and got["file"] == str(tmp_path / "waves.vcd")
    assert "post_busy" in (tmp_path / "waves.vcd").read_text(errors="replace")[:2_000_000]


def _checkpoint_weights(folder):
    with np.load(folder / "checkpoint.npz") as z:
        return {k: z[k] for k in z.files if k.startswith("w/")}


def test_sim_interrupted_and_resumed_is_bit_exact(tmp_path, monkeypatch, capsys):
    """`nitrod sim` stopped by SIGINT in its second epoch (the step finishes, the state is
    saved, exit 130) and continued with --resume in a new simulator ends with the weights, the
    history and the step counts of the uninterrupted run."""
    import signal

    from nitrod import backends

    args = ["sim", "--dataset", "digits", "--model", "mlp", "--hidden", "8", "--side", "4",
            "--seed", "42", "--quiet", "--epochs", "2"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main(args + ["--out", str(whole)]) == 0
    real = backends.AcceleratorBackend.train_step
    calls = []

    def train_step(self, x, target, lr_inv):
        yhat = real(self, x, target, lr_inv)
        calls.append(1)
        if len(calls) == 30:                    # epoch 2, batch 6
            signal.raise_signal(signal.SIGINT)
        return yhat

    monkeypatch.setattr(backends.AcceleratorBackend, "train_step", train_step)
    capsys.readouterr()
    assert main(args + ["--out", str(cut)]) == 130
    err = capsys.readouterr().err
    assert "interrupted at epoch 2 batch 7" in err and err.count("\n") == 1, err
    monkeypatch.undo()
    assert main(args + ["--out", str(cut), "--resume"]) == 0
    a, b = _checkpoint_weights(whole), _checkpoint_weights(cut)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    ma = json.loads((whole / "metrics.json").read_text())
    mb = json.loads((cut / "metrics.json").read_text())
    assert ma["history"] == mb["history"]
    assert ma["steps"] == mb["steps"] == 46 and ma["cycles_total"] == mb["cycles_total"]


def test_bench_sim_without_room_to_profile_still_reports_the_step(monkeypatch, capsys):
    """A PROG too short for an END after every instruction: the per-product table is not
    measured (said, with why), the rest of the bench is."""
    from nitrod.backends import AcceleratorBackend
    from nitrod.compiler import CompileError

    def no_room(self, *args):
        raise CompileError("profiling a step of 17 instructions needs 34 program words; "
                           "PROG holds 32")

    monkeypatch.setattr(AcceleratorBackend, "profile_step", no_room)
    assert main(["bench", "sim", "--side", "4", "--steps", "1", "--inputs", "256",
                 "--batch", "64"]) == 0
    out = capsys.readouterr().out
    assert "cycles per step" in out and "MAC utilisation" in out
    assert "per product            not measured: profiling a step of 17" in out


def test_bench_sim_both_servers_prints_both_speeds_and_checks_the_cycles(monkeypatch, capsys):
    """``--sim-server both`` runs the bench under each server (here stubbed), prints each
    one's simulated cycles/s and their ratio, and fails if their step cycles differ."""
    from nitrod import bench as bench_module

    cycles = {"native": [100, 100], "cocotb": [100, 100]}

    def fake_run(args, spec, geometry, server):
        rate = {"native": 300_000.0, "cocotb": 20_000.0}[server]
        return ({"cycles_per_batch": 100.0, "cycles_lower_bound_per_batch": 50.0,
                 "cycles_over_bound": 2.0, "mac_utilisation": 0.5, "steps": 2,
                 "sim_cycles_per_second": rate, "sim_seconds": 200 / rate,
                 "simulator_start_seconds": 1.0, "sim_server": server,
                 "step_cycles": cycles[server]}, "Trainer 4 x 4 (16 MACs)")

    monkeypatch.setattr(bench_module, "_bench_run", fake_run)
    bench = ["bench", "sim", "--side", "4", "--inputs", "64", "--hidden", "16", "--batch", "8",
             "--sim-server", "both"]
    assert main(bench) == 0
    out = capsys.readouterr().out
    assert "300000  (native server" in out and "20000  (cocotb server" in out
    assert "native / cocotb        15.0x" in out
    cycles["cocotb"] = [100, 101]
    assert main(bench) == 1
    assert "disagree" in capsys.readouterr().err
