"""What only the SerialTrainer (hw/trainers/serial_trainer.py) needs, beyond the conformance
suite (tests/hw/trainers/test_conformance.py): its ACT and WGT are SPRAM on the iCEBreaker,
undefined at power-up, so training must not read a word nobody wrote.
"""

from __future__ import annotations

import numpy as np
import pytest

from hw.contract import Geometry, Region
from nitrod.isa_model import IsaMachine

#: the iCEBreaker's widths (boards/boards.py: ICEBREAKER_GEOMETRY) with small memories
GEOMETRY = Geometry(side=2, act_depth=1024, wgt_depth=1024, err_depth=256, code_depth=512,
                    label_depth=256, prog_depth=32, wgt_width=16, acc_width=36, d_g_width=36)


@pytest.mark.parametrize("batch, m", [(9, 9), (9, 5), (8, 8)])
def test_training_does_not_depend_on_what_the_memories_held_before(batch, m):
    """The iCEBreaker's SPRAM (ACT, WGT) holds undefined words at power-up and cannot be
    initialised: the compiler's programs must not read a word that neither the host
    (``pack_weights``, ``pack_batch``) nor an earlier instruction wrote.  On the NumPy model,
    memories full of random lane values train exactly like zeroed ones, full and partial
    batches."""
    from golden.network import Network, NetworkSpec
    from nitrod.compiler import compile_network
    from hw.contract import lane_signed, lane_width

    spec = NetworkSpec((1, 1, 13), 5, ("l7",), relu_inv_slope=4, fwd_decay_inv=1200,
                       subnet_decay_inv=700)
    plan = compile_network(spec, GEOMETRY, batch)
    runs = []
    for garbage in (False, True):
        machine = IsaMachine(GEOMETRY)
        rng = np.random.default_rng(7)
        if garbage:
            for r in (Region.ACT, Region.WGT, Region.ERR, Region.CODE):
                w = lane_width(GEOMETRY, r)
                lo, hi = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if lane_signed(r) else (0, 2)
                machine.mem[r][:] = rng.integers(lo, hi + 1, size=machine.mem[r].shape)
            labels = machine.mem[Region.LABEL]
            labels[:] = rng.integers(0, 256, size=labels.shape)
        machine.load(plan.pack_weights(Network(spec, seed=1).weights()))
        data = np.random.default_rng(3)
        weights = []
        for _ in range(3):
            x = data.integers(-127, 128, size=(m, 13)).astype(np.int8)
            machine.load(plan.pack_batch(x, data.integers(0, 5, size=m)))
            machine.run(plan.program(512, m))
            weights.append(plan.unpack_weights(machine.read_words))
        runs.append(weights)
    for zeroed, filled in zip(*runs):
        for name in zeroed:
            assert np.array_equal(zeroed[name], filled[name]), name
