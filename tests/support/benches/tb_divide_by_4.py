"""cocotb test of the harness's toy unit (tests/test_harness.py): y = tdiv(x, 4), registered.

Vectors: ``x`` (int8 values).  Params: ``width``.  The expected quotient is
computed here with truncation toward zero, so a flooring design fails.
"""

import cocotb
from cocotb.triggers import FallingEdge

from sim import tb


@cocotb.test()
async def divides_truncating(dut):
    width = tb.params()["width"]
    xs = tb.vectors()["x"].tolist()
    await tb.start_clock_and_reset(dut)
    got = []
    for x in xs:
        dut.x.value = tb.to_unsigned(x, width)  # sampled by the next rising edge,
        await FallingEdge(dut.clk)               # so y holds tdiv(x, 4) at the falling edge after it
        got.append(tb.to_signed(dut.y.value.to_unsigned(), width))
    tb.save_outputs(y=got)
    wrong = [(x, y) for x, y in zip(xs, got) if y != (abs(x) // 4) * (1 if x >= 0 else -1)]
    assert not wrong, f"{len(wrong)} wrong quotients, e.g. (x, y) = {wrong[:4]}"
