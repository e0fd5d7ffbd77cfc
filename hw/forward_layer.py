"""Forward layer: IntegerLinear -> NITRO Scaling -> NITRO-ReLU for a batch, in hardware.

Product 1 of a training step (docs/ARCHITECTURE.md section 7): ``H = relu(scale(X @ W.T, K), a)`` with the ReLU derivative
codes, bit-exact with ``golden.arith.nitro_relu(golden.arith.nitro_scale(golden.layers.linear(X, W),
K), a)``.  A :class:`hw.tile_engine.TileEngine` computes ``Z = X @ W.T`` tile by tile; each result
row (``cols`` accumulators) goes through ``cols`` parallel lanes, each a :class:`hw.scaler.Scaler`
followed by a :class:`hw.nitro_relu.NitroRelu`, one row per cycle; a writer stores the ``cols``
activations ``h`` and their 2-bit codes as one word of the output memories.

Operand memories (the engine's, written through ``a_wr`` / ``b_wr``)
---------------------------------------------------------------------
* **A** (activations, feature-major): the word at ``a_base + tr*a_tile_stride + k*a_k_stride``
  holds ``X[tr*rows:(tr+1)*rows, k]`` (``rows`` signed ``a_width``-bit values, sample
  ``tr*rows`` in the low bits).
* **B** (weights): the word at ``b_base + tc*b_tile_stride + k*b_k_stride`` holds
  ``W[tc*cols:(tc+1)*cols, k]`` (``cols`` signed ``b_width``-bit values).
* Partial tiles are zero-padded *in memory* (samples ``m >= M`` of an A word, neurons ``n >= N``
  of a B word are 0), as the engine requires.

Output memories (written by the layer, read through ``rd``)
-----------------------------------------------------------
Two memories of ``out_depth`` words at the same addresses: **H** (a word is ``cols`` signed
``h_width``-bit activations, ``data.ArrayLayout(signed(h_width), cols)``) and **codes** (a word is
``cols`` 2-bit :class:`hw.nitro_relu.ReluCode` values, ``data.ArrayLayout(unsigned(2), cols)``).
The word for sample ``m`` and tile column ``tc`` is at::

    out_base + m * out_m_stride + tc * out_tc_stride      (modulo 2**out_addr_width)

and holds neurons ``tc*cols .. tc*cols+cols-1`` of sample ``m``, neuron ``tc*cols`` in the low
bits: a *sample-major* word, the ``B`` word of products 4-5 (``out_m_stride = tiles_c``,
``out_tc_stride = 1`` packs a sample's words together; ``out_m_stride = 1``,
``out_tc_stride = M`` stores tile column after tile column).

Partial tiles:

* rows of padding samples (``m >= m_len``) are **not written** (no word of the output memories
  is touched for them, so no space need be reserved);
* padding neurons (``n >= n_len``) inside a written word are written as ``h = 0`` with code
  ``ZERO`` (not what the lane computed, ``relu(0) = -c(a)``): a padded word is then the zero
  padding later products expect, and the backward pass sends no error to those neurons.

Instruction (``instr_layout``, accepted on ``instr`` when the layer is idle)
-----------------------------------------------------------------------------
==================  ====================  =====================================================
field               shape                 meaning
==================  ====================  =====================================================
``product``         engine instruction    the TileEngine's instruction (see hw/tile_engine.py):
                                          ``k_len = K``, ``tiles_r = ceil(M/rows)``,
                                          ``tiles_c = ceil(N/cols)``, operand addresses
``m_len``           count_width           ``M``: samples; result rows ``m >= M`` are dropped
``n_len``           count_width           ``N``: neurons; lanes ``n >= N`` write h=0, ZERO
``out_base``        out_addr_width        word address of (m=0, tc=0)
``out_m_stride``    out_addr_width        word step per sample
``out_tc_stride``   out_addr_width        word step per tile column
``scaler``          the Scaler's inputs   run-time constants of ``SF = 256 * K``
                                          (``Scaler.constants(K)``)
``inv_slope``       the ReLU's input      the inverse slope ``a``
==================  ====================  =====================================================

:meth:`ForwardLayer.instruction` builds one from the matrix sizes; :meth:`ForwardLayer.constants`
gives the constant fields.  The whole instruction is registered when accepted, so the constants
stay still while the rows of that instruction are in the lanes.  An instruction with ``k_len``,
``tiles_r`` or ``tiles_c`` equal to zero writes nothing and only pulses ``done``.

Flow control
------------
The lanes are stall-as-a-whole pipelines fed in lockstep: a result row enters all ``cols``
lanes in the same cycle, and the engine's ``results.ready`` is the AND of the lanes' ``ready``
(so the engine is held while the lanes are); a row leaves when every lane has it.  The writer
takes a row per cycle unless ``stall`` is 1 (an input kept for a future shared write port; the
tests use it to exercise back-pressure).  The writer counts rows to know each row's tile
(``index``, ``tc``, ``tr``): tiles come out of the engine in issue order, rows 0 first.

Control and status
------------------
* ``instr.ready`` is ``~busy`` (and the engine idle, which it then always is).
* ``busy`` rises the cycle after an instruction is accepted and falls with the cycle after the
  last row is written, when ``done`` pulses for one cycle.
* ``cycles``: from the cycle accepting the instruction to the cycle writing its last row, both
  included (1 for an empty instruction); held while idle.
* ``overflow``: the engine's sticky accumulator overflow flag (cleared only by reset).

Timing
------
With ``stall`` low, an instruction of ``T = tiles_r * tiles_c`` tiles takes exactly
``k_len + (T - 1) * max(k_len, mac.stream_beats) + fixed_cycles`` cycles
(:meth:`ForwardLayer.instruction_cycles`; a tile shorter than ``stream_beats`` waits for the
array's result bank, see :mod:`hw.tile_engine`), ``fixed_cycles = engine.fixed_cycles + lane_latency`` with ``lane_latency = scaler.latency +
relu.latency`` (all read from the units' ``latency`` attributes).
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hw.nitro_relu import DEFAULT_SLOPE, ReluCode, NitroRelu, check_slope
from hw.scaler import Scaler
from hw.tile_engine import TileEngine, write_port_signature
from hw.widths import ACC_WIDTH, ACT_WIDTH, WEIGHT_WIDTH

__all__ = ["ForwardLayer", "read_port_signature"]

CODE_WIDTH = 2


def read_port_signature(addr_width: int, h_word, code_word) -> wiring.Signature:
    """The output memories' read port seen from the reader: ``addr`` out; ``h``, ``code`` in
    (the words at the ``addr`` of the previous cycle: one cycle of read latency)."""
    return wiring.Signature({
        "addr": Out(unsigned(addr_width)),
        "h": In(h_word),
        "code": In(code_word),
    })


def _const_inputs(component, exclude=("i", "o")) -> dict:
    """The run-time constant inputs of a lane unit: {name: shape} of its other In ports."""
    out = {}
    for name, member in component.signature.members.items():
        if name in exclude:
            continue
        if not member.is_port or member.flow != In:
            raise TypeError(f"{type(component).__name__}.{name}: unexpected member")
        out[name] = member.shape
    return out


class ForwardLayer(wiring.Component):
    """One IntegerLinear -> Scaling -> NITRO-ReLU forward pass per instruction (see module doc).

    Parameters
    ----------
    rows, cols, a_width, b_width, acc_width, a_depth, b_depth, count_width, cycle_width,
    mac_options : the TileEngine's (``a_width`` 8 for int8 activations, ``b_width`` 18 weights).
    out_depth : words of each output memory (H and codes).
    fan_in_width : the Scaler's ``fan_in_width`` (largest run-time ``K`` is
        ``2**fan_in_width - 1``).
    h_width : width of the stored activations (the ReLU's output width, 8).
    scaler_options, relu_options : further keyword arguments for the lanes' units.

    Ports
    -----
    instr : In(stream.Signature(instr_layout))
    a_wr, b_wr : In(write_port_signature(...)) -- the engine's operand memory write ports.
    rd : In(read_port_signature(...)) -- output memories' read port (1 cycle latency).
    stall : In(1) -- the writer takes no row while 1.
    busy, done, overflow : Out(1)
    cycles : Out(cycle_width)

    Attributes
    ----------
    engine : the TileEngine.
    scalers, relus : the lanes' units (``cols`` each; created at construction).
    lane_latency : ``scalers[0].latency + relus[0].latency``.
    fixed_cycles : ``engine.fixed_cycles + lane_latency`` (see Timing).
    instr_layout, h_word, code_word : layouts on the ports.
    """

    def __init__(self, rows: int = 4, cols: int = 4, a_width: int = ACT_WIDTH,
                 b_width: int = WEIGHT_WIDTH, acc_width: int = ACC_WIDTH, *,
                 a_depth: int = 512, b_depth: int = 512, out_depth: int = 512,
                 count_width: int = 16, cycle_width: int = 32, fan_in_width: int = 14,
                 h_width: int = ACT_WIDTH, mac_options: dict | None = None,
                 scaler_options: dict | None = None, relu_options: dict | None = None):
        if out_depth < 1:
            raise ValueError("out_depth must be at least 1")
        self.engine = TileEngine(rows, cols, a_width, b_width, acc_width, a_depth=a_depth,
                                 b_depth=b_depth, count_width=count_width,
                                 cycle_width=cycle_width, mac_options=mac_options)
        self.rows, self.cols = rows, cols
        self.a_width, self.b_width, self.acc_width = a_width, b_width, acc_width
        self.count_width, self.cycle_width = count_width, cycle_width
        self.out_depth = out_depth
        self.out_addr_width = max(1, ceil_log2(out_depth))
        self.h_width = h_width
        self.scalers = [Scaler(acc_width, fan_in_width=fan_in_width, **(scaler_options or {}))
                        for _ in range(cols)]
        self.relus = [NitroRelu(self.scalers[0].out_width, h_width, **(relu_options or {}))
                      for _ in range(cols)]
        self.scaler_inputs = _const_inputs(self.scalers[0])
        self.relu_inputs = _const_inputs(self.relus[0])
        if set(self.relu_inputs) != {"inv_slope"}:
            raise TypeError(f"NitroRelu inputs {sorted(self.relu_inputs)}: expected inv_slope")
        self.lane_latency = self.scalers[0].latency + self.relus[0].latency

        oaw = self.out_addr_width
        self.instr_layout = data.StructLayout({
            "product": self.engine.instr_layout,
            "m_len": unsigned(count_width),
            "n_len": unsigned(count_width),
            "out_base": unsigned(oaw),
            "out_m_stride": unsigned(oaw),
            "out_tc_stride": unsigned(oaw),
            "scaler": data.StructLayout(self.scaler_inputs),
            "inv_slope": self.relu_inputs["inv_slope"],
        })
        self.h_word = data.ArrayLayout(signed(h_width), cols)
        self.code_word = data.ArrayLayout(unsigned(CODE_WIDTH), cols)
        super().__init__({
            "instr": In(stream.Signature(self.instr_layout)),
            "a_wr": In(write_port_signature(self.engine.a_addr_width, self.engine.a_word)),
            "b_wr": In(write_port_signature(self.engine.b_addr_width, self.engine.b_word)),
            "rd": In(read_port_signature(oaw, self.h_word, self.code_word)),
            "stall": In(1),
            "busy": Out(1),
            "done": Out(1),
            "overflow": Out(1),
            "cycles": Out(cycle_width),
        })

    # ------------------------------------------------------------------ host-side helpers

    @property
    def fixed_cycles(self) -> int | None:
        """Cycles of an instruction beyond its beats (``k_len >= mac.stream_beats``, no stall)."""
        fixed = self.engine.fixed_cycles
        return None if fixed is None else fixed + self.lane_latency

    def instruction_cycles(self, tiles: int, k_len: int) -> int | None:
        """Cycles of an instruction of ``tiles`` tiles of ``k_len`` beats (no stall)."""
        cycles = self.engine.instruction_cycles(tiles, k_len)
        if cycles is None or tiles == 0 or k_len == 0:
            return cycles
        return cycles + self.lane_latency

    def constants(self, fan_in: int, slope: int = DEFAULT_SLOPE) -> dict:
        """The ``scaler`` and ``inv_slope`` fields for ``SF = 256 * fan_in`` and slope ``a``."""
        if slope is None:
            raise ValueError("the ReLU's inverse slope must be given")
        check_slope(slope)
        return {"scaler": self.scalers[0].constants(fan_in), "inv_slope": int(slope)}

    def instruction(self, m_len: int, k_len: int, n_len: int, *, a_base: int, a_tile_stride: int,
                    b_base: int, b_tile_stride: int, out_base: int, out_m_stride: int,
                    out_tc_stride: int, slope: int = DEFAULT_SLOPE, a_k_stride: int = 1,
                    b_k_stride: int = 1) -> dict:
        """The instruction (a nested dict for ``instr_layout.const``) of ``X (M x K) @ W.T``
        with ``W`` of shape ``(N, K)``, its operands placed as described in the module doc."""
        tiles_r = -(-m_len // self.rows)
        tiles_c = -(-n_len // self.cols)
        for name, value in (("m_len", m_len), ("k_len", k_len), ("n_len", n_len),
                            ("tiles_r", tiles_r), ("tiles_c", tiles_c)):
            if not 0 <= value < 2 ** self.count_width:
                raise ValueError(f"{name} = {value} does not fit count_width")
        return {
            "product": dict(a_base=a_base, a_tile_stride=a_tile_stride, a_k_stride=a_k_stride,
                            b_base=b_base, b_tile_stride=b_tile_stride, b_k_stride=b_k_stride,
                            k_len=k_len, tiles_r=tiles_r, tiles_c=tiles_c),
            "m_len": m_len, "n_len": n_len,
            "out_base": out_base, "out_m_stride": out_m_stride, "out_tc_stride": out_tc_stride,
            **self.constants(max(1, k_len), slope),
        }

    def instruction_bits(self, instruction: dict) -> int:
        """An instruction dict packed into the integer carried by ``instr.payload``."""
        return self.instr_layout.const(instruction).as_value().value

    # ------------------------------------------------------------------ hardware

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = eng = self.engine
        rows, cols, cw = self.rows, self.cols, self.count_width
        oaw = self.out_addr_width
        wiring.connect(m, wiring.flipped(self.a_wr), eng.a_wr)
        wiring.connect(m, wiring.flipped(self.b_wr), eng.b_wr)
        m.d.comb += self.overflow.eq(eng.overflow)

        # ---- instruction: registered whole; the product goes to the engine at once -------
        cfg = Signal(self.instr_layout)
        accept = Signal()
        m.d.comb += [
            self.instr.ready.eq(~self.busy & eng.instr.ready),
            accept.eq(self.instr.valid & self.instr.ready),
            eng.instr.valid.eq(self.instr.valid & ~self.busy),
            eng.instr.payload.eq(self.instr.payload.product),
        ]
        with m.If(accept):
            m.d.sync += cfg.eq(self.instr.payload)

        # ---- lanes: Scaler -> NitroRelu, fed in lockstep -----------------------------------
        in_ready = Signal()
        out_valid = Signal()
        take = Signal()                    # the writer takes a row this cycle
        m.d.comb += [
            in_ready.eq(Cat(s.i.ready for s in self.scalers).all()),
            out_valid.eq(Cat(r.o.valid for r in self.relus).all()),
            eng.results.ready.eq(in_ready),
            take.eq(out_valid & ~self.stall),
        ]
        for j, (scaler, relu) in enumerate(zip(self.scalers, self.relus)):
            m.submodules[f"scaler{j}"] = scaler
            m.submodules[f"relu{j}"] = relu
            wiring.connect(m, scaler.o, relu.i)
            m.d.comb += [
                scaler.i.valid.eq(eng.results.valid & in_ready),
                scaler.i.payload.eq(eng.results.payload.row[j]),
                relu.o.ready.eq(take),
                relu.inv_slope.eq(cfg.inv_slope),
            ]
            for name in self.scaler_inputs:
                m.d.comb += getattr(scaler, name).eq(cfg.scaler[name])

        # ---- output memories -------------------------------------------------------------
        m.submodules.mem_h = mem_h = Memory(shape=self.h_word, depth=self.out_depth, init=[])
        m.submodules.mem_code = mem_code = Memory(shape=self.code_word, depth=self.out_depth,
                                                  init=[])
        wr_h, wr_code = mem_h.write_port(), mem_code.write_port()
        rd_h = mem_h.read_port(domain="sync", transparent_for=())
        rd_code = mem_code.read_port(domain="sync", transparent_for=())
        m.d.comb += [
            rd_h.addr.eq(self.rd.addr), rd_code.addr.eq(self.rd.addr),
            self.rd.h.eq(rd_h.data), self.rd.code.eq(rd_code.data),
        ]

        # ---- writer: counts rows to place them -----------------------------------------------
        iw = max(1, ceil_log2(rows))
        w_i = Signal(iw)                    # row index within the tile
        w_tc = Signal(cw)
        w_tr = Signal(cw)
        tc_last = Signal(cw)
        tr_last = Signal(cw)
        mw = cw + ceil_log2(rows) + 1       # holds tiles_r * rows without wrapping
        nw = cw + ceil_log2(cols) + 1
        m_row = Signal(mw)                  # tr * rows
        m_cur = Signal(mw)                  # tr * rows + index: the sample of this row
        n0 = Signal(nw)                     # tc * cols: the first neuron of this tile
        row_addr0 = Signal(oaw)             # address of (tr*rows, tc=0)
        tile_addr0 = Signal(oaw)            # address of (tr*rows, tc)
        w_addr = Signal(oaw)                # address of this row
        ms_rows = Signal(oaw)               # out_m_stride * rows
        at_i_last = w_i == rows - 1
        at_tc_last = w_tc == tc_last
        at_tr_last = w_tr == tr_last
        final = Signal()
        m.d.comb += final.eq(at_i_last & at_tc_last & at_tr_last)

        row_on = Signal()
        m.d.comb += row_on.eq(m_cur < cfg.m_len)
        for j, relu in enumerate(self.relus):
            lane_on = (n0 + j) < cfg.n_len
            m.d.comb += [
                wr_h.data[j].eq(Mux(lane_on, relu.o.payload.h, 0)),
                wr_code.data[j].eq(Mux(lane_on, relu.o.payload.code.as_value(),
                                       ReluCode.ZERO.value)),
            ]
        m.d.comb += [
            wr_h.addr.eq(w_addr), wr_code.addr.eq(w_addr),
            wr_h.en.eq(take & self.busy & row_on), wr_code.en.eq(take & self.busy & row_on),
        ]

        with m.If(accept):
            p = self.instr.payload
            m.d.sync += [
                w_i.eq(0), w_tc.eq(0), w_tr.eq(0),
                tc_last.eq(p.product.tiles_c - 1), tr_last.eq(p.product.tiles_r - 1),
                m_row.eq(0), m_cur.eq(0), n0.eq(0),
                row_addr0.eq(p.out_base), tile_addr0.eq(p.out_base), w_addr.eq(p.out_base),
                ms_rows.eq(p.out_m_stride * rows),
            ]
        with m.Elif(take & self.busy):
            with m.If(~at_i_last):
                m.d.sync += [
                    w_i.eq(w_i + 1),
                    m_cur.eq(m_cur + 1),
                    w_addr.eq(w_addr + cfg.out_m_stride),
                ]
            with m.Else():
                m.d.sync += w_i.eq(0)
                with m.If(~at_tc_last):
                    # next tile column, same samples
                    m.d.sync += [
                        w_tc.eq(w_tc + 1),
                        n0.eq(n0 + cols),
                        m_cur.eq(m_row),
                        tile_addr0.eq(tile_addr0 + cfg.out_tc_stride),
                        w_addr.eq(tile_addr0 + cfg.out_tc_stride),
                    ]
                with m.Else():
                    # next tile row
                    m.d.sync += [
                        w_tc.eq(0),
                        w_tr.eq(w_tr + 1),
                        n0.eq(0),
                        m_row.eq(m_row + rows),
                        m_cur.eq(m_row + rows),
                        row_addr0.eq(row_addr0 + ms_rows),
                        tile_addr0.eq(row_addr0 + ms_rows),
                        w_addr.eq(row_addr0 + ms_rows),
                    ]

        # ---- busy / done / cycle counter ----------------------------------------------
        m.d.sync += self.done.eq(0)
        with m.If(accept):
            p = self.instr.payload.product
            empty = (p.k_len == 0) | (p.tiles_r == 0) | (p.tiles_c == 0)
            m.d.sync += [self.busy.eq(~empty), self.done.eq(empty), self.cycles.eq(1)]
        with m.Elif(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If(take & final):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]

        return m
