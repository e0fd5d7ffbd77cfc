"""cocotb bench of hw.array.mac_array.MacArray, driven by tests/test_mac_array.py.

Params: rows, cols, a_width, b_width, acc_width.
Vectors (one entry per operand beat):
    a (beats x rows), b (beats x cols), first (beats), last (beats);
optional cyclic 0/1 patterns:
    valid_pattern -- the bench offers a beat only on cycles where it is 1,
    ready_pattern -- the bench accepts a result row only on cycles where it is 1.

Outputs (save_outputs): the result rows in arrival order
    rows (n x cols), index, last, overflow (per row), sticky_overflow (final),
and accept_cycle (the cycle number at which each beat was accepted), cycles.

Timing convention: inputs are written right after a falling edge and outputs
read 1 ns later.  ``results.valid`` depends only on registered state;
``operands.ready`` also on the offered beat's ``last`` flag (a last beat waits
for the result bank), hence the 1 ns.  What is read there holds for the next
rising edge, where the transfers happen.
"""

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, Timer

from sim import tb


@cocotb.test()
async def stream_tiles(dut):
    p = tb.params()
    rows, cols, acc_width = p["rows"], p["cols"], p["acc_width"]
    v = tb.vectors()
    a_bits = rows * p["a_width"]
    b_bits = cols * p["b_width"]
    words = [
        tb.pack(a, p["a_width"]) | (tb.pack(b, p["b_width"]) << a_bits)
        | (int(f) << (a_bits + b_bits)) | (int(l) << (a_bits + b_bits + 1))
        for a, b, f, l in zip(v["a"].tolist(), v["b"].tolist(), v["first"].tolist(), v["last"].tolist())
    ]
    n_beats = len(words)
    n_rows_expected = int(np.sum(v["last"])) * rows
    valid_pattern = [int(x) for x in v.get("valid_pattern", np.ones(1, int)).tolist()]
    ready_pattern = [int(x) for x in v.get("ready_pattern", np.ones(1, int)).tolist()]

    row_bits = cols * acc_width
    index_bits = max(1, (rows - 1).bit_length())
    row_mask = (1 << row_bits) - 1

    operands_payload, operands_valid, operands_ready = (
        dut.operands__payload, dut.operands__valid, dut.operands__ready)
    results_payload, results_valid, results_ready = (
        dut.results__payload, dut.results__valid, dut.results__ready)

    await tb.start_clock_and_reset(dut)
    results_ready.value = 0
    operands_valid.value = 0

    accept_cycle = []
    raw_rows = []
    next_beat = 0
    cycle = 0
    timeout = 20 * (n_beats + n_rows_expected) + 100
    while next_beat < n_beats or len(raw_rows) < n_rows_expected:
        # Operands: offer beat `next_beat`; it is taken at the next rising edge if ready.
        offer = next_beat < n_beats and valid_pattern[cycle % len(valid_pattern)]
        if offer:
            operands_payload.value = words[next_beat]
            operands_valid.value = 1
        else:
            operands_valid.value = 0
        # Results: take the row on display if we are ready this cycle.
        take = ready_pattern[cycle % len(ready_pattern)]
        results_ready.value = take
        await Timer(1, unit="ns")   # let `ready` follow the offered beat
        if offer and operands_ready.value:
            accept_cycle.append(cycle)
            next_beat += 1
        if take and results_valid.value:
            raw_rows.append(results_payload.value.to_unsigned())
        await FallingEdge(dut.clk)
        cycle += 1
        assert cycle < timeout, f"timeout: {next_beat}/{n_beats} beats, {len(raw_rows)}/{n_rows_expected} rows"

    operands_valid.value = 0
    results_ready.value = 1
    for _ in range(8):  # longer than the pipeline latency
        await FallingEdge(dut.clk)
        assert not results_valid.value, "the array produced more result rows than tiles"

    rows_out = np.array([tb.unpack(w & row_mask, acc_width, cols) for w in raw_rows], dtype=np.int64)
    rows_out = rows_out.reshape(len(raw_rows), cols)
    meta = [w >> row_bits for w in raw_rows]
    tb.save_outputs(
        rows=rows_out,
        index=np.array([m & ((1 << index_bits) - 1) for m in meta], dtype=np.int64),
        last=np.array([(m >> index_bits) & 1 for m in meta], dtype=np.int64),
        overflow=np.array([(m >> (index_bits + 1)) & 1 for m in meta], dtype=np.int64),
        sticky_overflow=np.array(int(dut.overflow.value)),
        accept_cycle=np.array(accept_cycle, dtype=np.int64),
        cycles=np.array(cycle),
    )
