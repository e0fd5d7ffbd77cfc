"""``RUNS_CNN`` on the core class: what the host compiles for each core.  The Trainer runs CNN
programs; the SerialTrainer (the iCEBreaker's core) runs MLP programs and the host refuses it
a CNN by name, before anything is simulated or sent (its CNN instructions stop with
``op_error``: tests/hw/trainers/test_conformance.py)."""

from __future__ import annotations

from golden.network import NetworkSpec
from hw.trainers.core import TrainerCore
from hw.trainers.serial_trainer import SerialTrainer
from hw.trainers.trainer import Trainer
from nitrod.cli import main
from nitrod.compiler import CNN_CORES_NEEDED, hardware_refusal

CNN = NetworkSpec((1, 5, 5), 3, ("c3", "l4"))


def test_the_host_reads_what_a_core_runs():
    assert Trainer.RUNS_CNN and not SerialTrainer.RUNS_CNN and not TrainerCore.RUNS_CNN
    assert hardware_refusal(CNN, Trainer.RUNS_CNN) is None
    assert hardware_refusal(CNN, SerialTrainer.RUNS_CNN) == CNN_CORES_NEEDED
    assert hardware_refusal(CNN) == CNN_CORES_NEEDED
    assert hardware_refusal(NetworkSpec((1, 1, 6), 3, ("l4",)), False) is None


def test_a_cnn_on_the_icebreaker_core_is_refused_before_it_runs(capsys):
    """``nitrod bench sim --board icebreaker --model cnn``: one line naming the reason, exit 2."""
    assert main(["bench", "sim", "--board", "icebreaker", "--model", "cnn", "--arch", "c3,p,l4",
                 "--input-shape", "1x6x6", "--classes", "3", "--batch", "3", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "RUNS_CNN" in err and "MLPs only" in err, err
