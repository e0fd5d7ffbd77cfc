"""Will a core's memories fit a board's block RAM?  Checked before synthesis, twice.

:func:`plan_memories` maps every memory (width x depth) onto the device's block RAMs at their
real granularity (iCE40 EBR: 256x16, 512x8, 1024x4 or 2048x2; iCE40 SPRAM: 16384x16; ECP5
DP16KD: 512x36, 1024x18, 2048x9, 4096x4, 8192x2, 16384x1), taking for each memory the
configuration that needs the fewest blocks, and on the iCE40 the assignment of memories to
EBR or SPRAM that fits (optimistic: any memory the core may put in SPRAM goes there).
Memories are never placed in distributed RAM or flip-flops by this estimate, so it is
conservative for tiny memories, except on the ECP5 for memories of at most
:data:`ECP5_LUTRAM_DEPTH` words, which Yosys maps to distributed RAM (TRELLIS_DPR16X4), and for
the memories the core itself sends there (``TrainerCore.distributed_memories``, a Yosys
``ram_style`` set by boards/build.py).  The board top's own block RAM (the host link's WRITE
buffer: 2 EBR on the iCE40, distributed RAM on the ECP5) is reserved first.

``nitrod build`` checks twice, both before synthesis: on the core class's memories for the
geometry (:func:`trainer_memories`: a quick refusal, before the core is even constructed),
then on the memories of the elaborated core (:func:`core_memories`, which also sees, for
example, the Trainer's internal FIFO).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from hw.contract import Geometry

__all__ = ["FitError", "Memory", "trainer_memories", "core_memories", "plan_memories",
           "check_fit", "ECP5_LUTRAM_DEPTH"]


class FitError(ValueError):
    """The requested memories cannot fit the device's block RAM (the message says why)."""

    def __init__(self, message, plan=None):
        super().__init__(message)
        self.plan = plan



@dataclass(frozen=True)
class Memory:
    name: str
    width: int
    depth: int
    spram_ok: bool = True       # may go to iCE40 SPRAM (only if instantiated: never inferred)
    distributed: bool = False   # the core sends it to distributed RAM on the ECP5

    @property
    def bits(self):
        return self.width * self.depth


_EBR_CONFIGS = ((256, 16), (512, 8), (1024, 4), (2048, 2))
_SPRAM_CONFIGS = ((16384, 16),)
_DP16KD_CONFIGS = ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1))


def _blocks(mem: Memory, configs) -> tuple[int, tuple]:
    """Fewest blocks (and the configuration) holding ``mem``."""
    return min(((math.ceil(mem.depth / d) * math.ceil(mem.width / w), (d, w))
                for d, w in configs), key=lambda t: t[0])


def trainer_memories(trainer, geometry: Geometry) -> list[Memory]:
    """The memories of the trainer core class ``trainer`` (a ``TrainerCore``) for
    ``geometry``, from its ``region_memories``, ``SPRAM_REGIONS`` and
    ``distributed_regions``."""
    distributed = trainer.distributed_regions(geometry)
    return [Memory(region.name, width, depth, spram_ok=region in trainer.SPRAM_REGIONS,
                   distributed=region in distributed)
            for region, (width, depth) in trainer.region_memories(geometry).items()]


def core_memories(core, platform=None):
    """The block-RAM candidates of an elaborated ``core``: ``(memories, instantiated)``.

    Elaborates ``core`` (``Fragment.get``) and lists every ``lib.memory.Memory`` in it as a
    :class:`Memory` named by its hierarchy path (never SPRAM: Yosys does not infer it), and
    counts hand-instantiated blocks: ``instantiated = {"bram": n, "spram": n}``
    (SB_RAM40_4K / DP16KD, SB_SPRAM256KA).  The memories below the core's
    ``distributed_memories`` (module paths, as boards/build.py gives them to Yosys) are marked
    ``distributed``.
    """
    from amaranth.hdl import Fragment, Shape
    from amaranth.hdl._ir import Instance
    from amaranth.hdl._mem import MemoryInstance

    found, counts = [], {"bram": 0, "spram": 0}
    distributed = tuple(f"core.{p}" for p in core.distributed_memories)

    def walk(frag, path):
        if isinstance(frag, MemoryInstance):
            data = frag._data
            width = Shape.cast(data.shape).width
            found.append(Memory(path, width, data.depth, spram_ok=False,
                                distributed=any(path == p or path.startswith(p + ".")
                                                for p in distributed)))
        elif isinstance(frag, Instance):
            if frag.type in ("SB_RAM40_4K", "DP16KD", "PDPW16KD"):
                counts["bram"] += 1
            elif frag.type == "SB_SPRAM256KA":
                counts["spram"] += 1
        for sub, name, _ in frag.subfragments:
            walk(sub, f"{path}.{name}")

    walk(Fragment.get(core, platform), "core")
    return found, counts


#: On the ECP5, memories of at most this many words go to distributed RAM (module docstring).
ECP5_LUTRAM_DEPTH = 16


def plan_memories(board, memories: list[Memory], *, reserved_blocks: int | None = None,
                  reserved_spram: int = 0) -> dict:
    """Map ``memories`` onto ``board``'s block RAM (module docstring); never raises.

    Returns ``{"fits", "reason", "bits_needed", "bits_available", "bram_needed",
    "bram_available", "spram_needed", "spram_available", "reserved_bram", "memories": [...]}``;
    each memory entry gives its bits, the block kind it went to, the blocks and configuration.
    """
    reserved = board.link_bram_blocks if reserved_blocks is None else reserved_blocks
    def lutram(m):
        return board.family == "ecp5" and (m.depth <= ECP5_LUTRAM_DEPTH or m.distributed)

    distributed = [m for m in memories if lutram(m)]
    memories = [m for m in memories if not lutram(m)]
    bram_total = board.resources["bram"]
    spram_total = board.resources.get("spram", 0)
    bits_available = bram_total * board.bram_bits + spram_total * board.spram_bits
    bits_needed = (sum(m.bits for m in memories) + reserved * board.bram_bits
                   + reserved_spram * board.spram_bits)
    bram_configs = _EBR_CONFIGS if board.family == "ice40" else _DP16KD_CONFIGS
    bram_cost = [_blocks(m, bram_configs) for m in memories]
    spram_cost = [_blocks(m, _SPRAM_CONFIGS) for m in memories] if spram_total else None

    best = None
    choices = itertools.product((False, True), repeat=len(memories)) if spram_total else \
        [(False,) * len(memories)]
    for in_spram in choices:
        bram = reserved + sum(c[0] for c, s in zip(bram_cost, in_spram) if not s)
        if any(s and not mem.spram_ok for mem, s in zip(memories, in_spram)):
            continue
        spram = reserved_spram + (sum(c[0] for c, s in zip(spram_cost, in_spram) if s)
                                  if spram_total else 0)
        fits = bram <= bram_total and spram <= spram_total
        # Prefer a fitting plan, then the least over-subscription, then fewest EBR.
        over = max(0, bram - bram_total) / max(bram_total, 1) + \
            max(0, spram - spram_total) / max(spram_total, 1)
        key = (not fits, over, bram, spram)
        if best is None or key < best[0]:
            best = (key, in_spram, bram, spram, fits)
    _, in_spram, bram, spram, fits = best
    entries = []
    for mem, s, bc in zip(memories, in_spram, bram_cost):
        blocks, (d, w) = spram_cost[memories.index(mem)] if s else bc
        entries.append({"name": mem.name, "width": mem.width, "depth": mem.depth,
                        "bits": mem.bits, "kind": "SPRAM" if s else
                        ("EBR" if board.family == "ice40" else "DP16KD"),
                        "blocks": blocks, "config": f"{d}x{w}"})
    entries += [{"name": mem.name, "width": mem.width, "depth": mem.depth, "bits": mem.bits,
                 "kind": "distributed", "blocks": 0, "config": "-"} for mem in distributed]
    kind = "EBR" if board.family == "ice40" else "DP16KD"
    reason = None
    if bits_needed > bits_available:
        reason = (f"the memories need {bits_needed:,} bits of block RAM but the "
                  f"{board.device} has {bits_available:,}")
    elif not fits:
        parts = []
        if bram > bram_total:
            parts.append(f"{bram} {kind} > {bram_total}")
        if spram_total and spram > spram_total:
            parts.append(f"{spram} SPRAM > {spram_total}")
        biggest = sorted(entries, key=lambda e: -e["blocks"])[:3]
        reason = (f"the memories need {' and '.join(parts)} on the {board.device} "
                  f"(largest: " + ", ".join(f"{e['name']} {e['depth']}x{e['width']} bits = "
                                            f"{e['blocks']} {e['kind']}" for e in biggest) + ")")
    return {
        "fits": reason is None,
        "reason": reason,
        "bits_needed": bits_needed,
        "bits_available": bits_available,
        "bram_needed": bram,
        "bram_available": bram_total,
        "spram_needed": spram,
        "spram_available": spram_total,
        "reserved_bram": reserved,
        "reserved_spram": reserved_spram,
        "memories": entries,
    }


def check_fit(board, memories: list[Memory], **kwargs) -> dict:
    """:func:`plan_memories`, raising :class:`FitError` if the memories cannot fit."""
    plan = plan_memories(board, memories, **kwargs)
    if not plan["fits"]:
        raise FitError(f"{board.name}: refused before synthesis: {plan['reason']}", plan)
    return plan
