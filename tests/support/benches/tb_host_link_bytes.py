"""cocotb bench of HostLink at one byte per cycle (tests/test_host_link.py::ByteBench).

Params: ``seed``, ``cases`` (fuzz cases; each broken case is followed by a
PING, so frames > cases), ``max_burst``, ``gap`` (idle cycles standing for a
timeout), and the bench's memory geometry.  The cases come from
tb_host_link_model.generate_cases; they are cut into batches that fit the
bench's stimulus and response memories.  Each batch is loaded, run free, and
its response bytes compared with the reference model's, byte for byte.  The
throttling of the two streams changes from batch to batch.  At the end the
target is read back through the link (READ bursts) and saved with the model
of the valid WRITEs.
"""

from __future__ import annotations

import collections

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, RisingEdge, with_timeout

from hw.contract import link as P
from nitrod import link as L
from sim import tb

import tb_host_link_model as hm

GAP_FLAG = 0x8000


def entries_of(items, gap):
    out = []
    for item in items:
        if item is hm.GAP:
            out.append(GAP_FLAG | gap)
        else:
            out.extend(item)
    return out


async def load_stimulus(dut, entries, per_line):
    padded = entries + [0] * (-len(entries) % per_line)
    for line in range(len(padded) // per_line):
        word = 0
        for i, e in enumerate(padded[line * per_line:(line + 1) * per_line]):
            word |= e << (16 * i)
        dut.stim_w_addr.value = line
        dut.stim_w_data.value = word
        dut.stim_w_en.value = 1
        await FallingEdge(dut.clk)
    dut.stim_w_en.value = 0


async def run_batch(dut, entries, expect_len, p, throttle):
    await load_stimulus(dut, entries, p["stim_line_entries"])
    dut.stim_len.value = len(entries)
    dut.in_throttle.value, dut.out_throttle.value = throttle
    dut.go.value = 1
    await FallingEdge(dut.clk)
    dut.go.value = 0
    budget = 4 * (len(entries) + p["gap"] * entries.count(GAP_FLAG | p["gap"]) + 2 * expect_len) + 10_000
    await with_timeout(RisingEdge(dut.done), budget * 10, "ns")
    await FallingEdge(dut.clk)
    n = dut.resp_len.value.to_unsigned()
    data = bytearray()
    per_line = p["resp_line_bytes"]
    for line in range((n + per_line - 1) // per_line):
        dut.resp_r_addr.value = line
        await FallingEdge(dut.clk)
        data.extend(dut.resp_r_data.value.to_unsigned().to_bytes(per_line, "little"))
    return bytes(data[:n])


def first_difference(cases, got):
    pos = 0
    for index, case in enumerate(cases):
        end = pos + len(case.expect)
        if got[pos:end] != case.expect:
            return (f"case {index} ({case.kind}, items {[i if i is hm.GAP else i.hex() for i in case.items]}): "
                    f"expected {case.expect.hex()}, got {got[pos:end].hex()}")
        pos = end
    return f"extra bytes after the last case: {got[pos:pos + 32].hex()}"


@cocotb.test()
async def byte_level_fuzz(dut):
    p = tb.params()
    rng = np.random.default_rng(p["seed"])
    for name in ("stim_w_en", "go", "in_throttle", "out_throttle", "stim_len", "resp_r_addr"):
        getattr(dut, name).value = 0
    await tb.start_clock_and_reset(dut)

    cases, device, intended, rejected = hm.generate_cases(rng, p["cases"], max_burst=p["max_burst"])
    dut._log.info("%d cases, %d frames, %d generated cases rejected",
                  len(cases), sum(c.frames for c in cases), rejected)

    # Final read-back through the link, predicted by the same model.
    readback = []
    for addr in range(0, hm.MEM_WORDS, p["max_burst"]):
        readback.append(L.encode_request(P.CMD_READ, addr, p["max_burst"]))
    readback.append(L.encode_request(P.CMD_READ, hm.REG_CTRL, 3))
    final = [hm.Case("readback", [f], device.feed(f), 1) for f in readback]

    capacity = p["stim_line_entries"] * p["stim_lines"]
    resp_capacity = p["resp_line_bytes"] * p["resp_lines"]
    batches, current, n_entries, n_resp = [], [], 0, 0
    for case in cases:
        k = len(entries_of(case.items, p["gap"]))
        if current and (n_entries + k > capacity or n_resp + len(case.expect) > resp_capacity):
            batches.append(current)
            current, n_entries, n_resp = [], 0, 0
        current.append(case)
        n_entries += k
        n_resp += len(case.expect)
    batches.append(current)
    batches.append(final)

    mismatches = 0
    got = b""
    for index, batch in enumerate(batches):
        entries = [e for case in batch for e in entries_of(case.items, p["gap"])]
        expect = b"".join(case.expect for case in batch)
        throttle = (index & 1, (index >> 1) & 1)
        got = await run_batch(dut, entries, len(expect), p, throttle)
        if got != expect:
            mismatches += 1
            assert False, f"batch {index} (throttle {throttle}): " + first_difference(batch, got)
    dut._log.info("%d batches", len(batches))

    # Decode the read-back from what the hardware sent.
    responses = [r for r in L.ResponseDecoder().feed(got) if isinstance(r, L.Response)]
    assert [r.kind for r in responses] == [P.RSP_DATA] * len(readback), responses
    words = [w for r in responses for w in r.words]
    memory = words[:hm.MEM_WORDS] + [words[hm.MEM_WORDS], words[hm.MEM_WORDS + 2]]
    assert words[hm.MEM_WORDS + 1] == hm.ID_VALUE
    expected_memory = intended.mem + [intended.ctrl, intended.wcount]
    assert int(dut.error_count.value.to_unsigned()) == device.error_count

    counts = collections.Counter(case.kind for case in cases)
    tb.save_outputs(
        frames=sum(c.frames for c in cases), mismatches=mismatches, rejected=rejected,
        repeats=device.repeats, wcount=intended.wcount,
        memory=np.array(memory, np.uint64), expected_memory=np.array(expected_memory, np.uint64),
        kind_names=np.array(sorted(counts)), kind_counts=np.array([counts[k] for k in sorted(counts)]))
