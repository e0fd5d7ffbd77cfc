"""Tile engine: one tiled matrix product on a MacArray, fed from two operand memories.

The Trainer's matrix-product engine (docs/ARCHITECTURE.md section 5): one
*instruction* describes a matrix product ``P = LHS @ RHS`` cut into ``rows x cols`` tiles, and the
engine streams, for every tile, ``k_len`` operand beats from the memories into the array at one
beat per cycle, tile after tile without bubbles, then hands the array's result rows out annotated
with the tile coordinates.

Memories
--------
* Memory **A** (``a_depth`` words): a word is ``rows`` packed signed values of ``a_width`` bits,
  value 0 in the low bits (``data.ArrayLayout(signed(a_width), rows)``): a column block of LHS,
  ``LHS[tr*rows:(tr+1)*rows, k]``.
* Memory **B** (``b_depth`` words): a word is ``cols`` packed values of ``b_width`` bits, a row
  block of RHS, ``RHS[k, tc*cols:(tc+1)*cols]``.
* The memories are the parent's: the engine reads them through the synchronous read ports
  ``a_rd`` and ``b_rd`` (:func:`read_port_signature`, ``read_latency`` cycles).  Partial tiles
  are padded with zeros *in memory* (the engine has no notion of matrix edges).

Instruction (``instruction_layout``, accepted on the ``instr`` stream when the engine is idle)
------------------------------------------------------------------------------------------------
Fields, from the least significant bit (``aw``, ``bw``: the A and B address widths, ``cw``:
``count_width``, ``lw``: ``level_width``):

==================  =====  ====================================================================
field               width  meaning
==================  =====  ====================================================================
``a_base``          aw     word address of beat 0 of tile 0
``a_tile_stride``   aw     A word step between consecutive tile *rows* (``tr``)
``a_k_stride``      aw     A word step per beat ``k`` (normally 1)
``b_base``          bw     word address of beat 0 of tile 0
``b_tile_stride``   bw     B word step between consecutive tile *columns* (``tc``)
``b_k_stride``      bw     B word step per beat ``k`` (normally 1)
``k_len``           cw     beats ``k`` per beat row (the contraction length of an MLP product)
``tiles_r``         cw     tile rows
``tiles_c``         cw     tile columns
``y_tiles``         lw     tile steps ``ty`` of level y (0 or 1: once)
``y_repeat``        lw     repeats ``uy`` of each ``ty`` step (the same operands again)
``x_tiles``         lw     tile steps ``tx`` of level x
``x_repeat``        lw     repeats ``ux`` of each ``tx`` step
``y_beats``         lw     beat steps ``ky`` of level y
``x_beats``         lw     beat steps ``kx`` of level x
``a_y_tile``        aw     A word step per ``ty`` (``a_x_tile``: per ``tx``)
``a_x_tile``        aw
``a_y_beat``        aw     A word step per ``ky`` (``a_x_beat``: per ``kx``)
``a_x_beat``        aw
``b_y_tile``        bw     the same four steps of B
``b_x_tile``        bw
``b_y_beat``        bw
``b_x_beat``        bw
==================  =====  ====================================================================

Tiles and beats are nested loops, outermost first (hw/contract/isa.py): tiles ``ty, uy, tx,
ux, tr, tc``, beats ``ky, kx, k``; beat ``(ky, kx, k)`` of tile ``(ty, uy, tx, ux, tr, tc)``
reads ``A[a_base + ty*a_y_tile + tx*a_x_tile + tr*a_tile_stride + ky*a_y_beat + kx*a_x_beat +
k*a_k_stride]`` and ``B[b_base + ty*b_y_tile + tx*b_x_tile + tc*b_tile_stride + ky*b_y_beat +
kx*b_x_beat + k*b_k_stride]`` (the repeats ``uy``, ``ux`` move nothing), carries ``first`` on a
tile's first beat and ``last`` on its last.  An MLP product leaves the level fields 0: tiles
``(tr, tc)``, beats ``k``.  The Trainer derives the spatial levels' steps from the contract's
(``windows``, ``tile_b``: hw/trainers/trainer/sequencer.py).  Address arithmetic is modulo
``2**addr_width`` (so with a power-of-two depth a "negative" stride is its two's complement).
The addresses are kept incrementally (adders only, no multipliers): a *tile walker* holds the
next tile's first A and B addresses, one tile ahead of the *beat walker* that issues the
beats, so that a beat's address is one adder and a choice of four away from flip-flops (the
next beat, the next ``kx`` row, the next ``ky`` row, or the next tile's registered start).  An
instruction with ``k_len``, ``tiles_r`` or ``tiles_c`` equal to zero produces no result and
only pulses ``done``.  When the last beat has been issued the A and B addresses return to 0
(so that a parent may OR another reader's address into the idle engine's).

Results
-------
``results`` is a stream of ``result_layout``: ``row`` (``cols`` accumulators of ``acc_width``
bits, row ``index`` of the tile), ``index``, ``tr``, ``tc``, ``last`` (last row of the tile),
``final`` (last row of the instruction) and ``overflow`` (some accumulator of this tile left
``acc_width``; see MacArray).  Tiles come out in issue order, rows 0 first.

Control and status
------------------
* ``instr.ready`` is ``~busy``: an instruction is taken only when the previous one is complete.
* ``busy`` rises the cycle after an instruction is accepted and falls with the cycle after the
  transfer of its ``final`` row, when ``done`` pulses for one cycle.
* ``cycles``: cycles of the current (or last) instruction, from the cycle in which it is accepted
  to the cycle in which its ``final`` row is transferred, both included (1 for an empty
  instruction); it holds its value while idle.
* ``overflow``: the MacArray's sticky overflow flag (cleared only by reset).

Timing
------
Stage 0 generates addresses and presents them to the read ports; stage 1 is the read ports'
output (the words read; with ``read_latency=n`` it is ``n`` stages, the parent's registers
behind the block RAM); stage 2 registers them and offers them to the array (``fetch_latency``
= ``read_latency + 1`` cycles), so that the array's operand logic starts from flip-flops rather
than from the block RAM's slow output.  Stage 2 is a two-entry skid buffer: its main entry, offered to the array,
loads from stage 1 when the array takes its beat or it is empty, and holds its beat otherwise;
a beat arriving from stage 1 while the main entry is held goes to the skid entry, which moves to
the main entry when the array next takes.  Stages 0 and 1 advance together when stage 1 is empty
or the skid entry is (``advance = ~valid1 | ~valid_s``, registered state only, so the array's
``ready`` fans out to stage 2 alone), the read ports being enabled by ``advance`` so that a held
beat in stage 1 keeps its data.  No logic here uses the array's combinational ``ready``: the
engine computes the same value from a register of the array's rule (``~last2 |
may_enter``, ``may_enter`` a copy of ``MacArray.last_may_enter_next``), and stage 2's data
registers from copies of their own (hw/replica.py): each lane of ``a`` and of ``b`` has its own
copies of ``last`` and of the rule, and the skid entry loads whenever it is empty.  One beat
per cycle flows while the array is ready.  Beats of consecutive tiles follow each other
without a gap (the tile switch is just another address update).

With ``results`` always ready, an instruction of ``T`` tiles (every tile loop counted, repeats
included) of ``K`` beats each takes exactly ``K + (T - 1) * max(K, mac.stream_beats) +
fixed_cycles`` cycles (``cycles``; :meth:`TileEngine.instruction_cycles`), ``fixed_cycles = 2 +
fetch_latency + mac.latency + rows - 1``: the cycle accepting the instruction, the cycle
loading the first tile into the beat walker, the read and registering of beat 0, the array's
result latency after the last beat, and the last tile's rows after its row 0.  A tile shorter than
``mac.stream_beats`` (``mac.latency + rows``) holds its last beat until the previous tile has
left the array's result bank; the engine then simply waits.  Nothing in the logic depends on the
array's internal latency: flow control is valid/ready on both sides; the result side counts
the tiles whose last beat was issued and whose last row has not left (``final`` is the last
row of a tile when it is the only one and no beat is left to issue), and annotates each row
with ``tr`` and ``tc`` counted there.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hw.array.mac_array import MacArray
from hw.contract.widths import ACC_WIDTH, ACTIVATION_WIDTH, WEIGHT_WIDTH
from hw.replica import replica

__all__ = ["TileEngine", "instruction_layout", "result_layout", "read_port_signature",
           "LEVEL_FIELDS"]


def _addr_width(depth: int) -> int:
    return max(1, ceil_log2(depth))


#: the spatial levels' counts (hw/contract/isa.py: LEVEL_COUNT_WIDTH)
LEVEL_FIELDS = ("y_tiles", "y_repeat", "x_tiles", "x_repeat", "y_beats", "x_beats")


def instruction_layout(a_addr_width: int, b_addr_width: int, count_width: int,
                       level_width: int = 8) -> data.StructLayout:
    """The instruction of one product; fields from the least significant bit (see module doc)."""
    return data.StructLayout({
        "a_base": unsigned(a_addr_width),
        "a_tile_stride": unsigned(a_addr_width),
        "a_k_stride": unsigned(a_addr_width),
        "b_base": unsigned(b_addr_width),
        "b_tile_stride": unsigned(b_addr_width),
        "b_k_stride": unsigned(b_addr_width),
        "k_len": unsigned(count_width),
        "tiles_r": unsigned(count_width),
        "tiles_c": unsigned(count_width),
        **{name: unsigned(level_width) for name in LEVEL_FIELDS},
        **{f"a_{d}_{what}": unsigned(a_addr_width) for what in ("tile", "beat") for d in "yx"},
        **{f"b_{d}_{what}": unsigned(b_addr_width) for what in ("tile", "beat") for d in "yx"},
    })


def result_layout(rows: int, cols: int, acc_width: int, count_width: int) -> data.StructLayout:
    """One result row; fields from the least significant bit."""
    return data.StructLayout({
        "row": data.ArrayLayout(signed(acc_width), cols),
        "index": unsigned(max(1, ceil_log2(rows))),
        "tr": unsigned(count_width),
        "tc": unsigned(count_width),
        "last": 1,        # last row of the tile
        "final": 1,       # last row of the instruction
        "overflow": 1,    # this tile overflowed acc_width (values wrapped)
    })


def read_port_signature(addr_width: int, word_layout) -> wiring.Signature:
    """A synchronous memory read port seen from the reader: ``addr`` and ``en`` out; ``data``
    in, the word at the ``addr`` of the last cycle with ``en`` (held while ``en`` is 0).

    ``valid`` (out) is 1 when ``addr`` is a beat's: ``en`` is also 1 in bubbles, to move the
    port's stages, and the memory may skip the block RAM's read when ``valid`` is 0 (its output
    then holds the last word read, which no beat uses), so that it never reads a word the
    parent is writing (hw/memory/banked_memory.py: collisions).

    ``en_next`` (out) is the value ``en`` will have in the next cycle: a parent whose registers
    on ``en`` are many and far apart registers copies of it (hw/replica.py) instead of fanning
    ``en`` out to all of them."""
    return wiring.Signature({
        "addr": Out(unsigned(addr_width)),
        "en": Out(1),
        "en_next": Out(1),
        "valid": Out(1),
        "data": In(word_layout),
    })


class TileEngine(wiring.Component):
    """Runs one tiled matrix product per instruction on a ``rows x cols`` MacArray.

    Parameters
    ----------
    rows, cols, a_width, b_width, acc_width : the MacArray's geometry and widths.
    a_depth, b_depth : words in operand memories A and B.
    count_width : width of ``k_len``, ``tiles_r``, ``tiles_c`` (and of ``tr``/``tc`` on results).
    level_width : width of the spatial levels' counts (``y_tiles`` ... ``x_beats``).
    cycle_width : width of the ``cycles`` counter.
    mac_options : further keyword arguments for the MacArray (e.g. its multiplier style).
    a_depth, b_depth set the address widths of the read ports.
    read_latency : cycles from an address with ``en`` to its word on a read port's
        ``data`` (1: a block RAM port; 2 or 3: the parent registers the block RAM's output once
        or twice, on the same ``en``, so that no logic sits behind the RAM's slow
        clock-to-output and the first register may sit beside the RAM; 4: the parent also
        registers the address in front of the RAM, hw/memory/banked_memory.py; 5: and selects the
        bank of a banked memory in two steps, with registers between them,
        ``BankedMemory.registered``'s ``group_en``).  Every stage of the port advances only
        with ``en``, so a word waits there while the engine holds.

    Ports
    -----
    instr : In(stream.Signature(instruction_layout(...)))
    a_rd, b_rd : Out(read_port_signature(...)) -- read ports of memories A and B.
    results : Out(stream.Signature(result_layout(...)))
    busy, done, overflow : Out(1)
    cycles : Out(cycle_width)

    Attributes
    ----------
    mac : the MacArray instance (its ``latency`` attribute, if any, is the array's).
    fetch_latency : cycles from an address in stage 0 to its word offered to the array
        (``read_latency + 1``).
    fixed_cycles : cycles of an instruction beyond ``tiles * k_len`` (see Timing above).
    instr_layout, result_layout, a_word, b_word : the layouts used on the ports.
    """

    def __init__(self, rows: int = 4, cols: int = 4, a_width: int = ACTIVATION_WIDTH,
                 b_width: int = WEIGHT_WIDTH, acc_width: int = ACC_WIDTH, *,
                 a_depth: int = 512, b_depth: int = 512, count_width: int = 16,
                 level_width: int = 8, cycle_width: int = 32, mac_options: dict | None = None,
                 read_latency: int = 1):
        if read_latency not in (1, 2, 3, 4, 5):
            raise ValueError("read_latency is 1 to 5")
        self.read_latency = read_latency
        self.fetch_latency = read_latency + 1
        if a_depth < 1 or b_depth < 1:
            raise ValueError("memory depths must be at least 1")
        if count_width < 1 or level_width < 1:
            raise ValueError("count_width and level_width must be at least 1")
        # The array validates its own geometry and widths.
        self.mac = MacArray(rows=rows, cols=cols, a_width=a_width, b_width=b_width, acc_width=acc_width,
                            **(mac_options or {}))
        self.rows, self.cols = rows, cols
        self.a_width, self.b_width, self.acc_width = a_width, b_width, acc_width
        self.a_depth, self.b_depth = a_depth, b_depth
        self.a_addr_width, self.b_addr_width = _addr_width(a_depth), _addr_width(b_depth)
        self.count_width, self.cycle_width = count_width, cycle_width
        self.level_width = level_width
        self.a_word = data.ArrayLayout(signed(a_width), rows)
        self.b_word = data.ArrayLayout(signed(b_width), cols)
        self.instr_layout = instruction_layout(self.a_addr_width, self.b_addr_width, count_width,
                                               level_width)
        self.result_layout = result_layout(rows, cols, acc_width, count_width)
        super().__init__({
            "instr": In(stream.Signature(self.instr_layout)),
            "a_rd": Out(read_port_signature(self.a_addr_width, self.a_word)),
            "b_rd": Out(read_port_signature(self.b_addr_width, self.b_word)),
            "results": Out(stream.Signature(self.result_layout)),
            "busy": Out(1),
            "done": Out(1),
            "overflow": Out(1),
            "tile_lost": Out(1),
            "cycles": Out(cycle_width),
        })

    @property
    def fixed_cycles(self) -> int:
        """Cycles of an instruction beyond its beats (tiles of at least ``mac.stream_beats``
        beats, results always ready)."""
        return 2 + self.fetch_latency + self.mac.latency + self.rows - 1

    def instruction_cycles(self, tiles: int, beats: int) -> int:
        """Cycles of an instruction of ``tiles`` tiles of ``beats`` beats each (every loop
        counted: ``hw.contract.tile_count`` and ``beat_count``; results always ready; see
        Timing)."""
        if tiles == 0 or beats == 0:
            return 1
        return beats + (tiles - 1) * max(beats, self.mac.stream_beats) + self.fixed_cycles

    def elaborate(self, platform):
        # One function on purpose: the address stage, the read stages and the skid buffer
        # advance on the same few flags (advance, ready, valid1/valid_s), computed here once.
        m = Module()
        m.submodules.mac = mac = self.mac
        cw = self.count_width

        rd_a, rd_b = self.a_rd, self.b_rd

        # ---- instruction register ----------------------------------------------------
        ins = Signal(self.instr_layout)
        accept = self.instr.valid & self.instr.ready
        m.d.comb += self.instr.ready.eq(~self.busy)

        # ---- stage 0: address generation -----------------------------------------------
        # Counters with their "is last" flag kept in registers (compared one step ahead
        # against ``count - 2``), so that no wide comparison sits in front of the many
        # enables they drive; a count of 0 or 1 runs once.
        lw = self.level_width

        def level(name, width, count_of):
            lv = SimpleNamespace(
                n=Signal(width, name=f"{name}"), last=Signal(name=f"at_{name}_last"),
                pen=Signal(width, name=f"{name}_pen"), single=Signal(name=f"{name}_single"))
            lv.count_of = count_of
            return lv

        def init(lv, p):
            count = p[lv.count_of]
            m.d.sync += [lv.n.eq(0), lv.pen.eq(count - 2), lv.single.eq(count <= 1),
                         lv.last.eq(count <= 1)]

        def inc(lv):
            m.d.sync += [lv.n.eq(lv.n + 1), lv.last.eq(lv.n == lv.pen)]

        def wrap(*lvs):
            for lv in lvs:
                m.d.sync += [lv.n.eq(0), lv.last.eq(lv.single)]

        issuing = Signal()                    # stage 0 holds a beat to issue
        starting = Signal()                   # the cycle after accept: the first tile loads
        # the tile walker, one tile ahead of the beats: the next tile's first A and B
        # addresses (ta, tb), the bases of its levels, and whether there is a next tile
        t_tc, t_tr = level("tc", cw, "tiles_c"), level("tr", cw, "tiles_r")
        t_ux, t_tx = level("ux", lw, "x_repeat"), level("tx", lw, "x_tiles")
        t_uy, t_ty = level("uy", lw, "y_repeat"), level("ty", lw, "y_tiles")
        tile_levels = (t_tc, t_tr, t_ux, t_tx, t_uy, t_ty)
        t_valid = Signal()
        aw, bw = self.a_addr_width, self.b_addr_width
        ta, ta_sx, ta_sy = (Signal(aw, name=n) for n in ("ta", "ta_sx", "ta_sy"))
        tb, tb_sx, tb_sy = (Signal(bw, name=n) for n in ("tb", "tb_sx", "tb_sy"))
        # the beat walker: the beat's addresses and the starts of its kx and ky rows
        k_k, k_x, k_y = level("k", cw, "k_len"), level("kx", lw, "x_beats"), level("ky", lw, "y_beats")
        at_first = Signal()                   # the tile's first beat
        at_last = Signal()                    # the tile's last beat
        one_beat = Signal()                   # tiles of one beat
        a_addr, a_kx, a_ky = (Signal(aw, name=n) for n in ("a_addr", "a_kx", "a_ky"))
        b_addr, b_kx, b_ky = (Signal(bw, name=n) for n in ("b_addr", "b_kx", "b_ky"))

        # ---- stage 1: the read ports' output (the words read in stage 0) -----------------
        # (with read_latency n, stage 1 is n stages: the flags travel through all of them)
        valid1, first1, last1 = Signal(), Signal(), Signal()
        early = [(Signal(name=f"valid1_{k}"), Signal(name=f"first1_{k}"), Signal(name=f"last1_{k}"))
                 for k in range(self.read_latency - 1)]
        # ---- stage 2: the read words registered, offered to the array ---------------------
        # (the array's operand logic then starts from flip-flops, not from the block RAM)
        # Stage 2 is a two-entry skid buffer (``main``, offered to the array, and ``skid``)
        # so that the array's combinational ``ready`` drives only these registers: the
        # stages upstream advance on registered state alone.
        valid2, first2, last2 = Signal(), Signal(), Signal()
        data2_a = Signal(self.a_word)
        data2_b = Signal(self.b_word)
        valid_s, first_s, last_s = Signal(), Signal(), Signal()
        data_s_a = Signal(self.a_word)
        data_s_b = Signal(self.b_word)
        advance = Signal()                    # stages 0 and 1 advance (read ports enabled)
        # its next value, from the next values of valid1 and valid_s (their logic below)
        # The array's ``ready`` computed here, from a copy of the array's rule beside the
        # engine's flags (MacArray.last_may_enter_next, registered): the same value, but no
        # net from the array's bank state runs through the engine's flags to the read ports'
        # enables and their copies beside the block RAMs
        may_enter = replica(m, mac.last_may_enter_next, "may_enter", init=1)
        ready = Signal()
        m.d.comb += ready.eq(~last2 | may_enter)
        valid1_next, valid_s_next, advance_next = Signal(), Signal(), Signal()
        m.d.comb += [
            valid1_next.eq(Mux(advance, early[-1][0] if early else issuing, valid1)),
            valid_s_next.eq(Mux(valid_s, ~ready, valid2 & ~ready & valid1)),
            advance_next.eq(~valid1_next | ~valid_s_next),
        ]
        m.d.comb += [
            advance.eq(~valid1 | ~valid_s),
            rd_a.addr.eq(a_addr), rd_b.addr.eq(b_addr),
            rd_a.en.eq(advance), rd_b.en.eq(advance),
            mac.operands.valid.eq(valid2),
            mac.operands.payload.a.eq(data2_a),
            mac.operands.payload.b.eq(data2_b),
            mac.operands.payload.first.eq(first2),
            mac.operands.payload.last.eq(last2),
        ]
        m.d.comb += [rd_a.valid.eq(issuing), rd_b.valid.eq(issuing),
                     rd_a.en_next.eq(advance_next), rd_b.en_next.eq(advance_next)]
        with m.If(advance):
            flags = (issuing, at_first, at_last)
            for stage in [*early, (valid1, first1, last1)]:
                m.d.sync += [reg.eq(src) for reg, src in zip(stage, flags)]
                flags = stage
        # skid full (so main is full): main takes the skid entry when the array takes;
        # else main takes stage 1's beat when the array takes or main is empty; else (the
        # array holds main) stage 1's beat goes to the skid entry
        from_skid = valid_s & ready
        from_stage1 = ~valid_s & (~valid2 | ready)
        valid2_next, last2_next = Signal(), Signal()
        m.d.comb += [
            valid2_next.eq(Mux(from_skid, 1, Mux(from_stage1, valid1, valid2))),
            last2_next.eq(Mux(from_skid, last_s, Mux(from_stage1, last1, last2))),
        ]
        m.d.sync += [valid2.eq(valid2_next), last2.eq(last2_next), valid_s.eq(valid_s_next)]
        with m.If(from_skid):
            m.d.sync += first2.eq(first_s)
        with m.Elif(from_stage1):
            m.d.sync += first2.eq(first1)
        with m.Elif(~valid_s & valid1):
            m.d.sync += [first_s.eq(first1), last_s.eq(last1)]
        # The data registers follow the flags above, but each lane's (of a and of b) decides
        # from copies of its own (hw/replica.py) of the flags and of the array's rule
        # (MacArray.last_may_enter_next), so that no net runs from the array to all of them:
        # main loads when the array takes its beat or it is empty (from the skid entry if
        # that is full, else from stage 1), the skid entry whenever it is empty (it holds
        # nothing then, and so holds stage 1's beat when it becomes full).
        lanes = [("a", i, data2_a[i], data_s_a[i], rd_a.data[i]) for i in range(self.rows)]
        lanes += [("b", j, data2_b[j], data_s_b[j], rd_b.data[j]) for j in range(self.cols)]
        for side, i, main, skid, word in lanes:
            valid2_c = replica(m, valid2_next, f"valid2_{side}{i}")
            last2_c = replica(m, last2_next, f"last2_{side}{i}")
            valid_s_c = replica(m, valid_s_next, f"valid_s_{side}{i}")
            may_enter_c = replica(m, mac.last_may_enter_next, f"may_enter_{side}{i}", init=1)
            ready_c = ~last2_c | may_enter_c        # = mac.operands.ready
            with m.If(ready_c | (~valid_s_c & ~valid2_c)):
                m.d.sync += main.eq(Mux(valid_s_c, skid, word))
            with m.If(~valid_s_c):
                m.d.sync += skid.eq(word)

        load_tile = Signal()                  # the beat walker takes the tile walker's tile
        m.d.comb += load_tile.eq(starting | (advance & issuing & at_last))
        m.d.sync += starting.eq(0)
        with m.If(accept):
            p = self.instr.payload
            nonempty = (p.k_len != 0) & (p.tiles_r != 0) & (p.tiles_c != 0)
            m.d.sync += [ins.eq(p), starting.eq(nonempty), t_valid.eq(nonempty),
                         ta.eq(p.a_base), ta_sx.eq(p.a_base), ta_sy.eq(p.a_base),
                         tb.eq(p.b_base), tb_sx.eq(p.b_base), tb_sy.eq(p.b_base),
                         one_beat.eq((p.k_len == 1) & (p.x_beats <= 1) & (p.y_beats <= 1))]
            for lv in (*tile_levels, k_k, k_x, k_y):
                init(lv, p)
        # the tile walker steps as the beat walker takes its tile
        with m.Elif(load_tile):
            with m.If(~t_tc.last):
                inc(t_tc)
                m.d.sync += tb.eq(tb + ins.b_tile_stride)
            with m.Elif(~t_tr.last):
                wrap(t_tc)
                inc(t_tr)
                m.d.sync += [ta.eq(ta + ins.a_tile_stride), tb.eq(tb_sx)]
            with m.Elif(~t_ux.last):
                wrap(t_tc, t_tr)
                inc(t_ux)
                m.d.sync += [ta.eq(ta_sx), tb.eq(tb_sx)]
            with m.Elif(~t_tx.last):
                wrap(t_tc, t_tr, t_ux)
                inc(t_tx)
                m.d.sync += [ta_sx.eq(ta_sx + ins.a_x_tile), ta.eq(ta_sx + ins.a_x_tile),
                             tb_sx.eq(tb_sx + ins.b_x_tile), tb.eq(tb_sx + ins.b_x_tile)]
            with m.Elif(~t_uy.last):
                wrap(t_tc, t_tr, t_ux, t_tx)
                inc(t_uy)
                m.d.sync += [ta_sx.eq(ta_sy), ta.eq(ta_sy), tb_sx.eq(tb_sy), tb.eq(tb_sy)]
            with m.Elif(~t_ty.last):
                wrap(t_tc, t_tr, t_ux, t_tx, t_uy)
                inc(t_ty)
                m.d.sync += [ta_sy.eq(ta_sy + ins.a_y_tile), ta_sx.eq(ta_sy + ins.a_y_tile),
                             ta.eq(ta_sy + ins.a_y_tile),
                             tb_sy.eq(tb_sy + ins.b_y_tile), tb_sx.eq(tb_sy + ins.b_y_tile),
                             tb.eq(tb_sy + ins.b_y_tile)]
            with m.Else():
                # no tile left: the addresses the beat walker takes after the last beat are 0
                m.d.sync += [t_valid.eq(0), ta.eq(0), tb.eq(0)]
        # the beat walker: a tile's beats, then the tile walker's next tile (or 0s, the end)
        with m.If(load_tile):
            m.d.sync += [issuing.eq(t_valid), at_first.eq(1), at_last.eq(one_beat),
                         a_addr.eq(ta), a_kx.eq(ta), a_ky.eq(ta),
                         b_addr.eq(tb), b_kx.eq(tb), b_ky.eq(tb)]
            wrap(k_k, k_x, k_y)
        with m.Elif(advance & issuing):
            m.d.sync += at_first.eq(0)
            with m.If(~k_k.last):
                inc(k_k)
                m.d.sync += [a_addr.eq(a_addr + ins.a_k_stride),
                             b_addr.eq(b_addr + ins.b_k_stride),
                             at_last.eq((k_k.n == k_k.pen) & k_x.last & k_y.last)]
            with m.Elif(~k_x.last):
                wrap(k_k)
                inc(k_x)
                m.d.sync += [a_kx.eq(a_kx + ins.a_x_beat), a_addr.eq(a_kx + ins.a_x_beat),
                             b_kx.eq(b_kx + ins.b_x_beat), b_addr.eq(b_kx + ins.b_x_beat),
                             at_last.eq(k_k.single & (k_x.n == k_x.pen) & k_y.last)]
            with m.Else():                    # ~k_y.last: at_last is 0
                wrap(k_k, k_x)
                inc(k_y)
                m.d.sync += [a_ky.eq(a_ky + ins.a_y_beat), a_kx.eq(a_ky + ins.a_y_beat),
                             a_addr.eq(a_ky + ins.a_y_beat),
                             b_ky.eq(b_ky + ins.b_y_beat), b_kx.eq(b_ky + ins.b_y_beat),
                             b_addr.eq(b_ky + ins.b_y_beat),
                             at_last.eq(k_k.single & k_x.single & (k_y.n == k_y.pen))]

        # ---- results: the array's rows, annotated with the tile counted on this side ------
        out_tr = Signal(cw)
        out_tc = Signal(cw)
        res = mac.results.payload
        out_final = Signal()
        out_tc_last = Signal()                # out_tc == tiles_c - 1 (registered, as above)
        out_tr_last = Signal()                # out_tr == tiles_r - 1
        # tiles whose last beat stage 0 has issued and whose last row has not left: the last
        # row of a tile is the instruction's final row when that tile is the only one and
        # stage 0 has nothing left to issue (tiles leave in issue order)
        in_flight = Signal(8)
        one_in_flight = Signal()
        issued = advance & issuing & at_last
        drained = mac.results.valid & mac.results.ready & res.last
        in_flight_next = Signal.like(in_flight)
        m.d.comb += in_flight_next.eq(in_flight + issued - drained)
        m.d.sync += [in_flight.eq(in_flight_next), one_in_flight.eq(in_flight_next == 1)]
        m.d.comb += [
            out_final.eq(res.last & one_in_flight & ~issuing & ~starting),
            self.results.valid.eq(mac.results.valid),
            mac.results.ready.eq(self.results.ready),
            self.results.payload.row.eq(res.row),
            self.results.payload.index.eq(res.index),
            self.results.payload.tr.eq(out_tr),
            self.results.payload.tc.eq(out_tc),
            self.results.payload.last.eq(res.last),
            self.results.payload.final.eq(out_final),
            self.results.payload.overflow.eq(res.overflow),
            self.overflow.eq(mac.overflow),
            self.tile_lost.eq(mac.tile_lost),
        ]
        with m.If(accept):
            p = self.instr.payload
            m.d.sync += [out_tr.eq(0), out_tc.eq(0),
                         out_tc_last.eq(p.tiles_c == 1), out_tr_last.eq(p.tiles_r == 1)]
        with m.Elif(drained):
            with m.If(~out_tc_last):
                m.d.sync += [out_tc.eq(out_tc + 1), out_tc_last.eq(out_tc == t_tc.pen)]
            with m.Else():
                m.d.sync += [out_tc.eq(0), out_tc_last.eq(t_tc.single)]
                with m.If(~out_tr_last):
                    m.d.sync += [out_tr.eq(out_tr + 1), out_tr_last.eq(out_tr == t_tr.pen)]
                with m.Else():                # the next spatial tile step (or the end)
                    m.d.sync += [out_tr.eq(0), out_tr_last.eq(t_tr.single)]

        # ---- busy / done / cycle counter ----------------------------------------------
        m.d.sync += self.done.eq(0)
        with m.If(accept):
            p = self.instr.payload
            empty = (p.k_len == 0) | (p.tiles_r == 0) | (p.tiles_c == 0)
            m.d.sync += [self.busy.eq(~empty), self.done.eq(empty), self.cycles.eq(1)]
        with m.Elif(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If(self.results.valid & self.results.ready & out_final):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]

        return m
