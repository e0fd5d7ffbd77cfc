"""TruncDivider (48-bit dividend, run-time divisor up to 2**31) on Verilator via cocotb: bit-exact against golden/ on more than
10,000 random vectors plus corner cases, under random stalls, and one result
per cycle (N results in N + latency cycles)."""

from tests.support import units as U


def test_divider_verilator(rng):
    case = U.divider_case(rng, 12000)
    assert U.count_vectors(case) >= 10_000
    U.run_on_verilator(case, "rtl_divider")

