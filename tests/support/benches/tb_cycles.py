"""cocotb bench that plays input vectors cycle by cycle and records outputs.

Vectors: one array per input port (unsigned values), all of the same length.  Params:
``outputs`` (the output ports to record).  In each cycle the inputs are set, the rising edge
samples them, and each output is recorded at the falling edge after it (the state that edge
made), as ``outputs[name]`` (unsigned, at most 64 bits).
"""

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge

from sim import tb


@cocotb.test()
async def plays_the_vectors(dut):
    inputs = {name: values.tolist() for name, values in tb.vectors().items()}
    names = tb.params()["outputs"]
    cycles = len(next(iter(inputs.values())))
    await tb.start_clock_and_reset(dut)
    got = {name: [] for name in names}
    for i in range(cycles):
        for name, values in inputs.items():
            getattr(dut, name).value = values[i]
        await FallingEdge(dut.clk)
        for name in names:
            value = getattr(dut, name).value        # LogicArray, or Logic for one bit
            got[name].append(value.to_unsigned() if hasattr(value, "to_unsigned") else int(value))
    tb.save_outputs(**{name: np.array(values, dtype=np.uint64) for name, values in got.items()})
