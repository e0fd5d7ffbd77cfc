"""LossError (exact 9-bit error) on Verilator via cocotb: bit-exact against golden/ on more than
10,000 random vectors plus corner cases, under random stalls, and one result
per cycle (N results in N + latency cycles)."""

from cocotb_units import units as U


def test_loss_error_verilator(rng):
    case = U.loss_case(rng, 1100)
    assert U.count_vectors(case) >= 10_000
    U.run_on_verilator(case, "rtl_loss_error")
