"""TruncDivider (48-bit dividend, run-time divisor up to 2**31) on Verilator via cocotb: bit-exact against golden/ on more than
10,000 random vectors plus corner cases, under random stalls, and one result
per cycle (N results in N + latency cycles)."""

from cocotb_units import units as U


def test_divider_verilator(rng):
    case = U.divider_case(rng, 12000)
    assert U.count_vectors(case) >= 10_000
    U.run_on_verilator(case, "rtl_divider")


def test_divider_runtime_shift_split_multiplier_verilator(rng):
    """The other divider variant: run-time shift (barrel shifter, N+1-bit m) with the
    deeper pipeline of 18-bit limb products (latency 6)."""
    case = U.divider_case(rng, 12000, runtime_shift=True, mul_limb=18, method="reciprocal")
    assert U.count_vectors(case) >= 10_000 and case.latency == 6
    U.run_on_verilator(case, "rtl_divider_rs_split")
