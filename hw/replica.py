"""Replica: flip-flops that copy a register, to split the register's fan-out.

A control flag that steers thousands of flip-flops (the MAC array's accumulate and bank
enables, the transposer's shift) is one net spread over the die; its routing delay grows with
the area it covers.  The fix is to register the flag's *next value* several times, once per
group of loads: each copy holds the same value as the register in every cycle, and drives only
its group.  The same holds for a data register read by many distant elements (the MAC array's
operands of its LUT half-products, one copy per element): a Replica is as wide as ``d``.

A :class:`Replica` is that copy, in a module of its own::

    copy = replica(m, flag_next, "copy")    # flag_next: the D input of the register copied
    ...copy...                              # equals `flag` in every cycle

Why a module: Yosys's ``opt_merge`` folds flip-flops with the same input back into one, and a
``keep`` on the flip-flop cells (which stops it) makes ABC fail in YoWASP's Yosys 0.70.  The
board build marks the modules holding a wire with :data:`REPLICA_ATTR` ``keep_hierarchy``
(:func:`boards.synth_unit.yosys_keep_replicas`), so each copy stays a flip-flop of its own; in
simulation a Replica is simply a register.  The copy has the same reset value as the register
it copies (``init``); a copy of a register without a reset is ``reset_less`` as well (a data
register's copy then adds no load to the reset net).
"""

from __future__ import annotations

from amaranth import Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Replica", "REPLICA_ATTR", "replica", "replicas"]

#: RTLIL attribute on a Replica's output register; the board build keeps the modules holding
#: one as separate hierarchy.
REPLICA_ATTR = "nitrod_replica"


class Replica(wiring.Component):
    """``width`` flip-flops registering ``d`` (reset value ``init``, or no reset with
    ``reset_less``): a copy of the register whose next value is ``d``.

    Ports: ``d`` In(width), ``q`` Out(width) (unsigned; ``.as_signed()`` a signed copy).
    """

    def __init__(self, init: int = 0, width: int = 1, reset_less: bool = False):
        self._init, self._width, self._reset_less = int(init), int(width), bool(reset_less)
        super().__init__({"d": In(self._width), "q": Out(self._width, init=self._init)})

    def elaborate(self, platform):
        m = Module()
        copy = Signal(self._width, init=self._init, reset_less=self._reset_less,
                      attrs={REPLICA_ATTR: 1})
        m.d.sync += copy.eq(self.d)
        m.d.comb += self.q.eq(copy)
        return m


def replica(m: Module, d, name: str, init: int = 0, reset_less: bool = False):
    """One Replica (as wide as ``d``) of the register whose next value is ``d``, added to ``m``
    as submodule ``name``; returns its output (unsigned)."""
    m.submodules[name] = copy = Replica(init, width=len(Value.cast(d)), reset_less=reset_less)
    m.d.comb += copy.d.eq(d)
    return copy.q


def replicas(m: Module, d, count: int, name: str, init: int = 0,
             reset_less: bool = False) -> list:
    """``count`` Replicas of the register whose next value is ``d``, added to ``m`` as
    submodules ``{name}{i}``; returns their outputs."""
    return [replica(m, d, f"{name}{i}", init, reset_less) for i in range(count)]
