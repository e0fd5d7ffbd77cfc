"""The verification harness (sim/harness.py) on a toy unit: it passes when the
unit is right and reports failure when the unit is wrong."""


import numpy as np
import pytest
from amaranth import Module, Mux, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sim import tb
from sim.harness import CocotbTestFailure, run_cocotb, to_signed, to_unsigned
from tests.support import BENCHES

TB_DIVIDE = BENCHES / "tb_divide_by_4.py"
WIDTH = 8


class DivideBy4(wiring.Component):
    """y = tdiv(x, 4) registered (one cycle latency); ``flooring=True`` is the classic bug
    (arithmetic shift, rounding toward minus infinity)."""

    def __init__(self, width=WIDTH, flooring=False):
        self._flooring = flooring
        super().__init__({"x": In(signed(width)), "y": Out(signed(width))})

    def elaborate(self, platform):
        m = Module()
        if self._flooring:
            m.d.sync += self.y.eq(self.x >> 2)
        else:
            m.d.sync += self.y.eq((self.x + Mux(self.x < 0, 3, 0)) >> 2)
        return m


def all_int8():
    return np.arange(-2 ** (WIDTH - 1), 2 ** (WIDTH - 1), dtype=np.int64)


def test_correct_unit_passes():
    x = all_int8()
    run = run_cocotb(DivideBy4(), "divide_by_4", TB_DIVIDE, vectors={"x": x},
                     params={"width": WIDTH})
    assert run.tests == 1 and run.failed == 0
    expected = np.sign(x) * (np.abs(x) // 4)
    np.testing.assert_array_equal(run.outputs["y"], expected)


def test_flooring_unit_is_reported_as_failure():
    x = all_int8()
    with pytest.raises(CocotbTestFailure, match="wrong quotients"):
        run_cocotb(DivideBy4(flooring=True), "divide_by_4_floor", TB_DIVIDE,
                   vectors={"x": x}, params={"width": WIDTH})


def test_unknown_testcase_is_reported_as_failure():
    with pytest.raises(CocotbTestFailure):
        run_cocotb(DivideBy4(), "divide_by_4", TB_DIVIDE, testcase="no_such_test",
                   vectors={"x": all_int8()}, params={"width": WIDTH})


def test_signed_helpers():
    assert to_signed(0xFF, 8) == -1 and to_signed(0x7F, 8) == 127 and to_signed(0x80, 8) == -128
    assert to_unsigned(-1, 8) == 0xFF and to_unsigned(-128, 8) == 0x80
    with pytest.raises(ValueError):
        to_unsigned(256, 8)
    values = [-3, 0, 127, -128]
    assert tb.unpack(tb.pack(values, 8), 8, 4) == values


def test_verilog_text_design_and_build_cache():
    """Verilog text works as a design, and an unchanged design is not rebuilt."""
    from sim.harness import verilog_of

    text = verilog_of(DivideBy4(), "divide_by_4")
    x = all_int8()[::7]
    first = run_cocotb(text, "divide_by_4", TB_DIVIDE, vectors={"x": x}, params={"width": WIDTH})
    again = run_cocotb(text, "divide_by_4", TB_DIVIDE, vectors={"x": x}, params={"width": WIDTH})
    assert again.build_dir == first.build_dir and not again.built
    np.testing.assert_array_equal(again.outputs["y"], np.sign(x) * (np.abs(x) // 4))
