"""A pure NumPy model of a trainer core executing a program (hw/contract/isa.py is the spec).

:class:`IsaMachine` holds the memories as ``int64`` arrays and executes one instruction at a
time, vectorised over the whole product (no per-element Python loops): every op of the
contract, MLP and CNN programs alike (so do the Trainer and the SerialTrainer).
The arithmetic is golden's (``golden.arith``, ``golden.optim``), so a program that computes a
golden training step reproduces it bit for bit.

The model is stricter than the hardware, to catch compiler bugs:

* any read or write outside a memory's depth raises :class:`IndexError` naming the memory and
  the address (the hardware would wrap);
* an instruction whose writes collide with each other, or with what it reads, raises
  :class:`HazardError` (the hardware's result would depend on its pipeline timing; the SGD's
  read-modify-write of its own weight words and POOL_CODE's of its code words are of course
  allowed);
* an unsupported ReLU slope, a zero divisor, a divisor above ``divisor_max``, a zero ``d_g``,
  ``col_en`` on ``BACKWARD``, ``POOL`` or ``POOL_CODE`` or an unknown op raise
  :class:`IsaError`;
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
from hw.contract import (DATA_REGIONS, ONE_HOT_VALUE, PAD_LABEL, POOL_OPS, RELU_MEAN_CORRECTION,
                         Geometry, Op, Region, ReluCode, beat_count, lane_signed, lane_width,
                         loop_counts, pack_instruction, pack_lanes, relu_codes, signed_range,
                         tile_count, unpack_instruction, unpack_lanes)

__all__ = ["IsaMachine", "IsaError", "HazardError", "RunStats"]


class IsaError(RuntimeError):
    """An instruction the Trainer cannot execute meaningfully."""


class HazardError(IsaError):
    """An instruction's writes collide with each other or with its own reads."""


@dataclass
class RunStats:
    """What one :meth:`IsaMachine.run` did."""
    retired: int = 0        # instructions completed (END excluded), like Reg.RETIRED
    tiles: int = 0          # tiles computed (hw.contract.tile_count)
    beats: int = 0          # MAC-array beats: sum of tile_count * beat_count but the pools'
    pool_beats: int = 0     # the pools' words read per tile row: sum of their tile * beat counts
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
            if ins["op"] in POOL_OPS:
                stats.pool_beats += beats
            else:
                stats.beats += beats
            pc += 1
        stats.overflow = dict(self.overflow)
        return stats

    def execute(self, ins: dict, pc: int = 0) -> tuple[int, int]:
        """Execute one (non-END) instruction; returns (tiles, beats) (the pools' beats are
        their words read per row, not MAC-array beats)."""
        g, S = self.geometry, self.side
        try:
            op = Op(ins["op"])
        except ValueError:
            raise IsaError(f"instruction {pc}: unknown op {ins['op']}") from None
        if op == Op.END:
            return 0, 0
        col_en = bool(ins["col_en"])
        pool = op in POOL_OPS
        b_region = Region.ERR if ins["b_src"] else Region.WGT
        where = f"instruction {pc} ({op.name})"
        if col_en and (op == Op.BACKWARD or pool):
            raise IsaError(f"{where}: col_en is not defined for {op.name}")
        if op in (Op.FORWARD, Op.BACKWARD) and ins["inv_slope"] not in RELU_MEAN_CORRECTION:
            raise IsaError(f"{where}: unsupported inv_slope {ins['inv_slope']} "
                           f"(the hardware would use 4)")
        if op in (Op.FORWARD, Op.LOSS, Op.SCALE) and not 1 <= ins["divisor"] <= g.divisor_max:
            raise IsaError(f"{where}: divisor {ins['divisor']} outside 1..{g.divisor_max}")
        if op == Op.SGD:
            if ins["d_g"] == 0 or ins["d_g"] >= 1 << g.d_g_width:
                raise IsaError(f"{where}: d_g {ins['d_g']} outside 1..2**{g.d_g_width}-1")
            if ins["d_w"] >= 1 << g.d_w_width:
                raise IsaError(f"{where}: d_w {ins['d_w']} needs more than {g.d_w_width} bits")
        tiles = tile_count(ins)
        if tiles == 0:
            return 0, 0
        n = loop_counts(ins)
        ny, ry, nx, rx = n["y_tiles"], n["y_repeat"], n["x_tiles"], n["x_repeat"]
        tr_n, tc_n = n["tiles_r"], n["tiles_c"]
        n_pos = ny * ry * nx * rx                # tile steps of the spatial levels
        tile_b = bool(ins["tile_b"])
        ar = np.arange
        wy = n["y_beats"] if ins["windows"] else 1
        wx = n["x_beats"] if ins["windows"] else 1
        # the spatial levels' tile steps (ty, tx): their operand offset
        t_scale = (1, 1) if tile_b else (wy, wx)
        t_off = (ar(ny)[:, None] * (t_scale[0] * ins["y_stride"])
                 + ar(nx)[None, :] * (t_scale[1] * ins["x_stride"])).reshape(-1)
        # the beats (ky, kx, k), in their order
        ky = ar(n["y_beats"])[:, None, None]
        kx = ar(n["x_beats"])[None, :, None]
        kk = ar(n["k_len"])[None, None, :]
        k_a = (ky * ins["y_stride"] + kx * ins["x_stride"] + kk * ins["a_k_stride"]).reshape(-1)
        k_b = (ky * ins["y_b_stride"] + kx * ins["x_b_stride"]
               + kk * ins["b_k_stride"]).reshape(-1)
        tr, tc = ar(tr_n), ar(tc_n)
        a_t = ins["a_base"] + tr * ins["a_tile_stride"]
        b_t = ins["b_base"] + tc * ins["b_tile_stride"]
        # A addresses (n_a, tr, K), B addresses (n_b, tc, K): the tile steps move one of them
        a_addr = (0 if tile_b else t_off[:, None, None]) + a_t[None, :, None] + k_a[None, None]
        b_addr = (t_off[:, None, None] if tile_b else 0) + b_t[None, :, None] + k_b[None, None]
        a_addr = np.broadcast_to(a_addr, (1 if tile_b else ny * nx, tr_n, k_a.size))
        b_addr = np.broadcast_to(b_addr, (ny * nx if tile_b else 1, tc_n, k_b.size))

        # destination offsets: O per spatial tile step (ty, uy, tx, ux)
        step_y = (ar(ny)[:, None] * ry + ar(ry)[None, :]).reshape(-1)
        step_x = (ar(nx)[:, None] * rx + ar(rx)[None, :]).reshape(-1)
        out = (step_y[:, None] * ins["y_out"] + step_x[None, :] * ins["x_out"]).reshape(-1)
        i = ar(S)
        off = (out[:, None, None, None] + tr[None, :, None, None] * S + i[None, None, :, None]
               + tc[None, None, None, :] * ins["tc_stride"])      # (n_pos, tr, i, tc)
        col_addr = (ins["col_base"] + out[:, None, None, None]
                    + tr[None, :, None, None] * ins["col_tr_stride"]
                    + tc[None, None, :, None] * S + i[None, None, None, :])  # (n_pos, tr, tc, c)

        reads: dict[Region, list[np.ndarray]] = {}
        writes: dict[Region, list[np.ndarray]] = {}

        def add(d, region, addr):
            d.setdefault(region, []).append(np.asarray(addr).reshape(-1))

        def expand(v):
            """(ny*nx, ...) values of the tile steps -> (n_pos, ...), repeats included."""
            v = v.reshape((ny, 1, nx, 1) + v.shape[1:])
            return np.broadcast_to(v, (ny, ry, nx, rx) + v.shape[4:]).reshape(
                (n_pos,) + v.shape[4:])

        extra = []
        if pool:
            # row i of a tile: the words ACT[A + i]; (n_a, tr, K, i, lanes)
            rows_addr = self._check_addr(Region.ACT, a_addr[..., None] + i)
            add(reads, Region.ACT, rows_addr)
            vals = self.mem[Region.ACT][rows_addr]
            best = vals.argmax(axis=2)                              # the first maximum
            pooled = np.take_along_axis(vals, best[:, :, None], axis=2)[:, :, 0]
            if tile_b:
                pooled = np.broadcast_to(pooled, (ny * nx,) + pooled.shape[1:])
            values = np.broadcast_to(expand(pooled)[:, :, :, None, :],
                                     (n_pos, tr_n, S, tc_n, S))
            dest, dest_region = ins["row_base"] + off, Region.ACT
            if op == Op.POOL_CODE:
                code_addr = self._check_addr(
                    Region.CODE, ins["aux_base"] + (rows_addr - ins["a_base"]))
                codes = self.mem[Region.CODE][code_addr]
                k_idx = ar(codes.shape[2])[None, None, :, None, None]
                new = np.where(k_idx == best[:, :, None], codes, ReluCode.ZERO)
                add(writes, Region.CODE, code_addr)
                extra.append((Region.CODE, code_addr, new))
            keep = np.ones((1, 1, 1, 1, 1), dtype=bool)
            col_region = None
        else:
            a_addr = self._check_addr(Region.ACT, a_addr)
            b_addr = self._check_addr(b_region, b_addr)
            add(reads, Region.ACT, a_addr)
            add(reads, b_region, b_addr)
            a_words = self.mem[Region.ACT][a_addr]                   # (n_a, tr, K, S)
            b_words = self.mem[b_region][b_addr]                     # (n_b, tc, K, S)
            n_a, n_b, k_len = a_words.shape[0], b_words.shape[0], a_words.shape[2]
            a_mat = a_words.transpose(0, 1, 3, 2).reshape(n_a * tr_n * S, k_len)
            b_mat = b_words.transpose(2, 0, 1, 3).reshape(k_len, n_b * tc_n * S)
            acc = self._product(a_mat, b_mat).reshape(n_a, tr_n, S, n_b, tc_n, S)
            acc = acc[:, :, :, 0] if not tile_b else acc[0].transpose(2, 0, 1, 3, 4)
            acc = expand(acc)                                        # (n_pos, tr, i, tc, j)
            r = (tr[:, None] * S + i[None, :])                       # row index (tr, i)
            col = tc[:, None] * S + i[None, :]                       # column index (tc, j)
            keep = ((r < ins["row_len"])[None, :, :, None, None]
                    & (col < ins["col_len"])[None, None, None, :, :])
            if op == Op.FORWARD:
                y = nitro_scale(acc, ins["divisor"]).astype(np.int64)
                values = nitro_relu(y, ins["inv_slope"]).astype(np.int64)
                code_addr = self._check_addr(Region.CODE, ins["aux_base"] + off)
                add(writes, Region.CODE, code_addr)
                extra.append((Region.CODE, code_addr,
                              np.where(keep, relu_codes(y), ReluCode.ZERO)))
                dest, dest_region, col_region = ins["row_base"] + off, Region.ACT, Region.ACT
            elif op == Op.SCALE:
                values = nitro_scale(acc, ins["divisor"]).astype(np.int64)
                dest, dest_region, col_region = ins["row_base"] + off, Region.ACT, Region.ACT
            elif op == Op.LOSS:
                lab_addr = self._check_addr(Region.LABEL, r.reshape(-1))
                labels = self.mem[Region.LABEL][lab_addr].reshape(tr_n, S)
                add(reads, Region.LABEL, lab_addr)
                e = nitro_scale(acc, ins["divisor"]).astype(np.int64)
                e = e - ONE_HOT_VALUE * (col[None, None, None] == labels[None, :, :, None, None])
                if self.pad_errors:
                    e = np.where((labels == PAD_LABEL)[None, :, :, None, None], 0, e)
                values = e
                dest, dest_region, col_region = ins["row_base"] + off, Region.ERR, Region.ACT
            elif op == Op.BACKWARD:
                code_addr = self._check_addr(Region.CODE, ins["aux_base"] + off)
                add(reads, Region.CODE, code_addr)
                code = self.mem[Region.CODE][code_addr]              # (n_pos, tr, i, tc, j)
                lo, hi = signed_range(g.err_width)
                if acc.size and (acc.min() < lo or acc.max() > hi):
                    self.overflow["backerr"] = True
                    acc = np.clip(acc, lo, hi)
                div = tdiv(acc, ins["inv_slope"])
                values = np.where(code == ReluCode.ZERO, 0,
                                  np.where(code == ReluCode.DIV, div, acc))
                dest, dest_region, col_region = ins["row_base"] + off, Region.ERR, None
            else:  # SGD
                w_addr = self._check_addr(Region.WGT, ins["row_base"] + off)
                w_old = self.mem[Region.WGT][w_addr]
                w_new = sgd_update(w_old, acc, ins["d_g"], 1, ins["d_w"])
                lo, hi = signed_range(g.wgt_width)
                if w_new.size and (w_new.min() < lo or w_new.max() > hi):
                    self.overflow["sgd"] = True
                    w_new = np.clip(w_new, lo, hi)
                values = w_new
                dest, dest_region, col_region = w_addr, Region.WGT, Region.WGT

        # masks: rows >= row_len and lanes (tc*S + lane) >= col_len are written as 0
        values = np.where(keep, values, 0)
        dest = self._check_addr(dest_region, dest)
        add(writes, dest_region, dest)
        if col_en:
            col_addr = self._check_addr(col_region, col_addr)
            add(writes, col_region, col_addr)
            # column c of a tile: lanes i = values[..., i, tc, c]
            col_values = values.transpose(0, 1, 3, 4, 2)
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
        return tiles, tiles * beat_count(ins)

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
