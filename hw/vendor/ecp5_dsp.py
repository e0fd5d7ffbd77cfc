"""Lattice ECP5 sysDSP multiplier (MULT18X18D) instantiated by hand, with its own registers.

Yosys infers MULT18X18D from ``$mul`` but leaves every register in fabric
flip-flops beside the block, so a ``reg -> MULT18X18D -> reg`` path costs the
whole multiplier delay plus two fabric routes (~7 ns, ~110-145 MHz on speed
grade 6).  Instantiating the block directly lets it use its input, pipeline
and output registers; the multiplier then sits between registers inside the
block and the fabric only sees a clock-to-out.

:func:`mult18x18d` builds one signed ``a x b`` product (operands up to 18 bits
each, sign-extended to 18) as an :class:`amaranth.hdl.Instance`:

* clock ``CLK0`` (the given domain's clock), clock enable ``CE0`` (one enable
  for all the block's registers: stalls freeze the whole multiplier), reset
  ``RST0`` tied low (the data registers need none);
* ``REG_INPUTA_CLK``/``REG_INPUTB_CLK`` = ``"CLK0"`` when ``input_regs``,
  ``REG_PIPELINE_CLK`` when ``pipeline_reg``, ``REG_OUTPUT_CLK`` when
  ``output_reg``: the product appears ``input_regs + pipeline_reg + output_reg``
  enabled clock edges after its operands (see :func:`mult18x18d_latency`).

Simulation: Amaranth's simulator cannot run an Instance.  :func:`sim_model`
returns a small behavioural Verilog model of the subset of MULT18X18D used
here (same module name, parameter names and ports; ``CLK0``/``CE0``/``RST0``
only, synchronous reset, no shift/cascade or C-input features), written for
this project.  Append it to the design's Verilog for Verilator
(:func:`with_sim_model`).  Synthesis (``synth_ecp5``) knows MULT18X18D as a
cell and must *not* be given the model.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Signal, Value

from hw.vendor.verilog_model import bus, with_model

__all__ = ["MAX_WIDTH", "mult18x18d", "mult18x18d_latency", "sim_model", "with_sim_model"]

#: Widest signed operand one MULT18X18D takes.
MAX_WIDTH = 18
_PRODUCT_WIDTH = 36


def mult18x18d_latency(input_regs: bool = True, pipeline_reg: bool = True,
                       output_reg: bool = False) -> int:
    """Enabled clock edges from the operands at the block's pins to the product on ``P``."""
    return int(input_regs) + int(pipeline_reg) + int(output_reg)


def _extend(value: Value, width: int) -> Value:
    """Sign-extend signed ``value`` to ``width`` bits."""
    return Cat(value, *([value[-1]] * (width - len(value))))


def mult18x18d(a: Value, b: Value, ce: Value, *, input_regs: bool = True,
               pipeline_reg: bool = True, output_reg: bool = False, domain: str = "sync",
               name: str = "mult") -> tuple[Instance, Value]:
    """One signed ``a x b`` MULT18X18D; returns ``(instance, product)``.

    ``a`` and ``b`` are signed values of at most 18 bits (sign-extended to 18);
    ``product`` is the signed ``len(a) + len(b)``-bit value taken from ``P``.  ``ce``
    enables every register of the block.  Add the instance as a submodule.
    """
    a, b = Value.cast(a), Value.cast(b)
    for label, v in (("a", a), ("b", b)):
        if not v.shape().signed:
            raise ValueError(f"operand {label} must be signed")
        if len(v) > MAX_WIDTH:
            raise ValueError(f"operand {label} has {len(v)} bits; MULT18X18D takes at most {MAX_WIDTH}")
    a18, b18 = _extend(a, MAX_WIDTH), _extend(b, MAX_WIDTH)
    p36 = Signal(_PRODUCT_WIDTH, name=f"{name}_p")
    clock = lambda enabled: "CLK0" if enabled else "NONE"
    kwargs = {
        "p_REG_INPUTA_CLK": clock(input_regs),
        "p_REG_INPUTB_CLK": clock(input_regs),
        "p_REG_PIPELINE_CLK": clock(pipeline_reg),
        "p_REG_OUTPUT_CLK": clock(output_reg),
        "p_REG_INPUTA_CE": "CE0", "p_REG_INPUTB_CE": "CE0",
        "p_REG_PIPELINE_CE": "CE0", "p_REG_OUTPUT_CE": "CE0",
        "p_REG_INPUTA_RST": "RST0", "p_REG_INPUTB_RST": "RST0",
        "p_REG_PIPELINE_RST": "RST0", "p_REG_OUTPUT_RST": "RST0",
        "p_RESETMODE": "SYNC",
        "i_CLK0": ClockSignal(domain),
        "i_CE0": ce,
        "i_RST0": Const(0, 1),
        "i_SIGNEDA": Const(1, 1),
        "i_SIGNEDB": Const(1, 1),
        "i_SOURCEA": Const(0, 1),
        "i_SOURCEB": Const(0, 1),
    }
    for i in range(MAX_WIDTH):
        kwargs[f"i_A{i}"] = a18[i]
        kwargs[f"i_B{i}"] = b18[i]
        kwargs[f"i_C{i}"] = Const(0, 1)
    for i in range(_PRODUCT_WIDTH):
        kwargs[f"o_P{i}"] = p36[i]
    instance = Instance("MULT18X18D", **kwargs)
    return instance, p36[:len(a) + len(b)].as_signed()


# ---------------------------------------------------------------------------- simulation model

def sim_model() -> str:
    """Behavioural Verilog of the MULT18X18D subset used by :func:`mult18x18d`."""
    in_buses = [("A", 18), ("B", 18), ("C", 18), ("SRIA", 18), ("SRIB", 18)]
    out_buses = [("SROA", 18), ("SROB", 18), ("ROA", 18), ("ROB", 18), ("ROC", 18), ("P", 36)]
    single_in = ["SIGNEDA", "SIGNEDB", "SOURCEA", "SOURCEB",
                 "CLK0", "CLK1", "CLK2", "CLK3", "CE0", "CE1", "CE2", "CE3",
                 "RST0", "RST1", "RST2", "RST3"]
    ports = ([f"{p}{i}" for p, w in in_buses for i in range(w)] + single_in
             + [f"{p}{i}" for p, w in out_buses for i in range(w)] + ["SIGNEDP"])
    lines = ["// Behavioural model of the Lattice ECP5 MULT18X18D subset used by hw/vendor/ecp5_dsp.py",
             "// (written for this project; simulation only, never given to synthesis).",
             "// Supported: registers clocked by CLK0 or bypassed, CE0, RST0 (synchronous),",
             "// SIGNEDA/SIGNEDB; no C input, shift chains, cascades or MULT_BYPASS.",
             "/* verilator lint_off UNUSEDSIGNAL */",
             "/* verilator lint_off UNUSEDPARAM */",
             "module MULT18X18D(" + ", ".join(ports) + ");"]
    params = {
        "REG_INPUTA_CLK": "NONE", "REG_INPUTA_CE": "CE0", "REG_INPUTA_RST": "RST0",
        "REG_INPUTB_CLK": "NONE", "REG_INPUTB_CE": "CE0", "REG_INPUTB_RST": "RST0",
        "REG_INPUTC_CLK": "NONE", "REG_INPUTC_CE": "CE0", "REG_INPUTC_RST": "RST0",
        "REG_PIPELINE_CLK": "NONE", "REG_PIPELINE_CE": "CE0", "REG_PIPELINE_RST": "RST0",
        "REG_OUTPUT_CLK": "NONE", "REG_OUTPUT_CE": "CE0", "REG_OUTPUT_RST": "RST0",
        "CLK0_DIV": "ENABLED", "CLK1_DIV": "ENABLED", "CLK2_DIV": "ENABLED", "CLK3_DIV": "ENABLED",
        "HIGHSPEED_CLK": "NONE", "GSR": "ENABLED", "CAS_MATCH_REG": "FALSE",
        "SOURCEB_MODE": "B_SHIFT", "MULT_BYPASS": "DISABLED", "RESETMODE": "SYNC",
    }
    lines += [f'  parameter {k} = "{v}";' for k, v in params.items()]
    lines += [f"  input {p}{i};" for p, w in in_buses for i in range(w)]
    lines += [f"  input {p};" for p in single_in]
    lines += [f"  output {p}{i};" for p, w in out_buses for i in range(w)]
    lines += ["  output SIGNEDP;"]
    lines += [
        f"  wire [17:0] a_pin = {bus('A', 18)};",
        f"  wire [17:0] b_pin = {bus('B', 18)};",
        "  reg [17:0] a_q, b_q;",
        "  reg sa_q, sb_q;",
        "  reg [35:0] pipe_q, out_q;",
        "  reg sp_pipe_q, sp_out_q;",
        '  localparam IN_A = REG_INPUTA_CLK != "NONE";',
        '  localparam IN_B = REG_INPUTB_CLK != "NONE";',
        '  localparam PIPE = REG_PIPELINE_CLK != "NONE";',
        '  localparam OUTR = REG_OUTPUT_CLK != "NONE";',
        "  initial begin",
        '    if ((IN_A && REG_INPUTA_CLK != "CLK0") || (IN_B && REG_INPUTB_CLK != "CLK0")',
        '        || (PIPE && REG_PIPELINE_CLK != "CLK0") || (OUTR && REG_OUTPUT_CLK != "CLK0")',
        '        || REG_INPUTA_CE != "CE0" || REG_INPUTB_CE != "CE0" || REG_PIPELINE_CE != "CE0"',
        '        || REG_OUTPUT_CE != "CE0" || REG_INPUTA_RST != "RST0" || REG_INPUTB_RST != "RST0"',
        '        || REG_PIPELINE_RST != "RST0" || REG_OUTPUT_RST != "RST0"',
        '        || RESETMODE != "SYNC" || MULT_BYPASS != "DISABLED")',
        '      $fatal(1, "MULT18X18D model: only CLK0/CE0/RST0, synchronous reset, no bypass");',
        "  end",
        "  // Input stage (the sign controls travel with their operand).",
        "  wire [17:0] a_m = IN_A ? a_q : a_pin;",
        "  wire [17:0] b_m = IN_B ? b_q : b_pin;",
        "  wire sa_m = IN_A ? sa_q : SIGNEDA;",
        "  wire sb_m = IN_B ? sb_q : SIGNEDB;",
        "  // 19 x 19 signed multiply: bit 18 is the sign bit when signed, else 0.",
        "  wire signed [18:0] a_x = {sa_m & a_m[17], a_m};",
        "  wire signed [18:0] b_x = {sb_m & b_m[17], b_m};",
        "  wire signed [37:0] full = a_x * b_x;",
        "  wire [35:0] prod = full[35:0];",
        "  wire sp = sa_m | sb_m;",
        "  wire [35:0] pipe_m = PIPE ? pipe_q : prod;",
        "  wire sp_pipe_m = PIPE ? sp_pipe_q : sp;",
        "  wire [35:0] p_m = OUTR ? out_q : pipe_m;",
        "  wire sp_m = OUTR ? sp_out_q : sp_pipe_m;",
        "  always @(posedge CLK0) begin",
        "    if (RST0) begin",
        "      a_q <= 18'd0; b_q <= 18'd0; sa_q <= 1'b0; sb_q <= 1'b0;",
        "      pipe_q <= 36'd0; out_q <= 36'd0; sp_pipe_q <= 1'b0; sp_out_q <= 1'b0;",
        "    end else if (CE0) begin",
        "      a_q <= a_pin; b_q <= b_pin; sa_q <= SIGNEDA; sb_q <= SIGNEDB;",
        "      pipe_q <= prod; sp_pipe_q <= sp;",
        "      out_q <= pipe_m; sp_out_q <= sp_pipe_m;",
        "    end",
        "  end",
        f"  assign {bus('P', 36)} = p_m;",
        "  assign SIGNEDP = sp_m;",
    ]
    for p, w in out_buses:
        if p != "P":
            lines.append(f"  assign {bus(p, w)} = {w}'d0;")
    lines += ["endmodule", "/* verilator lint_on UNUSEDPARAM */",
              "/* verilator lint_on UNUSEDSIGNAL */", ""]
    return "\n".join(lines)


def with_sim_model(verilog_text: str) -> str:
    """``verilog_text`` plus the MULT18X18D model when the design instantiates the block."""
    return with_model(verilog_text, "MULT18X18D", sim_model)
