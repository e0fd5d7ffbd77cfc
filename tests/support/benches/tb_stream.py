"""cocotb test module (runs inside the simulator) for any unit with one
``i`` input stream and one ``o`` output stream (tests/test_rtl_*.py).

Params (JSON): ``in_width``, ``out_width`` (payload widths in bits),
``segments`` (list of ``{"cfg": {port: value}, "n": items, "mode": "full"|"stall"}``),
``flags`` (1-bit output ports read at the end of each segment), ``clear``
(name of a port pulsed before each segment, or null), ``seed``.
Vectors: the packed input payloads, split into 32-bit limbs ``in_l0``, ``in_l1``, ...

Per segment the constant ports are loaded, then the items are streamed in; in
``"full"`` mode the input is always valid and the output always ready, in
``"stall"`` mode both are randomly withheld.  Outputs (``out_l<k>`` limbs),
the cycles each segment took (``cycles``) and the flags come back to pytest,
which compares them with the golden model.
"""

import random

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, ReadOnly

from sim import tb

LIMB = 32


def _join(limbs, k):
    return sum(int(limbs[j][k]) << (LIMB * j) for j in range(len(limbs)))


@cocotb.test()
async def stream_unit(dut):
    p = tb.params()
    v = tb.vectors()
    n_in_limbs = (p["in_width"] + LIMB - 1) // LIMB
    n_out_limbs = (p["out_width"] + LIMB - 1) // LIMB
    in_limbs = [v[f"in_l{j}"].tolist() for j in range(n_in_limbs)]
    rnd = random.Random(p.get("seed", 1))
    clear = p.get("clear")
    flags = p.get("flags", [])

    await tb.start_clock_and_reset(dut)
    out_words, cycles_per_seg, flag_values = [], [], {f: [] for f in flags}
    base = 0
    for seg in p["segments"]:
        for name, value in seg["cfg"].items():
            getattr(dut, name).value = int(value)
        if clear:
            getattr(dut, clear).value = 1
            await FallingEdge(dut.clk)
            getattr(dut, clear).value = 0
        n = seg["n"]
        stall = seg["mode"] == "stall"
        got = i = cycles = 0
        while got < n:
            valid = i < n and (not stall or rnd.random() < 0.7)
            ready = (not stall) or rnd.random() < 0.6
            dut.i__valid.value = int(valid)
            if i < n:
                dut.i__payload.value = _join(in_limbs, base + i)
            dut.o__ready.value = int(ready)
            await ReadOnly()
            i_ready = int(dut.i__ready.value)
            if ready and int(dut.o__valid.value):
                out_words.append(dut.o__payload.value.to_unsigned())
                got += 1
            await FallingEdge(dut.clk)
            cycles += 1
            if valid and i_ready:
                i += 1
            assert cycles < 10 * n + 100, "the unit stopped producing results"
        dut.i__valid.value = 0
        for f in flags:
            flag_values[f].append(int(getattr(dut, f).value))
        cycles_per_seg.append(cycles)
        base += n

    mask = (1 << LIMB) - 1
    out = {f"out_l{j}": np.array([(w >> (LIMB * j)) & mask for w in out_words], dtype=np.int64)
           for j in range(n_out_limbs)}
    out["cycles"] = np.array(cycles_per_seg, dtype=np.int64)
    for f, vals in flag_values.items():
        out[f"flag_{f}"] = np.array(vals, dtype=np.int64)
    tb.save_outputs(**out)
