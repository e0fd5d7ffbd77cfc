"""SgdUpdate (18-bit weights, 48-bit gradients, divisors up to 2**40) on
Verilator via cocotb: bit-exact against golden/ on more than 10,000 random
vectors plus corner cases, under random stalls, the sticky overflow flag per
segment, and one result per cycle (N results in N + latency cycles)."""

from tests.support import units as U


def test_sgd_update_verilator(rng):
    case = U.sgd_case(rng, 12000)
    assert U.count_vectors(case) >= 10_000
    U.run_on_verilator(case, "rtl_sgd_update")
