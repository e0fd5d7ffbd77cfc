"""The board top: clock and reset, UART, host link, LEDs around a pluggable core.

::

    oscillator -> PLL (board.target_mhz) -> "sync" domain
    uart.rx, uart.tx <-> LinkedCore: UartRx/UartTx -> HostLink -> bus -> core
    LEDs: busy (core.busy), link (host link inside a frame), alive (1 Hz heartbeat, if present)

Reset: a power-on counter in a reset-less domain holds the ``sync`` reset for 2**10 cycles
after the PLL reports lock (and while the board's reset button is held); on the ECP5 the
reset goes out on a global network (a ``DCCA``), as the clock does.

The link chain is :class:`hw.link.linked.LinkedCore`, the one the simulated-UART backend runs.
The core is a trainer core (hw/trainers/), or :class:`MemoryCore`, a stand-in that exercises
the clocks, the link and the report without the datapath.
"""

from __future__ import annotations

from amaranth.hdl import C, ClockDomain, Instance, Module, Mux, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.contract import BUS_ADDR_WIDTH, MAGIC, REGION_SHIFT, Geometry, Reg, Region
from hw.host_bus import BusSignature
from hw.link.linked import LinkedCore
from hw.link.uart import rx_fifo_depth, uart_timing

__all__ = ["BoardTop", "MemoryCore", "POR_CYCLES", "CORE_PATH"]

POR_CYCLES = 1 << 10
#: the core's module path below the board top (Yosys commands name its memories from here)
CORE_PATH = "linked.core"


class MemoryCore(wiring.Component):
    """Stand-in core: the Trainer's register block in outline plus one block RAM.

    Region REGS: ``ID`` reads :data:`hw.contract.MAGIC`; the geometry registers (``SIDE``,
    ``*_DEPTH``, ``*_WIDTH``, ...) read ``geometry``; writing bit 0 of ``CONTROL`` makes
    ``busy`` high for ``run_cycles`` cycles (the LED lights), ``STATUS`` reads busy (bit 0)
    and done (bit 1), ``CYCLES`` the length of the last run, ``PROG_START`` is read/write.
    Region ACT: ``words`` 32-bit words of block RAM (word address = the low address bits,
    wrapping).  Everything else reads 0.  Reads answer one cycle after ``r_en``.
    """

    #: like a trainer core's (hw.trainers.core.TrainerCore): plain memories
    collision_free_memories = ()
    distributed_memories = ()

    def __init__(self, *, words: int = 1024, geometry: Geometry | None = None,
                 run_cycles: int = 1 << 20, addr_width: int = BUS_ADDR_WIDTH):
        self.words = int(words)
        self.geometry = geometry or Geometry()
        self.run_cycles = int(run_cycles)
        super().__init__({
            "bus": In(BusSignature(addr_width)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        m.submodules.ram = ram = Memory(shape=32, depth=self.words, init=[])
        wr = ram.write_port()
        rd = ram.read_port(transparent_for=())
        abits = (self.words - 1).bit_length()

        region = bus.addr[REGION_SHIFT:]
        offset = bus.addr[:REGION_SHIFT]
        in_ram = region == Region.ACT
        m.d.comb += [wr.addr.eq(offset[:abits]), wr.data.eq(bus.w_data),
                     wr.en.eq(bus.w_en & in_ram),
                     rd.addr.eq(offset[:abits]), rd.en.eq(bus.r_en)]

        done = Signal()
        timer = Signal(range(self.run_cycles + 1))
        cycles = Signal(32)
        count = Signal(32)
        prog_start = Signal(16)
        with m.If(timer != 0):
            m.d.sync += [timer.eq(timer - 1), count.eq(count + 1)]
            with m.If(timer == 1):
                m.d.sync += [done.eq(1), cycles.eq(count + 1)]
        m.d.comb += self.busy.eq(timer != 0)

        is_reg = region == Region.REGS
        with m.If(bus.w_en & is_reg):
            with m.Switch(offset):
                with m.Case(Reg.CONTROL):
                    with m.If(bus.w_data[0] & (timer == 0)):
                        m.d.sync += [timer.eq(self.run_cycles), count.eq(0), done.eq(0)]
                with m.Case(Reg.PROG_START):
                    m.d.sync += prog_start.eq(bus.w_data)

        reg_q = Signal(32)
        ram_q = Signal()
        values = {Reg.ID: C(MAGIC, 32), Reg.STATUS: (done << 1) | self.busy,
                  Reg.CYCLES: cycles, Reg.PROG_START: prog_start,
                  **{reg: C(v, 32) for reg, v in self.geometry.registers().items()}}
        with m.If(bus.r_en):
            m.d.sync += [ram_q.eq(in_ram), reg_q.eq(0)]
            with m.If(is_reg):
                with m.Switch(offset):
                    for reg, value in values.items():
                        with m.Case(reg):
                            m.d.sync += reg_q.eq(value)
        m.d.comb += bus.r_data.eq(Mux(ram_q, rd.data, reg_q))
        return m


def _pin(m, platform, direction, name, number=0, sub=None, *, cache):
    """A buffered pin: ``io.Buffer(direction, port)``'s ``i`` or ``o`` signal.

    Resources are requested once, raw (``dir="-"``), and kept in ``cache``: the OrangeCrab's
    three LEDs are subsignals of one ``rgb_led``, the UART's rx and tx of one ``uart``.
    Inverted pins (``PinsN``) are inverted by the buffer.
    """
    if (name, number) not in cache:
        cache[name, number] = platform.request(name, number, dir="-")
    port = cache[name, number]
    if sub is not None:
        port = getattr(port, sub)
    label = "_".join(str(x) for x in (name, number, sub) if x is not None)
    buf = io.Buffer(direction, port)
    m.submodules[f"pin_{label}"] = buf
    return buf.i if direction == "i" else buf.o


class BoardTop(wiring.Component):
    """Top level for ``board`` (a :class:`boards.boards.Board`) around ``core``.

    ``baud``: UART rate (default ``board.baud``; refused with the numbers if its divisor's
    error or the receiver's margin is unsafe: :func:`hw.link.uart.uart_timing`);
    ``timeout_ms``: the host link's inter-byte timeout.  ``self.info`` describes the clocking
    and link settings.

    With ``sim=True`` the top has no pins, PLL or power-on reset (it uses the default
    ``sync`` domain) and exposes ``uart_rx: In(1)``, ``uart_tx: Out(1)``, ``led_busy`` and
    ``led_link: Out(1)`` instead, for simulating the UART -> link -> core path; ``divisor``
    then overrides the UART divisor (``baud`` is ignored).
    """

    def __init__(self, board, core, *, baud: int | None = None, timeout_ms: float = 20.0,
                 sim: bool = False, divisor: int | None = None, timeout_cycles=None):
        self.sim = bool(sim)
        self.board = board
        self.core = core
        self.baud = int(baud or board.baud)
        self.core_hz = board.core_mhz() * 1e6
        timing = None if divisor else uart_timing(self.core_hz, self.baud).check()
        self.divisor = int(divisor) if divisor else timing.divisor
        self.timeout_cycles = int(timeout_cycles or max(2, int(self.core_hz * timeout_ms / 1000)))
        self.info = {
            "core_clock_mhz": board.core_mhz(),
            "board_clock_mhz": board.clock_mhz,
            "pll": board.pll(),
            "baud": self.baud,
            "uart_divisor": self.divisor,
            **({"uart_timing": timing.as_dict()} if timing else {}),
            "uart": board.uart_note,
            "link_timeout_cycles": self.timeout_cycles,
            "link_max_burst": board.link_max_burst,
            "link_rx_fifo_bytes": rx_fifo_depth(self.divisor, board.link_max_burst),
            "por_cycles": POR_CYCLES,
        }
        super().__init__({
            "uart_rx": In(1, init=1), "uart_tx": Out(1, init=1),
            "led_busy": Out(1), "led_link": Out(1),
        } if self.sim else {})

    # -- clocking ---------------------------------------------------------------------
    def _clocking(self, m, platform):
        b = self.board
        m.domains.sync = cd_sync = ClockDomain("sync")
        m.domains.por = cd_por = ClockDomain("por", reset_less=True)
        locked = Signal()
        pll = b.pll()
        pins = self._pins
        if pll is None:
            m.d.comb += [cd_sync.clk.eq(_pin(m, platform, "i", b.clock_resource, cache=pins)),
                         locked.eq(1)]
        elif b.family == "ice40":
            pad = platform.request(b.clock_resource, 0, dir="-")   # the PLL takes the pad
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE",
                p_DIVR=pll["DIVR"], p_DIVF=pll["DIVF"], p_DIVQ=pll["DIVQ"],
                p_FILTER_RANGE=pll["FILTER_RANGE"],
                i_PACKAGEPIN=pad.io,
                i_RESETB=C(1), i_BYPASS=C(0),
                o_PLLOUTGLOBAL=cd_sync.clk,
                o_LOCK=locked,
            )
        else:
            clk = _pin(m, platform, "i", b.clock_resource, cache=pins)
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{b.clock_mhz:g}",
                a_FREQUENCY_PIN_CLKOP=f"{pll['f_out_mhz']:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
                p_CLKI_DIV=pll["CLKI_DIV"], p_CLKFB_DIV=pll["CLKFB_DIV"],
                p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=pll["CLKOP_DIV"],
                p_CLKOP_CPHASE=pll["CLKOP_CPHASE"], p_CLKOP_FPHASE=pll["CLKOP_FPHASE"],
                p_FEEDBK_PATH="CLKOP",
                i_CLKI=clk, i_CLKFB=cd_sync.clk, i_RST=C(0), i_STDBY=C(0),
                i_PHASESEL0=C(0), i_PHASESEL1=C(0), i_PHASEDIR=C(1), i_PHASESTEP=C(1),
                i_PHASELOADREG=C(1), i_PLLWAKESYNC=C(0), i_ENCLKOP=C(0),
                o_CLKOP=cd_sync.clk, o_LOCK=locked,
            )
        # No clock constraint on the PLL output: nextpnr derives it from the oscillator's
        # (amaranth-boards' Clock on the pin) and the PLL's dividers.
        m.d.comb += cd_por.clk.eq(cd_sync.clk)

        # Power-on reset: counts up from 0 (FFs power up 0 on both families) while the PLL is
        # locked and the button released; the sync reset is held until the count is done.
        hold = Signal()
        locked_s = Signal()
        m.submodules.lock_sync = FFSynchronizer(locked, locked_s, o_domain="por")
        if b.reset_button is not None:
            button = _pin(m, platform, "i", *b.reset_button, cache=pins)
            pressed = Signal()
            m.submodules.button_sync = FFSynchronizer(button, pressed, o_domain="por")
            m.d.comb += hold.eq(~locked_s | pressed)
        else:
            m.d.comb += hold.eq(~locked_s)
        por = Signal(range(POR_CYCLES + 1))
        with m.If(hold):
            m.d.por += por.eq(0)
        with m.Elif(por != POR_CYCLES):
            m.d.por += por.eq(por + 1)
        # the reset leaves a flip-flop (it fans out to most of the design's flip-flops; a
        # comparator in front of that net would be on a timed path)
        rst_q = Signal(init=1)
        m.d.por += rst_q.eq(por != POR_CYCLES)
        if b.family == "ecp5":
            # ... and goes out on one of the ECP5's global networks (a DCCA buffer, like the
            # clock): on general routing one net to the thousands of flip-flops with a reset
            # would cross the die in a cycle
            rst_global = Signal()
            m.submodules.rst_dcca = Instance("DCCA", i_CLKI=rst_q, i_CE=C(1), o_CLKO=rst_global)
            m.d.comb += cd_sync.rst.eq(rst_global)
        else:
            m.d.comb += cd_sync.rst.eq(rst_q)

    def elaborate(self, platform):
        m = Module()
        b = self.board
        self._pins = pins = {}
        if not self.sim:
            self._clocking(m, platform)

        m.submodules.linked = linked = LinkedCore(self.core, clocks_per_bit=self.divisor,
                                                  timeout=self.timeout_cycles,
                                                  max_burst=b.link_max_burst)
        if self.sim:
            m.d.comb += [linked.rx.eq(self.uart_rx), self.uart_tx.eq(linked.tx)]
        else:
            m.d.comb += [linked.rx.eq(_pin(m, platform, "i", "uart", 0, "rx", cache=pins)),
                         _pin(m, platform, "o", "uart", 0, "tx", cache=pins).eq(linked.tx)]
        busy = linked.busy

        if self.sim:
            m.d.comb += [self.led_busy.eq(busy), self.led_link.eq(linked.link_active)]
            return m
        leds = b.leds
        # each LED from a flip-flop of its own: its pin then pulls no logic of the core or
        # the link towards the die's edge (the link's state decode, shared with its LED, was
        # on a long path of the 4 x 4 Trainer)
        if "busy" in leds:
            led_busy = Signal()
            m.d.sync += led_busy.eq(busy)
            m.d.comb += _pin(m, platform, "o", *leds["busy"], cache=pins).eq(led_busy)
        if "link" in leds:
            led_link = Signal()
            m.d.sync += led_link.eq(linked.link_active)
            m.d.comb += _pin(m, platform, "o", *leds["link"], cache=pins).eq(led_link)
        if "alive" in leds:
            half = int(self.core_hz // 2)
            beat = Signal(range(half))
            alive = Signal()
            with m.If(beat == half - 1):
                m.d.sync += [beat.eq(0), alive.eq(~alive)]
            with m.Else():
                m.d.sync += beat.eq(beat + 1)
            m.d.comb += _pin(m, platform, "o", *leds["alive"], cache=pins).eq(alive)
        return m
