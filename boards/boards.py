"""The boards ``nitrod build`` targets: platform, clocking, trainer core and geometry, device.

:data:`BOARD` maps a board name to a :class:`Board`:

* the amaranth-boards platform class (imported when a board is built), the device, the board
  clock and the core clock: a PLL takes the board oscillator to ``target_mhz``
  (boards/pll.py computes the divider settings);
* the UART (the amaranth-boards ``uart`` resource where the board has a USB serial bridge; the
  OrangeCrab has none, see :data:`ORANGECRAB_FEATHER_UART`) and its baud rate, the LEDs and
  the reset button;
* the trainer core (a ``hw.trainers.core.TrainerCore`` class) and the geometry it is built
  with on that board, and the default network it is sized for;
* the device's resource totals, for the utilisation percentages and the memory fit check
  (boards/fit.py).

Core clocks chosen (documented in each report's ``clock`` field):

==================  ==========  ===========================================  =========
board               oscillator  PLL                                          core clock
==================  ==========  ===========================================  =========
icebreaker          12 MHz      SB_PLL40_PAD, DIVR 0, DIVF 79, DIVQ 5        30 MHz
ulx3s-85f           25 MHz      EHXPLLL, CLKI_DIV 1, CLKFB_DIV 4, CLKOP 6    100 MHz
orangecrab-85f      48 MHz      EHXPLLL, CLKI_DIV 12, CLKFB_DIV 25, CLKOP 6  100 MHz
==================  ==========  ===========================================  =========

Baud rates (``Board.baud``: the bitstream's, ``nitrod build --baud`` overrides it; ``nitrod
board train --board`` takes it): the fastest the board's USB-serial bridge takes, at a divisor
of the core clock whose error and receiver margin :func:`hw.link.uart.uart_timing` checks
(a build refuses an unsafe one):

==================  ===========================  =========  =======  =====  ===============
board               bridge                       baud       divisor  error  receiver margin
==================  ===========================  =========  =======  =====  ===============
icebreaker          FT2232H channel B (12 Mbaud  3,000,000  10       0      -4.0 % / +5.6 %
                    max; 3 Mbaud: 12 MHz / 4)
ulx3s-85f           FT231X (3 Mbaud max)         3,000,000  33       -1.0 %  -5.5 % / +4.7 %
orangecrab-85f      none: an external 3.3 V      1,000,000  100      0      -4.9 % / +5.6 %
                    adapter on the Feather pins
                    (1 Mbaud: FT232R, CP2102(N),
                    CH340 all take it)
==================  ===========================  =========  =======  =====  ===============
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace

from hw.contract import Geometry
from hw.trainers.serial_trainer import SerialTrainer
from hw.trainers.trainer import Trainer

from .pll import ecp5_pll, ice40_pll

__all__ = ["Board", "BOARD", "board_names", "get_board", "board_geometry",
           "ORANGECRAB_FEATHER_UART"]



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
    #: a CNN this board's memories hold, for the build report beside the digits ``small`` and
    #: the MNIST CNN (nitrod/board_build.py): name, dataset, input_shape, layers
    cnn_network: dict
    resources: dict                 # device totals: luts, ffs, dsp, bram, spram
    bram_bits: int                  # bits per block RAM (EBR 4096, DP16KD 18432)
    spram_bits: int = 0             # bits per SPRAM (iCE40UP: 16384 x 16)
    uart: str = "uart"              # "uart" resource, or "feather" (ORANGECRAB_FEATHER_UART)
    baud: int = 3_000_000           # the UART's baud rate (the table above)
    uart_note: str = ""
    leds: dict = field(default_factory=dict)   # role -> (resource, number, subsignal or None)
    reset_button: tuple | None = None          # (resource, number)
    memory_core_words: int = 1024  # block RAM words (32 bits) of the stand-in "memory" core
    link_max_burst: int = 64
    link_bram_blocks: int = 0       # block RAMs the host link's WRITE buffer takes
    #: the trainer core ``--core trainer`` builds, as ``trainer(geometry, **trainer_params)``
    trainer: type = Trainer
    trainer_params: dict = field(default_factory=dict)   # extra keyword arguments
    synth_opts: str = ""
    notes: tuple = ()

    def platform(self):
        """A new instance of the board's amaranth-boards platform (with the UART if added)."""
        mod = importlib.import_module(self.platform_module)     # only the board built
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
#: run by the SerialTrainer (hw/trainers/serial_trainer.py: one multiplier, one serial divider).  The
#: digits MLP 64-100-50-10 at batch 32 needs (nitrod.compiler) ACT 8,608 words, WGT 7,450, ERR
#: 1,760, CODE 1,600, LABEL 32, PROG 13.  Memories (SerialTrainer.region_memories, checked by
#: the fit check): ACT (18-bit words) and WGT (32-bit) 16 K words each, two SPRAMs each; ERR
#: 1,792 words of 48 bits 21 EBR; CODE 2,048 x 4 bits 2 EBR; PROG 32 instructions as 32-bit
#: chunk slots (512 x 32) 4 EBR; LABEL 256 bytes 1 EBR; the host link 2 EBR: 30 of 30 EBR, 4 of
#: 4 SPRAM.  ERR limits the batch (55 words a sample): batch 64 would need 42 EBR for it.
ICEBREAKER_GEOMETRY = Geometry(
    side=2, act_depth=16384, wgt_depth=16384, err_depth=1792, code_depth=2048,
    label_depth=256, prog_depth=32, wgt_width=16, acc_width=36, d_g_width=36)

#: ECP5-85F geometry: the 8 x 8 array with hw.contract.Geometry's widths.  Geometry()'s own
#: depths need 214 DP16KD (> 208: ACT 64 + WGT 128 + ERR 22 + PROG 11 ...).  MNIST
#: 784-100-50-10 at batch 64 needs (nitrod.compiler, 2026-11) ACT 16,000 words, WGT 11,672,
#: ERR 960, CODE 832, LABEL 64, PROG 13: WGT is cut to 12,288 words (96 DP16KD), the rest
#: keeps the defaults except PROG (64 instructions): 196 of 208 DP16KD.
ECP5_GEOMETRY = Geometry(side=8, act_depth=16384, wgt_depth=12288, err_depth=2048,
                         code_depth=2048, label_depth=256, prog_depth=64)


#: What the two LFE5U-85F boards share: the core clock, the Trainer geometry and default network,
#: the device's resources, the stand-in core's 8 DP16KD and the link's buffer (distributed RAM).
_ECP5_85F_BOARD = dict(
    family="ecp5",
    target_mhz=100.0,
    use_pll=True,
    geometry=ECP5_GEOMETRY,
    network={"name": "MNIST MLP", "dataset": "mnist5k", "layers": [784, 100, 50, 10],
             "train_samples": 4000},
    cnn_network={"name": "digits CNN c8,p,l64", "dataset": "digits", "input_shape": [1, 8, 8],
                 "layers": "c8,p,l64"},
    resources=_ECP5_85F,
    bram_bits=18432,
    memory_core_words=4096,
    link_max_burst=64,
    # each MAC element's MULT18X18D with its own input, pipeline and output registers
    # (hw/array/mac_array.py: "ecp5_dsp"); Yosys's mapping ("dsp") leaves them in the fabric.
    # ACT, WGT, ERR and CODE in DP16KD instantiated by hand, their output registers the shared
    # bank registers (hw/vendor/ecp5_bram.py); Yosys's mapping never uses them
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
        network={"name": "digits MLP", "dataset": "digits", "layers": [64, 100, 50, 10],
                 "train_samples": 1437},
        cnn_network={"name": "digits CNN c4,p,l64", "dataset": "digits",
                     "input_shape": [1, 8, 8], "layers": "c4,p,l64"},
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
        # ACT and WGT in SB_SPRAM256KA (hw/trainers/serial_trainer.py, hw/vendor/ice40_spram.py)
        trainer=SerialTrainer,
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
        baud=1_000_000,
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


def board_geometry(board: Board, side: int | None = None, **overrides) -> Geometry:
    """The board's Geometry, with ``side`` and other fields overridden."""
    geo = board.geometry
    if side is not None:
        overrides["side"] = side
    return replace(geo, **overrides) if overrides else geo
