"""The accuracy targets of the golden trainer, run exactly as the README's commands."""

import json

import pytest

from nitrod.cli import main

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("argv,target", [
    ("--dataset digits --model mlp --hidden 100,50 --epochs 60 --seed 42", 0.95),
    ("--dataset mnist5k --model mlp --hidden 100,50 --epochs 100 --seed 42", 0.925),
    ("--dataset digits --model cnn --epochs 30 --seed 42", 0.95),
])
def test_accuracy_target(argv, target, tmp_path):
    assert main(["train", *argv.split(), "--quiet", "--out", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["best_test_accuracy"] >= target, m["best_test_accuracy"]
