"""The boards ``nitrod build`` targets: platform, clocking, Trainer geometry, device resources.

:data:`BOARD` maps a board name to a :class:`Board`:

* the amaranth-boards platform class (imported lazily), the device, the board clock and the
  core clock: a PLL takes the board oscillator to ``target_mhz``
  (:func:`ice40_pll` / :func:`ecp5_pll` compute the divider settings, checked against the
  devices' VCO/PFD ranges);
* the UART (the amaranth-boards ``uart`` resource where the board has a USB serial bridge; the
  OrangeCrab has none, see :data:`ORANGECRAB_FEATHER_UART`), the LEDs and the reset button;
* the :class:`nitrod.isa.Geometry` the Trainer is built with on that board and the default
  network it is sized for;
* the device's resource totals, for the utilisation percentages and the memory fit check
  (:func:`plan_memories`).

Core clocks chosen (documented in each report's ``clock`` field):

==================  ==========  ===========================================  =========
board               oscillator  PLL                                          core clock
==================  ==========  ===========================================  =========
icebreaker          12 MHz      SB_PLL40_PAD, DIVR 0, DIVF 79, DIVQ 5        30 MHz
ulx3s-85f           25 MHz      EHXPLLL, CLKI_DIV 1, CLKFB_DIV 4, CLKOP 6    100 MHz
orangecrab-85f      48 MHz      EHXPLLL, CLKI_DIV 12, CLKFB_DIV 25, CLKOP 6  100 MHz
==================  ==========  ===========================================  =========

Memory fit
----------
:func:`plan_memories` maps every memory (width x depth) onto the device's block RAMs at their
real granularity (iCE40 EBR: 256x16, 512x8, 1024x4 or 2048x2; iCE40 SPRAM: 16384x16; ECP5
DP16KD: 512x36, 1024x18, 2048x9, 4096x4, 8192x2, 16384x1), taking for each memory the
configuration that needs the fewest blocks, and on the iCE40 the assignment of memories to
EBR or SPRAM that fits (optimistic: any memory may go to SPRAM).  Memories are never placed
in distributed RAM or flip-flops by this estimate, so it is conservative for tiny memories,
except on the ECP5 for memories of at most :data:`ECP5_LUTRAM_DEPTH` words, which Yosys maps to
distributed RAM (TRELLIS_DPR16X4, 16 x 4 bits each: the MAC array's result FIFO, 7 x 389 bits
on the 8 x 8, takes 98 of them and no DP16KD) and which take no block RAM here, and for the
memories the core itself sends there (the Trainer's ``distributed_memories``: PROG of at most
64 words and the row FIFO, a Yosys ``ram_style`` set by boards/build.py; the first check below
sees PROG's through ``Trainer.distributed_regions``).
The board top's own block RAM (the host link's WRITE buffer: 2 EBR on the iCE40, distributed
RAM on the ECP5) is reserved first.

``nitrod build`` checks twice, both before synthesis: on the geometry's regions
(:func:`trainer_memories`: a quick refusal, before the core is even constructed), then on the
memories of the elaborated core (:func:`core_memories`, which also sees, for example, the
Trainer's internal FIFO).  For the stand-in core and the Trainer of 2026-11 the second
estimate equals the block RAM nextpnr places (iCEBreaker stand-in 18 EBR; ECP5 Trainer 202
DP16KD; in 2026-12 the Trainer with ``act_depth=8192``, PROG and the row FIFO in distributed
RAM: 153 DP16KD; LABEL too: 152).
"""

from __future__ import annotations

import importlib
import itertools
import math
from dataclasses import dataclass, field, replace

from nitrod.isa import Geometry, Region

__all__ = [
    "Board", "BOARD", "board_names", "get_board", "FitError", "Memory", "trainer_memories",
    "plan_memories", "check_fit", "core_memories", "board_geometry", "network_max_batch",
    "ice40_pll", "ecp5_pll", "ORANGECRAB_FEATHER_UART",
]


class FitError(ValueError):
    """The requested memories cannot fit the device's block RAM (the message says why)."""

    def __init__(self, message, plan=None):
        super().__init__(message)
        self.plan = plan


# --------------------------------------------------------------------------
# PLLs
# --------------------------------------------------------------------------

def ice40_pll(f_in_mhz: float, f_out_mhz: float) -> dict:
    """SB_PLL40 settings (SIMPLE feedback) giving the closest frequency to ``f_out_mhz``.

    ``f_out = f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)``, with the PFD ``f_in / (DIVR + 1)``
    in 10..133 MHz and the VCO ``PFD * (DIVF + 1)`` in 533..1066 MHz (iCE40 sysCLOCK guide,
    as icepll checks).  Returns ``{"DIVR", "DIVF", "DIVQ", "FILTER_RANGE", "f_out_mhz",
    "vco_mhz"}``.
    """
    best = None
    for divr in range(16):
        pfd = f_in_mhz / (divr + 1)
        if not 10 <= pfd <= 133:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533 <= vco <= 1066:
                continue
            for divq in range(1, 7):
                f_out = vco / 2 ** divq
                if not 16 <= f_out <= 275:
                    continue
                err = abs(f_out - f_out_mhz)
                if best is None or err < best[0] - 1e-9:
                    best = (err, divr, divf, divq, f_out, vco, pfd)
    if best is None:
        raise ValueError(f"no iCE40 PLL setting for {f_in_mhz} -> {f_out_mhz} MHz")
    _, divr, divf, divq, f_out, vco, pfd = best
    filter_range = (1 if pfd < 17 else 2 if pfd < 26 else 3 if pfd < 44 else
                    4 if pfd < 66 else 5 if pfd < 101 else 6)
    return {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "FILTER_RANGE": filter_range,
            "f_out_mhz": round(f_out, 6), "vco_mhz": round(vco, 6)}


def ecp5_pll(f_in_mhz: float, f_out_mhz: float) -> dict:
    """EHXPLLL settings (feedback from CLKOP) giving the closest frequency to ``f_out_mhz``.

    ``f_out = f_in / CLKI_DIV * CLKFB_DIV``, PFD ``f_in / CLKI_DIV`` in 3.125..400 MHz, VCO
    ``f_out * CLKOP_DIV`` in 400..800 MHz (as ecppll checks; a VCO nearest 600 MHz is preferred).
    ``CLKOP_CPHASE`` is ``(CLKOP_DIV - 1) // 2`` as ecppll writes for 0 degrees.
    """
    best = None
    for clki_div in range(1, 129):
        pfd = f_in_mhz / clki_div
        if not 3.125 <= pfd <= 400:
            continue
        for clkfb_div in range(1, 81):
            f_out = pfd * clkfb_div
            for clkop_div in range(1, 129):
                vco = f_out * clkop_div
                if not 400 <= vco <= 800:
                    continue
                key = (round(abs(f_out - f_out_mhz), 9), abs(vco - 600))
                if best is None or key < best[0]:
                    best = (key, clki_div, clkfb_div, clkop_div, f_out, vco)
    if best is None:
        raise ValueError(f"no ECP5 PLL setting for {f_in_mhz} -> {f_out_mhz} MHz")
    _, clki_div, clkfb_div, clkop_div, f_out, vco = best
    return {"CLKI_DIV": clki_div, "CLKFB_DIV": clkfb_div, "CLKOP_DIV": clkop_div,
            "CLKOP_CPHASE": (clkop_div - 1) // 2, "CLKOP_FPHASE": 0,
            "f_out_mhz": round(f_out, 6), "vco_mhz": round(vco, 6)}


# --------------------------------------------------------------------------
# Boards
# --------------------------------------------------------------------------

#: The OrangeCrab has no USB-serial bridge (its USB goes straight to the FPGA).  The UART
#: uses the Feather header's serial pins, as the Feather convention and LiteX's OrangeCrab
#: target do: RX on pin "0" (ball N17), TX on pin "1" (ball M18), 3.3 V.  Connect a 3.3 V
#: USB-serial adapter: adapter TX -> pin 0, adapter RX -> pin 1, GND -> GND.
ORANGECRAB_FEATHER_UART = {"rx": "0", "tx": "1", "conn": ("io", 0), "balls": ("N17", "M18")}


@dataclass(frozen=True)
class Board:
    name: str
    platform_module: str            # amaranth_boards module
    platform_class: str
    family: str                     # "ice40" | "ecp5"
    device: str                     # human-readable device / package / speed
    clock_resource: str             # amaranth-boards resource name of the oscillator
    clock_mhz: float
    target_mhz: float               # core clock (PLL output); == clock_mhz without a PLL
    use_pll: bool
    geometry: Geometry
    network: dict
    resources: dict                 # device totals: luts, ffs, dsp, bram, spram
    bram_bits: int                  # bits per block RAM (EBR 4096, DP16KD 18432)
    spram_bits: int = 0             # bits per SPRAM (iCE40UP: 16384 x 16)
    uart: str = "uart"              # "uart" resource, or "feather" (ORANGECRAB_FEATHER_UART)
    uart_note: str = ""
    leds: dict = field(default_factory=dict)   # role -> (resource, number, subsignal or None)
    reset_button: tuple | None = None          # (resource, number)
    memory_core_words: int = 1024  # block RAM words (32 bits) of the stand-in "memory" core
    link_max_burst: int = 64
    link_bram_blocks: int = 0       # block RAMs the host link's WRITE buffer takes
    #: the core ``--core trainer`` builds: ``module.Class``, constructed as
    #: ``Class(geometry, **trainer_params)``
    trainer: str = "hw.trainer.Trainer"
    trainer_params: dict = field(default_factory=dict)   # extra Trainer(...) keyword arguments
    synth_opts: str = ""
    notes: tuple = ()

    def platform(self):
        """A new instance of the board's amaranth-boards platform (with the UART if added)."""
        mod = importlib.import_module(self.platform_module)
        plat = getattr(mod, self.platform_class)()
        if self.uart == "feather":
            from amaranth.build import Attrs
            from amaranth_boards.resources import UARTResource
            u = ORANGECRAB_FEATHER_UART
            plat.add_resources([UARTResource(0, rx=u["rx"], tx=u["tx"], conn=u["conn"],
                                             attrs=Attrs(IO_TYPE="LVCMOS33", PULLMODE="UP"))])
        return plat

    def pll(self):
        """The PLL settings for ``target_mhz`` (``None`` without a PLL)."""
        if not self.use_pll:
            return None
        if self.family == "ice40":
            return ice40_pll(self.clock_mhz, self.target_mhz)
        return ecp5_pll(self.clock_mhz, self.target_mhz)

    def core_mhz(self):
        """The actual core clock frequency (the PLL's output, or the oscillator)."""
        pll = self.pll()
        return pll["f_out_mhz"] if pll else self.clock_mhz


# iCE40UP5K-SG48: 5,280 logic cells, 8 SB_MAC16, 30 EBR of 4 kbit, 4 SPRAM of 256 kbit.
_UP5K = {"luts": 5280, "ffs": 5280, "dsp": 8, "bram": 30, "spram": 4}
# LFE5U-85F: 83,640 LUT4 / FFs, 156 MULT18X18D, 208 DP16KD of 18 kbit, no SPRAM.
_ECP5_85F = {"luts": 83640, "ffs": 83640, "dsp": 156, "bram": 208, "spram": 0}

#: iCEBreaker geometry: the programs' tiles and words of a 2 x 2 array, 16-bit weights, 36-bit
#: accumulators and SGD divisor (the iCE40 unit parameters of boards.synth_unit.TARGET_PARAMS),
#: run by the SerialTrainer (hw/serial_trainer.py: one multiplier, one serial divider).  The
#: digits MLP 64-100-50-10 at batch 32 needs (nitrod.compiler) ACT 8,608 words, WGT 7,450, ERR
#: 1,760, CODE 1,600, LABEL 32, PROG 13.  Memories (SerialTrainer.region_memories, checked by
#: the fit check): ACT (18-bit words) and WGT (32-bit) 16 K words each, two SPRAMs each; ERR
#: 1,792 words of 48 bits 21 EBR; CODE 2,048 x 4 bits 2 EBR; PROG 32 instructions as 32-bit
#: chunk slots (512 x 32) 4 EBR; LABEL 256 bytes 1 EBR; the host link 2 EBR: 30 of 30 EBR, 4 of
#: 4 SPRAM.  ERR limits the batch (55 words a sample): batch 64 would need 42 EBR for it.
ICEBREAKER_GEOMETRY = Geometry(
    side=2, act_depth=16384, wgt_depth=16384, err_depth=1792, code_depth=2048,
    label_depth=256, prog_depth=32, wgt_width=16, acc_width=36, d_g_width=36)

#: ECP5-85F geometry: the 8 x 8 array with nitrod.isa.Geometry's widths.  Geometry()'s own
#: depths need 214 DP16KD (> 208: ACT 64 + WGT 128 + ERR 22 + PROG 11 ...).  MNIST
#: 784-100-50-10 at batch 64 needs (nitrod.compiler, 2026-11) ACT 16,000 words, WGT 11,672,
#: ERR 960, CODE 832, LABEL 64, PROG 13: WGT is cut to 12,288 words (96 DP16KD), the rest
#: keeps the defaults except PROG (64 instructions): 196 of 208 DP16KD.
ECP5_GEOMETRY = Geometry(side=8, act_depth=16384, wgt_depth=12288, err_depth=2048,
                         code_depth=2048, label_depth=256, prog_depth=64)


def network_spec(board: "Board"):
    """The board's default network (``board.network["layers"]``) as a golden NetworkSpec (a
    square input as one channel of side x side)."""
    from golden.network import NetworkSpec

    sizes = board.network["layers"]
    side = math.isqrt(sizes[0])
    shape = (1, side, side) if side * side == sizes[0] else (1, 1, sizes[0])
    return NetworkSpec(input_shape=shape, classes=sizes[-1],
                       layers=tuple(f"l{n}" for n in sizes[1:-1]))


def network_max_batch(board: "Board", geometry: Geometry | None = None, limit: int = 1024):
    """Largest batch of ``board.network`` that nitrod.compiler lays out in ``geometry``.

    ``None`` if the compiler cannot be imported or refuses even a batch of 1 (the reason is
    then in the second element): returns ``(batch or None, reason or None)``.
    """
    geometry = geometry or board.geometry
    try:
        from nitrod.compiler import CompileError, compile_mlp
        spec = network_spec(board)
    except Exception as exc:                       # the compiler is optional here
        return None, f"nitrod.compiler not available ({type(exc).__name__})"

    def fits(batch):
        try:
            compile_mlp(spec, geometry, batch)
            return True, None
        except CompileError as exc:
            return False, str(exc)
        except Exception as exc:                  # a compiler under construction
            return False, f"{type(exc).__name__}: {exc}"

    ok, reason = fits(1)
    if not ok:
        return None, reason
    lo, hi = 1, 2
    while hi <= limit and fits(hi)[0]:
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:                            # fits(lo), not fits(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid)[0] else (lo, mid)
    return lo, fits(lo + 1)[1] if lo < limit else None


#: What the two LFE5U-85F boards share: the core clock, the Trainer geometry and default network,
#: the device's resources, the stand-in core's 8 DP16KD and the link's buffer (distributed RAM).
_ECP5_85F_BOARD = dict(
    family="ecp5",
    target_mhz=100.0,
    use_pll=True,
    geometry=ECP5_GEOMETRY,
    network={"name": "MNIST MLP", "dataset": "mnist5k", "layers": [784, 100, 50, 10]},
    resources=_ECP5_85F,
    bram_bits=18432,
    memory_core_words=4096,
    link_max_burst=64,
    # each MAC element's MULT18X18D with its own input, pipeline and output registers
    # (hw/mac_array.py: "ecp5_dsp"); Yosys's mapping ("dsp") leaves them in the fabric.
    # ACT, WGT, ERR and CODE in DP16KD instantiated by hand, their output registers the shared
    # bank registers (hw/ecp5_bram.py); Yosys's mapping never uses them
    trainer_params={"mac_options": {"multiplier": "ecp5_dsp"}, "memory_block": "dp16kd"},
)


BOARD: dict[str, Board] = {
    "icebreaker": Board(
        name="icebreaker",
        platform_module="amaranth_boards.icebreaker",
        platform_class="ICEBreakerPlatform",
        family="ice40",
        device="iCE40UP5K-SG48",
        clock_resource="clk12",
        clock_mhz=12.0,
        target_mhz=30.0,
        use_pll=True,
        geometry=ICEBREAKER_GEOMETRY,
        network={"name": "digits MLP", "dataset": "digits", "layers": [64, 100, 50, 10]},
        resources=_UP5K,
        bram_bits=4096,
        spram_bits=262144,
        uart="uart",
        uart_note="FTDI channel B: RX pin 6, TX pin 9 (amaranth-boards 'uart' 0)",
        leds={"busy": ("led_g", 0, None), "link": ("led_r", 0, None)},
        reset_button=("button", 0),
        memory_core_words=2048,           # 16 EBR (256 x 16 each)
        link_max_burst=255,               # 2 EBR for any depth up to 256
        link_bram_blocks=2,
        # one multiply-accumulate at a time, its multiplier on the SB_MAC16s (Yosys's -dsp),
        # ACT and WGT in SB_SPRAM256KA (hw/serial_trainer.py, hw/ice40_spram.py)
        trainer="hw.serial_trainer.SerialTrainer",
        trainer_params={"memory_block": "spram"},
        synth_opts="-dsp",
    ),
    "ulx3s-85f": Board(
        **_ECP5_85F_BOARD,
        name="ulx3s-85f",
        platform_module="amaranth_boards.ulx3s",
        platform_class="ULX3S_85F_Platform",
        device="LFE5U-85F-6BG381",
        clock_resource="clk25",
        clock_mhz=25.0,
        uart="uart",
        uart_note="FTDI FT231X (US1): RX M1, TX L4 (amaranth-boards 'uart' 0)",
        leds={"busy": ("led", 0, None), "link": ("led", 1, None), "alive": ("led", 7, None)},
        reset_button=("button_fire", 0),
    ),
    "orangecrab-85f": Board(
        **_ECP5_85F_BOARD,
        name="orangecrab-85f",
        platform_module="amaranth_boards.orangecrab_r0_2",
        platform_class="OrangeCrabR0_2_85FPlatform",
        device="LFE5U-85F-8MG285",
        clock_resource="clk",
        clock_mhz=48.0,
        uart="feather",
        uart_note=("no USB-serial bridge: 3.3 V UART on the Feather header, RX pin 0 (N17), "
                   "TX pin 1 (M18); use an external USB-serial adapter"),
        leds={"busy": ("rgb_led", 0, "g"), "link": ("rgb_led", 0, "b"),
              "alive": ("rgb_led", 0, "r")},
        reset_button=("button", 0),
    ),
}


def board_names():
    return list(BOARD)


def get_board(name: str) -> Board:
    try:
        return BOARD[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; valid boards: {', '.join(BOARD)}") from None


# --------------------------------------------------------------------------
# Memory fit
# --------------------------------------------------------------------------

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


def trainer_memories(geometry: Geometry, spram_regions=None,
                     distributed_regions=()) -> list[Memory]:
    """The Trainer's memories for ``geometry`` (nitrod.isa's regions, word widths, depths).

    ``spram_regions``: the regions the Trainer can put in iCE40 SPRAM (which Yosys never
    infers: the Trainer must instantiate SB_SPRAM256KA); ``None`` allows every region.
    ``distributed_regions``: the regions the Trainer sends to distributed RAM on the ECP5
    (``Trainer.distributed_regions``), marked ``distributed``.
    """
    def named(region, regions):
        return region in regions or region.name in regions

    out = []
    for region in (Region.PROG, Region.ACT, Region.WGT, Region.ERR, Region.CODE, Region.LABEL):
        ok = spram_regions is None or named(region, spram_regions)
        out.append(Memory(region.name, geometry.word_bits(region), geometry.depth(region),
                          spram_ok=ok, distributed=named(region, distributed_regions)))
    return out


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
    distributed = tuple(f"core.{p}" for p in getattr(core, "distributed_memories", ()))

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


def plan_memories(board: Board, memories: list[Memory], *, reserved_blocks: int | None = None,
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


def check_fit(board: Board, memories: list[Memory], **kwargs) -> dict:
    """:func:`plan_memories`, raising :class:`FitError` if the memories cannot fit."""
    plan = plan_memories(board, memories, **kwargs)
    if not plan["fits"]:
        raise FitError(f"{board.name}: refused before synthesis: {plan['reason']}", plan)
    return plan


def board_geometry(board: Board, side: int | None = None, **overrides) -> Geometry:
    """The board's Geometry, with ``side`` and other fields overridden."""
    geo = board.geometry
    if side is not None:
        overrides["side"] = side
    return replace(geo, **overrides) if overrides else geo

