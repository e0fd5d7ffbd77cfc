"""hw.trainers.core.uses_cnn_fields, the decode of the CNN fields by a core that does not run them (their op_error
on CNN instructions), in Amaranth's Python simulator; the conformance suite checks the cores
(tests/support/conformance.py: check_cnn_refused)."""

from amaranth import Module, Signal
from amaranth.lib import data
from amaranth.sim import Simulator

from hw.contract import (CNN_FIELDS, INSTRUCTION_BITS, INSTRUCTION_FIELDS, Op, empty_instruction,
                         pack_instruction)
from hw.trainers.core import instruction_layout, uses_cnn_fields


def test_uses_cnn_fields_is_one_for_each_cnn_field_and_zero_for_mlp_fields():
    word, out = Signal(INSTRUCTION_BITS), Signal()
    m = Module()
    m.d.comb += out.eq(uses_cnn_fields(data.View(instruction_layout(), word)))
    width = dict(INSTRUCTION_FIELDS)
    mlp_full = {n: (1 << w) - 1 for n, w in INSTRUCTION_FIELDS if n not in CNN_FIELDS}
    cases = [(empty_instruction(Op.FORWARD), 0), (mlp_full, 0)]
    cases += [(empty_instruction(Op.SGD, **{name: 1 << (width[name] - 1)}), 1)
              for name in CNN_FIELDS]
    got = []

    async def bench(ctx):
        for ins, _ in cases:
            ctx.set(word, pack_instruction(ins))
            got.append(ctx.get(out))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == [want for _, want in cases]
