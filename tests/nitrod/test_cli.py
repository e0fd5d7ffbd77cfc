"""The nitrod command line: train, eval, ranges, bench, and clear errors."""

import json
import subprocess
import sys

import pytest

from nitrod.cli import main


def test_train_writes_outputs_and_eval_scores_identically(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--model", "mlp", "--hidden", "30,20", "--epochs", "3",
                 "--seed", "1", "--quiet", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    for key in ("best_test_accuracy", "final_test_accuracy", "epochs", "samples_per_second", "ranges"):
        assert key in m
    assert m["epochs"] == 3 and m["samples_per_second"] > 0
    assert (out / "learning_curves.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "checkpoint.npz")]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev["test_accuracy"] == m["final_test_accuracy"] and ev["test_samples"] == 360


def test_cnn_layer_list(tmp_path):
    assert main(["train", "--dataset", "digits", "--model", "cnn", "--arch", "c4,p,l8", "--epochs", "1",
                 "--quiet", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["layers"] == ["c4", "p", "l8"]


def test_ranges_prints_table(capsys, tmp_path):
    assert main(["ranges", "--dataset", "digits", "--hidden", "16", "--epochs", "1", "--quiet",
                 "--json", str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    for kind in ("weights", "forward_acc", "local_error", "backprop_error", "weight_grad"):
        assert kind in text
    assert "weights" in json.loads((tmp_path / "r.json").read_text())["by_kind"]


@pytest.mark.parametrize("argv,msg", [
    (["train", "--dataset", "nope", "--epochs", "1"], "unknown dataset"),
    (["train", "--dataset", "mnist", "--epochs", "1"], "--data-dir"),
    (["train", "--dataset", "digits", "--model", "cnn", "--arch", "q3", "--epochs", "1"], "bad layer"),
    (["eval", "--checkpoint", "/nonexistent.npz"], "does not exist"),
    (["board", "train", "--dataset", "digits", "--port", "/dev/nonexistent", "--epochs", "1"],
     "could not open port"),
])
def test_clear_errors(argv, msg, capsys):
    assert main(argv) == 2
    assert msg in capsys.readouterr().err


def test_entry_point_and_bench():
    r = subprocess.run([sys.executable, "-m", "nitrod.cli", "bench", "golden", "--batches", "20"],
                       capture_output=True, text=True, check=True)
    assert r.stdout.strip().splitlines()[-1].endswith("samples/s")


def test_synth_unit_is_reachable_and_refuses_unknown_units(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["synth-unit", "--help"])
    assert exc.value.code == 0 and "--target" in capsys.readouterr().out
    assert main(["synth-unit", "no_such_unit", "--target", "ice40"]) != 0
    assert "no_such_unit" in capsys.readouterr().err


def test_training_commands_do_not_import_amaranth():
    code = "import sys, nitrod.cli as c; c.build_parser(); print('amaranth' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"
