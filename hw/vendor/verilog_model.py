"""Helpers for the behavioural Verilog models of hard blocks (hw/vendor/ecp5_dsp.py, hw/vendor/ecp5_bram.py).

A design that instantiates a device primitive by hand (an ``amaranth.hdl.Instance``) runs in
Verilator with a model of that primitive appended to its Verilog; synthesis gets the design
without it (the primitive is a cell there).
"""

from __future__ import annotations

from typing import Callable

__all__ = ["bus", "with_model"]


def bus(prefix: str, width: int) -> str:
    """``{X17, ..., X0}``: a primitive's per-bit ports as one vector, most significant first."""
    return "{" + ", ".join(f"{prefix}{i}" for i in reversed(range(width))) + "}"


def with_model(verilog_text: str, cell: str, model: Callable[[], str]) -> str:
    """``verilog_text`` plus ``model()`` when the design instantiates ``cell`` and does not
    define it already."""
    if cell in verilog_text and f"module {cell}" not in verilog_text:
        return verilog_text + "\n" + model()
    return verilog_text
