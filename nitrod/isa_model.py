"""A pure NumPy model of the Trainer executing a program (hw/contract/isa.py is the spec).

:class:`IsaMachine` holds the Trainer's memories as ``int64`` arrays and executes one
instruction at a time, vectorised over the whole product (no per-element Python loops).
The arithmetic is golden's (``golden.arith``, ``golden.optim``), so a program that computes a
golden training step reproduces it bit for bit.

The model is stricter than the hardware, to catch compiler bugs:

* any read or write outside a memory's depth raises :class:`IndexError` naming the memory and
  the address (the hardware would wrap);
* an instruction whose writes collide with each other, or with what it reads, raises
  :class:`HazardError` (the hardware's result would depend on its pipeline timing; the SGD's
  read-modify-write of its own weight words is of course allowed);
* an unsupported ReLU slope, a zero divisor, a divisor above ``divisor_max``, a zero ``d_g``,
  ``col_en`` on ``BACKWARD`` or an unknown op raise :class:`IsaError`;
* a value written to a memory must fit the memory's lane (``OverflowError``).

Overflow (sticky flags in :attr:`IsaMachine.overflow`, like the ``OVERFLOW`` register):

* ``mac``: a partial sum of an accumulator leaves signed ``acc_width``; the accumulator then
  wraps (two's complement) like the hardware's adder;
* ``backerr``: a ``BACKWARD`` accumulator leaves signed ``err_width``; it is saturated to the
  ERR lane range before the ReLU backward;
* ``sgd``: an updated weight leaves signed ``wgt_width``; it is saturated.

``LOSS`` treats a row whose ``LABEL`` is ``PAD_LABEL`` (255) as a padding sample: its error
is forced to 0.  (Another label that no column of the instruction has just gets no one-hot
target.)
``IsaMachine(geometry, pad_errors=False)`` models a Trainer without that rule (the padding
rows then keep ``Scaler(acc)``); the compiler's per-batch programs
(``Plan.program(lr_inv, m)``) never read those rows, so they are exact either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from golden.arith import exact_matmul, nitro_relu, nitro_scale, tdiv
from golden.optim import sgd_update
from hw.contract import (DATA_REGIONS, ONE_HOT_VALUE, PAD_LABEL, RELU_MEAN_CORRECTION, Geometry,
                         Op, Region, ReluCode, lane_signed, lane_width, pack_instruction,
                         pack_lanes, relu_codes, signed_range, unpack_instruction, unpack_lanes)

__all__ = ["IsaMachine", "IsaError", "HazardError", "RunStats"]


class IsaError(RuntimeError):
    """An instruction the Trainer cannot execute meaningfully."""


class HazardError(IsaError):
    """An instruction's writes collide with each other or with its own reads."""


@dataclass
class RunStats:
    """What one :meth:`IsaMachine.run` did."""
    retired: int = 0        # instructions completed (END excluded), like Reg.RETIRED
    tiles: int = 0          # tiles computed
    beats: int = 0          # sum of tiles * k_len
    overflow: dict = field(default_factory=dict)   # the sticky flags after the run


class IsaMachine:
    """The Trainer's memories and a program interpreter.

    ``mem[Region.X]`` is an ``int64`` array of shape ``(depth, side)`` (``LABEL``: ``(depth,)``),
    lane values as signed integers (CODE and LABEL unsigned).
    """

    def __init__(self, geometry: Geometry, *, pad_errors: bool = True):
        self.geometry = g = geometry
        self.pad_errors = pad_errors
        self.side = g.side
        self.mem: dict[Region, np.ndarray] = {}
        for r in DATA_REGIONS:
            shape = (g.depth(r),) if r == Region.LABEL else (g.depth(r), g.side)
            self.mem[r] = np.zeros(shape, dtype=np.int64)
        self.overflow = {"mac": False, "backerr": False, "sgd": False}

    # --- memory access --------------------------------------------------------
    def _check_addr(self, region: Region, addr) -> np.ndarray:
        addr = np.asarray(addr, dtype=np.int64)
        depth = self.geometry.depth(region)
        if addr.size:
            lo, hi = int(addr.min()), int(addr.max())
            if lo < 0 or hi >= depth:
                bad = lo if lo < 0 else hi
                raise IndexError(f"{Region(region).name} address {bad} is outside the memory "
                                 f"(depth {depth})")
        return addr

    def _check_values(self, region: Region, values: np.ndarray) -> None:
        w = lane_width(self.geometry, region)
        lo, hi = signed_range(w) if lane_signed(region) else (0, (1 << w) - 1)
        if values.size and (values.min() < lo or values.max() > hi):
            bad = int(values.min()) if values.min() < lo else int(values.max())
            raise OverflowError(f"value {bad} does not fit a {Region(region).name} lane "
                                f"({'signed' if lane_signed(region) else 'unsigned'} {w} bits)")

    def write(self, region: Region, addr: int, lanes) -> None:
        """Write one word (``lanes``: S values; LABEL: a scalar) at ``addr``, or ``n``
        consecutive words from ``addr`` (``lanes`` of shape ``(n, S)``; LABEL ``(n,)``)."""
        region = Region(region)
        v = np.asarray(lanes, dtype=np.int64)
        word_shape = () if region == Region.LABEL else (self.side,)
        if v.shape == word_shape:
            v = v[None]
        if v.shape[1:] != word_shape:
            raise ValueError(f"{region.name} words have shape {word_shape}, got {v.shape}")
        a = self._check_addr(region, np.arange(addr, addr + len(v)))
        self._check_values(region, v)
        self.mem[region][a] = v

    def read(self, region: Region, addr: int, count: int | None = None) -> np.ndarray:
        """One word (``count`` None) or ``count`` consecutive words, as lane values."""
        region = Region(region)
        n = 1 if count is None else count
        a = self._check_addr(region, np.arange(addr, addr + n))
        out = self.mem[region][a].copy()
        return out[0] if count is None else out

    def write_words(self, region: Region, base: int, words) -> None:
        """Write packed words (ints as on the host bus, ``hw.contract.pack_word`` layout)."""
        region = Region(region)
        words = list(words)
        if region == Region.LABEL:
            self.write(region, base, np.array([int(w) for w in words], dtype=np.int64))
            return
        w, sg = lane_width(self.geometry, region), lane_signed(region)
        self.write(region, base, unpack_lanes(words, w, self.side, sg).reshape(-1, self.side))

    def read_words(self, region: Region, base: int, count: int) -> list[int]:
        """``count`` packed words from ``base`` (the host's view of a memory)."""
        region = Region(region)
        vals = self.read(region, base, count)
        if region == Region.LABEL:
            return [int(v) for v in vals]
        return pack_lanes(vals, lane_width(self.geometry, region), f"{region.name} lane",
                          signed=lane_signed(region))

    def load(self, blocks) -> None:
        """Write ``[(region, base, packed words), ...]`` (what ``Plan.pack_*`` return)."""
        for region, base, words in blocks:
            self.write_words(region, base, words)

    def clear_overflow(self) -> None:
        for k in self.overflow:
            self.overflow[k] = False

    # --- execution ------------------------------------------------------------
    def run(self, program, start: int = 0) -> RunStats:
        """Execute ``program`` (instruction dicts or packed ints, at PROG addresses 0..)
        from ``start`` until ``END``."""
        depth = self.geometry.prog_depth
        if len(program) > depth:
            raise IndexError(f"PROG: the program has {len(program)} instructions, "
                             f"the memory holds {depth}")
        stats = RunStats()
        pc = start
        while True:
            if not 0 <= pc < depth:
                raise IndexError(f"PROG address {pc} is outside the memory (depth {depth})")
            if pc >= len(program):
                raise IndexError(f"PROG address {pc} is beyond the program "
                                 f"({len(program)} instructions) and no END was reached")
            ins = program[pc]
            if isinstance(ins, dict):
                ins = unpack_instruction(pack_instruction(ins))     # validates, fills zeros
            else:
                ins = unpack_instruction(int(ins))
            if ins["op"] == Op.END:
                break
            tiles, beats = self.execute(ins, pc)
            stats.retired += 1
            stats.tiles += tiles
            stats.beats += beats
            pc += 1
        stats.overflow = dict(self.overflow)
        return stats

    def execute(self, ins: dict, pc: int = 0) -> tuple[int, int]:
        """Execute one (non-END) instruction; returns (tiles, beats)."""
        g, S = self.geometry, self.side
        try:
            op = Op(ins["op"])
        except ValueError:
            raise IsaError(f"instruction {pc}: unknown op {ins['op']}") from None
        if op == Op.END:
            return 0, 0
        tr_n, tc_n, k_len = ins["tiles_r"], ins["tiles_c"], ins["k_len"]
        col_en = bool(ins["col_en"])
        b_region = Region.ERR if ins["b_src"] else Region.WGT
        where = f"instruction {pc} ({op.name})"
        if op == Op.BACKWARD and col_en:
            raise IsaError(f"{where}: col_en is not defined for BACKWARD")
        if op in (Op.FORWARD, Op.BACKWARD) and ins["inv_slope"] not in RELU_MEAN_CORRECTION:
            raise IsaError(f"{where}: unsupported inv_slope {ins['inv_slope']} "
                           f"(the hardware would use 4)")
        if op in (Op.FORWARD, Op.LOSS) and not 1 <= ins["divisor"] <= g.divisor_max:
            raise IsaError(f"{where}: divisor {ins['divisor']} outside 1..{g.divisor_max}")
        if op == Op.SGD:
            if ins["d_g"] == 0 or ins["d_g"] >= 1 << g.d_g_width:
                raise IsaError(f"{where}: d_g {ins['d_g']} outside 1..2**{g.d_g_width}-1")
            if ins["d_w"] >= 1 << g.d_w_width:
                raise IsaError(f"{where}: d_w {ins['d_w']} needs more than {g.d_w_width} bits")
        tiles = tr_n * tc_n
        if tiles == 0:
            return 0, 0

        # operand addresses: A (tiles_r, k_len), B (tiles_c, k_len)
        tr = np.arange(tr_n, dtype=np.int64)
        tc = np.arange(tc_n, dtype=np.int64)
        k = np.arange(k_len, dtype=np.int64)
        a_addr = ins["a_base"] + tr[:, None] * ins["a_tile_stride"] + k[None, :] * ins["a_k_stride"]
        b_addr = ins["b_base"] + tc[:, None] * ins["b_tile_stride"] + k[None, :] * ins["b_k_stride"]
        a_addr = self._check_addr(Region.ACT, a_addr)
        b_addr = self._check_addr(b_region, b_addr)
        a_words = self.mem[Region.ACT][a_addr]                  # (tiles_r, k_len, S)
        b_words = self.mem[b_region][b_addr]                    # (tiles_c, k_len, S)
        a_mat = a_words.transpose(0, 2, 1).reshape(tr_n * S, k_len)     # rows tr*S+i
        b_mat = b_words.transpose(1, 0, 2).reshape(k_len, tc_n * S)     # cols tc*S+j
        acc = self._product(a_mat, b_mat)                       # (R, tc_n*S)
        R = tr_n * S
        acc3 = acc.reshape(R, tc_n, S)                          # [row r, tile col tc, lane j]

        # destination addresses of the rows: off = r + tc*tc_stride
        r = np.arange(R, dtype=np.int64)
        off = r[:, None] + tc[None, :] * ins["tc_stride"]       # (R, tc_n)
        row_addr = ins["row_base"] + off
        c = np.arange(S, dtype=np.int64)
        col_addr = (ins["col_base"] + tr[:, None, None] * ins["col_tr_stride"]
                    + tc[None, :, None] * S + c[None, None, :])  # (tr, tc, c)

        reads = {Region.ACT: [a_addr], b_region: [b_addr]}
        writes: dict[Region, list[np.ndarray]] = {}

        def add(d, region, addr):
            d.setdefault(region, []).append(np.asarray(addr).reshape(-1))

        if op == Op.FORWARD:
            y = nitro_scale(acc3, ins["divisor"]).astype(np.int64)
            h = nitro_relu(y, ins["inv_slope"]).astype(np.int64)
            code = relu_codes(y)
            code_addr = ins["aux_base"] + off
            self._check_addr(Region.CODE, code_addr)
            dest, dest_region, values = row_addr, Region.ACT, h
            col_region = Region.ACT
            add(writes, Region.CODE, code_addr)
            extra = [(Region.CODE, code_addr, code)]
        elif op == Op.LOSS:
            lab_addr = self._check_addr(Region.LABEL, r)
            labels = self.mem[Region.LABEL][lab_addr]           # (R,)
            add(reads, Region.LABEL, lab_addr)
            e = nitro_scale(acc3, ins["divisor"]).astype(np.int64)
            col = tc[None, :, None] * S + c[None, None, :]       # (1, tc, S)
            e = e - ONE_HOT_VALUE * (col == labels[:, None, None])
            if self.pad_errors:
                e = np.where((labels == PAD_LABEL)[:, None, None], 0, e)
            dest, dest_region, values = row_addr, Region.ERR, e
            col_region = Region.ACT
            extra = []
        elif op == Op.BACKWARD:
            code_addr = self._check_addr(Region.CODE, ins["aux_base"] + off)
            add(reads, Region.CODE, code_addr)
            code = self.mem[Region.CODE][code_addr]             # (R, tc, S)
            lo, hi = signed_range(g.err_width)
            if acc3.size and (acc3.min() < lo or acc3.max() > hi):
                self.overflow["backerr"] = True
                acc3 = np.clip(acc3, lo, hi)
            a = ins["inv_slope"]
            div = tdiv(acc3, a)
            d = np.where(code == ReluCode.ZERO, 0, np.where(code == ReluCode.DIV, div, acc3))
            dest, dest_region, values = row_addr, Region.ERR, d
            col_region = None
            extra = []
        else:  # SGD
            w_addr = self._check_addr(Region.WGT, row_addr)
            w_old = self.mem[Region.WGT][w_addr]                # (R, tc, S)
            w_new = sgd_update(w_old, acc3, ins["d_g"], 1, ins["d_w"])
            lo, hi = signed_range(g.wgt_width)
            if w_new.size and (w_new.min() < lo or w_new.max() > hi):
                self.overflow["sgd"] = True
                w_new = np.clip(w_new, lo, hi)
            dest, dest_region, values = w_addr, Region.WGT, w_new
            col_region = Region.WGT
            extra = []

        # masks: rows >= row_len and lanes (tc*S + c) >= col_len are written as 0 (code ZERO)
        keep = ((r < ins["row_len"])[:, None, None]
                & ((tc[None, :, None] * S + c[None, None, :]) < ins["col_len"]))
        values = np.where(keep, values, 0)
        extra = [(region, addr, np.where(keep, v, ReluCode.ZERO)) for region, addr, v in extra]
        dest = self._check_addr(dest_region, dest)
        add(writes, dest_region, dest)
        if col_en:
            col_addr = self._check_addr(col_region, col_addr)
            add(writes, col_region, col_addr)
            # column c of tile (tr, tc): lanes i = values[tr*S + i, tc, c]
            col_values = values.reshape(tr_n, S, tc_n, S).transpose(0, 2, 3, 1)
        self._check_hazards(where, reads, writes)

        self._check_values(dest_region, values)
        for region, addr, v in extra:
            self._check_values(region, v)
        if col_en:
            self._check_values(col_region, col_values)
        self.mem[dest_region][dest] = values
        for region, addr, v in extra:
            self.mem[region][addr] = v
        if col_en:
            self.mem[col_region][col_addr] = col_values
        return tiles, tiles * k_len

    def _product(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a @ b`` with the accumulator's width: flag ``mac`` (and wrap) if a partial sum
        leaves signed ``acc_width``."""
        k_len = a.shape[1]
        if k_len == 0:
            return np.zeros((a.shape[0], b.shape[1]), dtype=np.int64)
        p = exact_matmul(a, b)
        lo, hi = signed_range(self.geometry.acc_width)
        bound = (int(np.abs(a).max()) * int(np.abs(b).max()) * k_len) if a.size and b.size else 0
        if bound <= hi:
            return p
        # partial sums may leave the range even if the total does not: check them all
        overflow = False
        rows = max(1, (1 << 22) // max(1, k_len * b.shape[1]))
        for r0 in range(0, a.shape[0], rows):
            part = np.cumsum(a[r0:r0 + rows, :, None] * b[None, :, :], axis=1)
            if part.min() < lo or part.max() > hi:
                overflow = True
                break
        if overflow:
            self.overflow["mac"] = True
            w = self.geometry.acc_width
            p = ((p - lo) & ((1 << w) - 1)) + lo
        return p

    @staticmethod
    def _check_hazards(where, reads, writes):
        allw = {}
        for region, parts in writes.items():
            a = np.concatenate(parts)
            u, counts = np.unique(a, return_counts=True)
            if (counts > 1).any():
                raise HazardError(f"{where} writes {region.name}[{int(u[counts > 1][0])}] "
                                  "more than once")
            allw[region] = u
        for region, parts in reads.items():
            if region not in allw:
                continue
            both = np.intersect1d(np.concatenate(parts), allw[region])
            if both.size:
                raise HazardError(f"{where} writes {region.name}[{int(both[0])}], "
                                  "which it also reads")
