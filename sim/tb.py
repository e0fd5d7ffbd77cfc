"""Helpers for cocotb test modules (the code that runs *inside* the simulator).

A cocotb test module started by :func:`sim.harness.run_cocotb` receives its
data from the pytest side through three environment variables, read here:

* :func:`vectors` -- the ``vectors=`` arrays given to ``run_cocotb`` (a
  ``.npz`` file, loaded once and cached);
* :func:`params` -- the ``params=`` dict given to ``run_cocotb`` (JSON);
* :func:`save_outputs` -- arrays written here come back to pytest as
  ``run.outputs`` (a ``.npz`` file), so that the golden comparison can be done
  in pytest with the full golden model at hand.

Bit-level helpers: top-level Verilog ports lose their signedness and
Amaranth joins arrays/structs into one flat port, so values cross the port
boundary as unsigned integers.  :func:`to_signed`, :func:`to_unsigned`,
:func:`pack` and :func:`unpack` convert between those and Python/NumPy
integers (element 0 of an array sits in the least significant bits, like
``amaranth.lib.data.ArrayLayout``).

:func:`start_clock_and_reset` starts a clock on ``clk`` and pulses Amaranth's
synchronous, active-high ``rst``.

This module imports only NumPy and (inside the coroutine) cocotb, so it is
cheap to import in the simulator process.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache

import numpy as np

__all__ = [
    "VECTORS_ENV", "PARAMS_ENV", "OUTPUTS_ENV",
    "vectors", "params", "save_outputs",
    "to_signed", "to_unsigned", "pack", "unpack", "pack_rows",
    "start_clock_and_reset",
]

#: Environment variable holding the path of the input ``.npz`` file.
VECTORS_ENV = "NITROD_VECTORS"
#: Environment variable holding the JSON-encoded parameters.
PARAMS_ENV = "NITROD_PARAMS"
#: Environment variable holding the path where :func:`save_outputs` writes.
OUTPUTS_ENV = "NITROD_OUTPUTS"


# --------------------------------------------------------------------------- data in/out

@lru_cache(maxsize=1)
def vectors() -> dict[str, np.ndarray]:
    """The arrays passed as ``run_cocotb(..., vectors={...})`` (empty if none)."""
    path = os.environ.get(VECTORS_ENV)
    if not path:
        return {}
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


@lru_cache(maxsize=1)
def params() -> dict:
    """The dict passed as ``run_cocotb(..., params={...})`` (empty if none)."""
    text = os.environ.get(PARAMS_ENV)
    return json.loads(text) if text else {}


def save_outputs(**arrays) -> None:
    """Send arrays back to pytest; they appear as ``run.outputs[name]``.

    Call it once per simulation run (a second call replaces the first).
    Arrays must be numeric (no Python objects); values wider than 64 bits
    must be split before saving.
    """
    path = os.environ.get(OUTPUTS_ENV)
    if not path:
        raise RuntimeError(f"{OUTPUTS_ENV} is not set: not started by sim.harness.run_cocotb?")
    np.savez(path, **{name: np.asarray(value) for name, value in arrays.items()})


# --------------------------------------------------------------------------- bit helpers

def to_signed(value: int, width: int) -> int:
    """Read ``width`` bits of ``value`` as two's complement: ``to_signed(0xFF, 8) == -1``."""
    value = int(value) & ((1 << width) - 1)
    return value - (1 << width) if value >> (width - 1) else value


def to_unsigned(value: int, width: int) -> int:
    """Two's complement bit pattern of ``value`` in ``width`` bits: ``to_unsigned(-1, 8) == 255``.

    Raises ``ValueError`` if ``value`` fits neither the signed nor the unsigned range.
    """
    value = int(value)
    if not -(1 << (width - 1)) <= value < (1 << width):
        raise ValueError(f"{value} does not fit in {width} bits")
    return value & ((1 << width) - 1)


def pack(values, width: int) -> int:
    """Pack a sequence of integers into one word, element 0 in the low bits.

    This is the bit layout of ``amaranth.lib.data.ArrayLayout(shape, len(values))``
    with a ``width``-bit element shape, signed or unsigned.
    """
    word = 0
    mask = (1 << width) - 1
    for i, v in enumerate(values):
        word |= (int(v) & mask) << (i * width)
    return word


def unpack(word: int, width: int, count: int, signed: bool = True) -> list[int]:
    """Inverse of :func:`pack`: ``count`` fields of ``width`` bits from ``word``."""
    word = int(word)
    mask = (1 << width) - 1
    fields = [(word >> (i * width)) & mask for i in range(count)]
    return [to_signed(f, width) for f in fields] if signed else fields


def pack_rows(matrix, width: int) -> list[int]:
    """:func:`pack` each row of a 2-D integer array: one word per row."""
    return [pack(row, width) for row in np.asarray(matrix).tolist()]


# --------------------------------------------------------------------------- clock/reset

async def start_clock_and_reset(dut, period_ns: int = 10, reset_cycles: int = 2):
    """Start a clock on ``dut.clk`` and hold ``dut.rst`` high for ``reset_cycles`` edges.

    Returns after the falling edge that follows reset release, so the caller can
    set inputs and then ``await RisingEdge(dut.clk)`` in the usual pattern.
    """
    from cocotb.clock import Clock
    from cocotb.triggers import FallingEdge, RisingEdge

    Clock(dut.clk, period_ns, unit="ns").start()
    dut.rst.value = 1
    for _ in range(reset_cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await FallingEdge(dut.clk)
