"""cocotb bench for hw/forward_layer.py (run by tests/test_forward_layer.py).

Params: rows, cols, a_width, b_width, h_width, out_depth, instrs (list of packed instruction
integers, wider than 64 bits so they travel as JSON), gap (idle cycles before each instruction).
Vectors:
    a_addr (n), a_words (n x rows), b_addr (q), b_words (q x cols) -- operand memory contents;
    stall_pattern (optional, cyclic 0/1) -- the layer's ``stall`` input, per cycle.

Outputs: per instruction accept_cycle, done_cycle, hw_cycles (``cycles`` after ``done``);
h (out_depth x cols) and code (out_depth x cols), the whole output memories read through ``rd``
at the end; sticky_overflow.

Timing convention (as in tb_tile_engine): inputs are written and outputs read right after a
falling edge.
"""

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge

from sim import tb


@cocotb.test()
async def run_layer(dut):
    p = tb.params()
    v = tb.vectors()
    cols = p["cols"]
    gap = int(p.get("gap", 0))
    stall_pattern = [int(x) for x in v.get("stall_pattern", np.zeros(1, int)).tolist()]

    await tb.start_clock_and_reset(dut)
    dut.instr__valid.value = 0
    dut.stall.value = 0
    dut.a_wr__en.value = 0
    dut.b_wr__en.value = 0
    dut.rd__addr.value = 0

    # ---- operand memories, A and B in parallel -----------------------------------------
    a_items = list(zip(v["a_addr"].tolist(), v["a_words"].tolist()))
    b_items = list(zip(v["b_addr"].tolist(), v["b_words"].tolist()))
    for i in range(max(len(a_items), len(b_items))):
        for items, port, width in ((a_items, "a_wr", p["a_width"]), (b_items, "b_wr", p["b_width"])):
            if i < len(items):
                addr, word = items[i]
                getattr(dut, f"{port}__addr").value = int(addr)
                getattr(dut, f"{port}__data").value = tb.pack(word, width)
                getattr(dut, f"{port}__en").value = 1
            else:
                getattr(dut, f"{port}__en").value = 0
        await FallingEdge(dut.clk)
    dut.a_wr__en.value = 0
    dut.b_wr__en.value = 0
    await FallingEdge(dut.clk)

    # ---- instructions --------------------------------------------------------------------
    accept_cycle, done_cycle, hw_cycles = [], [], []
    cycle = 0
    for n, word in enumerate(p["instrs"]):
        for _ in range(gap):
            await FallingEdge(dut.clk)
            cycle += 1
        assert not dut.busy.value and dut.instr__ready.value, f"instruction {n}: not ready while idle"
        dut.instr__payload.value = int(word)
        dut.instr__valid.value = 1
        dut.stall.value = stall_pattern[cycle % len(stall_pattern)]
        accept_cycle.append(cycle)
        await FallingEdge(dut.clk)
        cycle += 1
        dut.instr__valid.value = 0
        budget = 20000
        while not dut.done.value:
            assert dut.busy.value, f"instruction {n}: neither busy nor done"
            assert not dut.instr__ready.value, "ready while busy"
            dut.stall.value = stall_pattern[cycle % len(stall_pattern)]
            await FallingEdge(dut.clk)
            cycle += 1
            budget -= 1
            assert budget > 0, f"instruction {n}: timeout"
        assert not dut.busy.value
        done_cycle.append(cycle)
        hw_cycles.append(int(dut.cycles.value))
        dut.stall.value = 0
        await FallingEdge(dut.clk)
        cycle += 1
        assert not dut.done.value and not dut.busy.value, "done is a one-cycle pulse"

    # ---- read the output memories back (one cycle of read latency) -------------------------
    depth = p["out_depth"]
    h_words, code_words = [], []
    for address in range(depth):
        dut.rd__addr.value = address
        await FallingEdge(dut.clk)          # the read port registered mem[address]
        h_words.append(tb.unpack(dut.rd__h.value.to_unsigned(), p["h_width"], cols))
        code_words.append(tb.unpack(dut.rd__code.value.to_unsigned(), 2, cols, signed=False))
    assert not dut.busy.value

    tb.save_outputs(
        h=np.array(h_words, dtype=np.int64).reshape(depth, cols),
        code=np.array(code_words, dtype=np.int64).reshape(depth, cols),
        accept_cycle=np.array(accept_cycle, dtype=np.int64),
        done_cycle=np.array(done_cycle, dtype=np.int64),
        hw_cycles=np.array(hw_cycles, dtype=np.int64),
        sticky_overflow=np.array(int(dut.overflow.value)),
    )
