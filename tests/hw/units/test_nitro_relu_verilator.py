"""NitroRelu and NitroReluBackward on Verilator via cocotb: bit-exact against
golden/ (every slope, selected at run time; every 8-bit input; random and
corner-case back-propagated errors), under random stalls, and one result per
cycle (N results in N + latency cycles)."""

from tests.support import units as U


def test_nitro_relu_verilator(rng):
    case = U.relu_case(rng, reps=5)
    assert U.count_vectors(case) >= 10_000
    U.run_on_verilator(case, "rtl_nitro_relu")


def test_nitro_relu_backward_verilator(rng):
    case = U.relu_backward_case(rng, 12000)
    assert U.count_vectors(case) >= 10_000
    U.run_on_verilator(case, "rtl_nitro_relu_backward")
