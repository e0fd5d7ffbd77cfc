"""The Trainer: the parallel core (an S x S MAC array and S post-processing lanes), the
ECP5 boards' core.  :mod:`.top` joins its components: :mod:`.sequencer`,
:mod:`.operand_fetch`, :mod:`.front`, :mod:`.writer` and :mod:`.host_access` (with the
shared :class:`hw.trainers.host_port.HostPort`)."""

from .top import Trainer, default_row_cycles

__all__ = ["Trainer", "default_row_cycles"]
