"""cocotb bench of hw.array.tile_engine.TileEngine, driven by tests/test_tile_engine.py.

Params:
    rows, cols, a_width, b_width, acc_width,
    instr_fields  -- [[name, offset, width], ...] of the instruction layout (packing),
    result_fields -- {name: [offset, width]} of the result layout (unpacking; "row" included),
    gap           -- idle cycles between instructions (default 0).
Vectors:
    a_addr (n), a_words (n x rows), b_addr (m), b_words (m x cols) -- memory contents to load;
    instrs (i x fields) -- one row per instruction, columns in instr_fields order;
    ready_pattern (optional, cyclic 0/1) -- the bench takes a result row only where it is 1.

Outputs: per result row (arrival order) rows (x cols), index, tr, tc, last, final, overflow,
instr (the instruction number); per instruction accept_cycle, done_cycle, hw_cycles (the engine's
``cycles`` output after ``done``), first_result_cycle; sticky_overflow at the end.

Timing convention (as in tb_mac_array): inputs are written and outputs read right after a
falling edge; ``instr.ready`` and ``results.valid`` depend only on registered state.
"""

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge

from sim import tb


@cocotb.test()
async def run_instructions(dut):
    p = tb.params()
    v = tb.vectors()
    cols, acc_width = p["cols"], p["acc_width"]
    fields = p["instr_fields"]
    rf = p["result_fields"]
    gap = int(p.get("gap", 0))
    ready_pattern = [int(x) for x in v.get("ready_pattern", np.ones(1, int)).tolist()]

    await tb.start_clock_and_reset(dut)
    dut.instr__valid.value = 0
    dut.results__ready.value = 0
    dut.a_wr__en.value = 0
    dut.b_wr__en.value = 0

    # ---- load the memories, A and B in parallel, one word per cycle each ----------------
    a_items = list(zip(v["a_addr"].tolist(), v["a_words"].tolist()))
    b_items = list(zip(v["b_addr"].tolist(), v["b_words"].tolist()))
    for i in range(max(len(a_items), len(b_items))):
        if i < len(a_items):
            addr, word = a_items[i]
            dut.a_wr__addr.value = int(addr)
            dut.a_wr__data.value = tb.pack(word, p["a_width"])
            dut.a_wr__en.value = 1
        else:
            dut.a_wr__en.value = 0
        if i < len(b_items):
            addr, word = b_items[i]
            dut.b_wr__addr.value = int(addr)
            dut.b_wr__data.value = tb.pack(word, p["b_width"])
            dut.b_wr__en.value = 1
        else:
            dut.b_wr__en.value = 0
        await FallingEdge(dut.clk)
    dut.a_wr__en.value = 0
    dut.b_wr__en.value = 0
    await FallingEdge(dut.clk)
    assert not dut.busy.value and dut.instr__ready.value

    def field(word, name):
        offset, width = rf[name]
        return (word >> offset) & ((1 << width) - 1)

    out = {name: [] for name in ("index", "tr", "tc", "last", "final", "overflow", "instr")}
    out_rows = []
    accept_cycle, done_cycle, hw_cycles, first_result_cycle = [], [], [], []
    cycle = 0
    for n, ins in enumerate(v["instrs"].tolist()):
        for _ in range(gap):
            await FallingEdge(dut.clk)
            cycle += 1
        word = 0
        for (name, offset, width), value in zip(fields, ins):
            word |= (int(value) & ((1 << width) - 1)) << offset
        dut.instr__payload.value = word
        dut.instr__valid.value = 1
        assert dut.instr__ready.value, "engine not ready for an instruction while idle"
        accept_cycle.append(cycle)
        await FallingEdge(dut.clk)
        cycle += 1
        dut.instr__valid.value = 0
        first = None
        budget = 50 * (int(np.prod([ins[[f[0] for f in fields].index(k)]
                                    for k in ("k_len", "tiles_r", "tiles_c")])) + 1) + 200
        while True:
            if dut.done.value:
                assert not dut.busy.value
                break
            take = ready_pattern[cycle % len(ready_pattern)]
            dut.results__ready.value = take
            if dut.results__valid.value:
                assert dut.busy.value, "result row while not busy"
                if take:
                    first = cycle if first is None else first
                    word = dut.results__payload.value.to_unsigned()
                    out_rows.append(tb.unpack(field(word, "row"), acc_width, cols))
                    for name in ("index", "tr", "tc", "last", "final", "overflow"):
                        out[name].append(field(word, name))
                    out["instr"].append(n)
            assert not dut.instr__ready.value or not dut.busy.value
            await FallingEdge(dut.clk)
            cycle += 1
            budget -= 1
            assert budget > 0, f"instruction {n}: timeout"
        done_cycle.append(cycle)
        hw_cycles.append(int(dut.cycles.value))
        first_result_cycle.append(-1 if first is None else first)
        dut.results__ready.value = 0
        # done is a one-cycle pulse, and nothing more comes out
        await FallingEdge(dut.clk)
        cycle += 1
        assert not dut.done.value and not dut.busy.value and not dut.results__valid.value

    for _ in range(10):
        await FallingEdge(dut.clk)
        assert not dut.results__valid.value, "result rows after the last done"

    tb.save_outputs(
        rows=np.array(out_rows, dtype=np.int64).reshape(len(out_rows), cols),
        **{name: np.array(values, dtype=np.int64) for name, values in out.items()},
        accept_cycle=np.array(accept_cycle, dtype=np.int64),
        done_cycle=np.array(done_cycle, dtype=np.int64),
        hw_cycles=np.array(hw_cycles, dtype=np.int64),
        first_result_cycle=np.array(first_result_cycle, dtype=np.int64),
        sticky_overflow=np.array(int(dut.overflow.value)),
    )
