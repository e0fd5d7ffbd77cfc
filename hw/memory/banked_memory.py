"""A memory cut into banks of block-RAM depth, so that no multiplexer sits behind a block RAM.

A ``lib.memory.Memory`` deeper than one block RAM becomes, in Yosys, several blocks cascaded in
depth with a LUT multiplexer on their outputs, between the blocks and the first flip-flop.  On
the ECP5 a DP16KD's clock-to-output is 5.8 ns at speed grade 6 (no output register: Yosys never
infers it), so that multiplexer, and the routes to it from blocks spread over the die, do not
fit a 10 ns cycle.  :class:`BankedMemory` keeps one ``Memory`` per ``bank_depth`` words (each
one block deep on the device), and each reader registers every bank's word, beside its block,
before the bank is selected -- from flip-flops (:meth:`BankedMemory.registered`).

Ports (one write and one read port, like the Trainer's memories)
-----------------------------------------------------------------
* ``wr``: ``addr``, ``data``, ``en`` -- write ``data`` at ``addr`` (only the addressed bank is
  written; an address beyond ``depth`` writes nothing).
* ``rd``: ``addr``, ``en`` -- read ``addr``.  Every bank reads its word at ``addr``'s low bits
  and the bank number is registered beside them, all on ``en`` (synchronous, non-transparent,
  held while ``en`` is 0: a block RAM read port).

Registered ports (``registered_ports=True``)
--------------------------------------------
A block RAM's address, enable and data pins are the far end of whatever drives them: a
multiplexer in front of them (the host's port or the datapath's) adds its routing from the
logic that drives it to the blocks, spread over the die, in the same cycle.  With
``registered_ports`` the memory keeps the last register in front of its blocks itself, so that
the pins come from flip-flops the placer can put beside the blocks:

* ``rd`` gains ``load``: a read address register loads ``addr`` in cycles with ``load``, and a
  cycle with ``en`` reads the address that register holds (so an address reaches the block one
  ``load`` later: a reader whose stages move on one enable passes it as both ``load`` and
  ``en``, and the word arrives one stage later; a reader whose address is a register can pass
  that register's next value with ``load`` = 1, and nothing is later);
* ``wr``'s ``addr``, ``data`` and ``en`` are registered once (the enable as a flip-flop per
  bank, decoded from the port's address): a write lands one cycle later.

The collision watch then compares the registered values (what the blocks see).

Registered read enables (``registered_read_enable=True``, with ``registered_ports``)
-----------------------------------------------------------------------------------
The read enable is a block's clock enable (a DP16KD's ``CEB``): one net to every block of
every bank, over the whole die, which even from a flip-flop is a long route.  With ``registered_read_enable`` the memory registers ``rd.en`` too, a
copy per bank (hw/replica.py) that the placer can put beside that bank's blocks: a cycle with
``en`` reads, in the *next* cycle, the address the address register holds then.  A reader
whose enable is a register passes that register's next value and nothing is later; a reader
that passes its enable itself reads one cycle later.

A reader does not see a data port: it calls :meth:`BankedMemory.registered` with the enable of
the register it would have loaded from a read port's ``data``, and gets that register's value.

Shared bank registers
---------------------
By default each reader keeps its own register of every bank, so a block's output drives one
flip-flop per reader, and each reader's multiplexer pulls its registers towards itself: with
many banks over the die, most of them end up far from their blocks (the block's 5.8 ns
clock-to-output and a route across the die in one cycle).  A memory whose
readers take turns (one read port: one reader at a time uses it) calls
:meth:`BankedMemory.share_registers` before any :meth:`~BankedMemory.registered`: one register
per bank, loaded on an enable the parent drives (the active reader's enable, a copy per bank),
and every reader's :meth:`~BankedMemory.registered` selects from those (each reader keeps its
own registered bank number).  That saves flip-flops; on the ECP5 the shared registers are
the blocks' own output registers (below), so they sit in the block.

ECP5 block RAM (``block="dp16kd"``)
-----------------------------------
Each bank is DP16KDs instantiated by hand (hw/vendor/ecp5_bram.py) instead of a ``Memory`` that
Yosys maps.  With shared bank registers, those registers are the blocks' own output registers
(``REGMODE_B = "OUTREG"``, loaded on the enables :meth:`share_registers` returns, on the
blocks' ``OCEB``): the word leaves the block from a flip-flop, in the same cycle as before.
Without sharing the blocks have no output register and each reader keeps its own, as above.
Amaranth's simulator cannot run it; Verilator runs it with the block's model.

Collisions
----------
``collision`` (output) is 1 two cycles after a cycle in which the read and the write port
addressed the same word.  The simulation (Amaranth, Verilator) then reads the old word; a DP16KD
does not define it, and Yosys emulates the old word with a one-cycle write delay and a
multiplexer behind the block.  The board build tells Yosys that the Trainer's memories never
collide (``COLLISION_X_MASK``, boards/build.py), which removes that logic, and the Trainer
reports any collision (``STATUS.collision``) so that the claim is checked on every run.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import Module, Mux, Shape, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from hw.vendor.ecp5_bram import dp16kd_bank, dp16kd_mode
from hw.replica import replica, replicas

__all__ = ["BankedMemory", "BLOCKS"]

#: What each bank is made of: ``"memory"`` (a ``lib.memory.Memory``: any simulator, any
#: device) or ``"dp16kd"`` (ECP5 block RAM instantiated by hand, hw/vendor/ecp5_bram.py: Verilator
#: with the block's model, and the ECP5 build)
BLOCKS = ("memory", "dp16kd")


class BankedMemory(wiring.Component):
    """``depth`` words of ``shape`` in ``ceil(depth / bank_depth)`` banks (module docstring).

    Parameters
    ----------
    shape : the word's shape (a width or a ``lib.data`` layout).
    depth : words (>= 1).
    bank_depth : words per bank, a power of two (the device's block depth for the word).
    registered_ports : the read address and the write port registered in front of the
        blocks (module docstring).
    block : what each bank is made of, one of :data:`BLOCKS` (module docstring, ECP5 block
        RAM).
    registered_read_enable : ``rd.en`` registered, a copy per bank (module docstring; needs
        ``registered_ports``).

    Attributes: ``banks`` (their number), ``bank_sizes`` (words in each bank, in order),
    ``addr_width``.
    """

    def __init__(self, shape, depth: int, bank_depth: int = 2048, *,
                 registered_ports: bool = False, registered_read_enable: bool = False,
                 block: str = "memory"):
        if depth < 1 or bank_depth < 1 or bank_depth & (bank_depth - 1):
            self._MustUse__silence = True       # never built: no "unused" warning
            raise ValueError(f"need depth >= 1 and a power-of-two bank_depth, got depth "
                             f"{depth}, bank_depth {bank_depth}")
        if block not in BLOCKS:
            self._MustUse__silence = True
            raise ValueError(f"block must be one of {BLOCKS}, not {block!r}")
        if registered_read_enable and not registered_ports:
            self._MustUse__silence = True
            raise ValueError("registered_read_enable needs registered_ports")
        self.bank_depth = min(bank_depth, 1 << ceil_log2(depth))
        if block == "dp16kd":
            try:
                dp16kd_mode(self.bank_depth)        # a bank must fit one block's depth
            except ValueError:
                self._MustUse__silence = True
                raise
        self.block = block
        self.shape, self.depth = shape, depth
        self.registered_ports = bool(registered_ports)
        self.registered_read_enable = bool(registered_read_enable)
        self.banks = -(-depth // self.bank_depth)
        self.addr_width = max(1, ceil_log2(depth))
        self._low = exact_log2(self.bank_depth)
        self.bank_sizes = [min(self.bank_depth, depth - b * self.bank_depth)
                           for b in range(self.banks)]
        super().__init__({
            "wr": In(wiring.Signature({"addr": Out(self.addr_width), "data": Out(shape),
                                       "en": Out(1)})),
            "rd": In(wiring.Signature({"addr": Out(self.addr_width), "en": Out(1),
                                       **({"load": Out(1)} if registered_ports else {})})),
            "collision": Out(1),
        })
        # each bank's read data and the registered bank number, driven in elaborate()
        self._bank_data = [Signal(shape, name=f"bank{b}_data") for b in range(self.banks)]
        self._shared = None             # share_registers(): the bank registers every reader uses
        self._out_en = None             # with block="dp16kd": those registers' enables (OCEB)
        self._r_bank = Signal(range(max(2, 1 << (self.addr_width - self._low))), name="r_bank")

    def share_registers(self, m: Module, name: str) -> list:
        """One register per bank (in the parent's ``m``), which every later
        :meth:`registered` of this memory selects from (module docstring).  Returns one enable
        signal per bank for the parent to drive: each must equal, in every cycle, the enable
        of the reader that uses the port then (the ``en`` it passes to :meth:`registered`)."""
        if self._shared is not None:
            raise ValueError("share_registers() was already called for this memory")
        bank_en = [Signal(name=f"{name}_en{b}") for b in range(self.banks)]
        if self.block == "dp16kd":      # the blocks' own output registers (elaborate())
            self._shared, self._out_en = self._bank_data, bank_en
        else:
            self._shared = self._bank_registers(m, bank_en, name)
        return bank_en

    def _bank_registers(self, m: Module, bank_en, name: str) -> list:
        """Every bank's word registered (in ``m``), bank ``b``'s on ``bank_en[b]``."""
        regs = [Signal(self.shape, name=f"{name}_bank{b}", reset_less=True)
                for b in range(self.banks)]
        for reg, data, reg_en in zip(regs, self._bank_data, bank_en):
            with m.If(reg_en):
                m.d.sync += reg.eq(data)
        return regs

    def groups(self, group: int) -> int:
        """Registers of the first step of :meth:`registered`'s two-step select with ``group``
        banks per group (the last group may be short)."""
        return -(-self.banks // group)

    def registered(self, m: Module, en, name: str, bank_en=None, group: int | None = None,
                   group_en=None):
        """Registers (in the parent's ``m``) loaded on ``en`` with every bank's word and the
        bank number; returns the word of the read bank, selected from those flip-flops: what a
        register loaded on ``en`` from a single read port's ``data`` would hold.

        ``bank_en``: optionally one signal per bank, each equal to ``en`` in every cycle (copies,
        hw/replica.py), on which that bank's register loads instead.

        After :meth:`share_registers` only the bank number is a register of this reader's; the
        words come from the shared bank registers (and ``bank_en`` is refused).

        ``group`` (a power of two): the bank is selected in two steps, with registers between
        them: in the cycle after ``en``, one register per group of ``group`` banks loads its
        group's word of the read bank (and one the group's number), and the returned word is
        selected from those.  It is then one cycle later: what a register loaded in the cycle
        after ``en`` from the word above would hold (for any number of banks, one included).
        The two multiplexers are each smaller than the one (a wide word from banks spread over
        the die).

        ``group_en`` (with ``group``): the group registers load on it instead of in the cycle
        after ``en``: a signal equal to ``en`` in every cycle (a copy), or a list of such, one
        per group register.  The returned word is then what a register loaded on ``en`` from
        the word above would hold: one more stage of a pipeline whose stages all advance with
        ``en`` (a reader that may hold its words, as the TileEngine's read ports do)."""
        if group is not None and (group < 1 or group & (group - 1)):
            raise ValueError(f"group must be a power of two, got {group}")
        if group_en is not None:
            if group is None:
                raise ValueError("group_en needs group")
            groups = self.groups(group)
            if isinstance(group_en, (list, tuple)) and len(group_en) != groups:
                raise ValueError(f"group_en has {len(group_en)} signals for {groups} groups")
        if self._shared is not None:
            if bank_en is not None:
                raise ValueError("this memory's bank registers are shared: no bank_en")
            regs = self._shared
        else:
            if bank_en is None:
                bank_en = [en] * self.banks
            if len(bank_en) != self.banks:
                raise ValueError(f"bank_en has {len(bank_en)} signals for {self.banks} banks")
            regs = self._bank_registers(m, bank_en, name)
        if self.banks == 1 and group is None:
            return regs[0]
        bank = Signal.like(self._r_bank, name=f"{name}_bank")
        if self.banks > 1:
            with m.If(en):
                m.d.sync += bank.eq(self._r_bank)
        if group is None:
            return _select(regs, bank)
        low = exact_log2(group)
        groups = self.groups(group)
        if group_en is None:
            en_q = Signal(name=f"{name}_en_q")
            m.d.sync += en_q.eq(en)
            group_en = en_q
        if not isinstance(group_en, (list, tuple)):
            group_en = [group_en] * groups
        group_words = [Signal(self.shape, name=f"{name}_group{k}", reset_less=True)
                       for k in range(groups)]
        which = Signal(max(1, len(bank) - low), name=f"{name}_group", reset_less=True)
        for k, (reg, reg_en) in enumerate(zip(group_words, group_en)):
            with m.If(reg_en):
                m.d.sync += reg.eq(_select(regs[group * k:group * (k + 1)], bank[:low]))
        with m.If(group_en[0]):
            m.d.sync += which.eq(bank[low:])
        return _select(group_words, which)

    def elaborate(self, platform):
        m = Module()
        low = self._low
        # what the blocks' pins see: the ports as they are, or registered (module docstring)
        if self.registered_ports:
            wr = SimpleNamespace(addr=Signal(self.addr_width, name="wr_addr_q", reset_less=True),
                                 data=Signal(self.shape, name="wr_data_q", reset_less=True),
                                 en=Signal(name="wr_en_q"))
            m.d.sync += [wr.addr.eq(self.wr.addr), wr.data.eq(self.wr.data),
                         wr.en.eq(self.wr.en)]
            rd = SimpleNamespace(addr=Signal(self.addr_width, name="rd_addr_q",
                                             reset_less=True), en=self.rd.en)
            with m.If(self.rd.load):
                m.d.sync += rd.addr.eq(self.rd.addr)
        else:
            wr, rd = self.wr, self.rd

        def bank_hit(addr, b, size):
            hit = (addr[low:] == b) if self.addr_width > low else 1
            if size < self.bank_depth:          # a short last bank: its address would wrap
                hit = hit & (addr < self.depth)
            return hit

        # each bank's write enable: decoded from the registered port, or (registered ports)
        # registered itself, a flip-flop per bank decoded from the port's inputs: the placer
        # can put it beside its blocks, whose CEA and WEA pins it drives alone (no decode
        # between one shared register and every block's pins)
        bank_w_en = []
        for b, size in enumerate(self.bank_sizes):
            if self.registered_ports:
                w_en = Signal(name=f"wr_en_q{b}")
                m.d.sync += w_en.eq(self.wr.en & bank_hit(self.wr.addr, b, size))
            else:
                w_en = wr.en & bank_hit(wr.addr, b, size)
            bank_w_en.append(w_en)
        # each bank's read enable: rd.en, or a copy of its own of rd.en registered (then rd.en
        # stands for a copy the collision watch and the bank number use)
        if self.registered_read_enable:
            bank_r_en = replicas(m, self.rd.en, self.banks, "rd_en_q")
            rd.en = replica(m, self.rd.en, "rd_en_q")
        else:
            bank_r_en = [rd.en] * self.banks
        for b, size in enumerate(self.bank_sizes):
            w_addr, r_addr = (wr.addr[:low], rd.addr[:low]) if low else (0, 0)
            if self.block == "dp16kd":
                blocks, word = dp16kd_bank(
                    depth=size, width=Shape.cast(self.shape).width, w_addr=w_addr,
                    w_data=wr.data, w_en=bank_w_en[b], r_addr=r_addr, r_en=bank_r_en[b],
                    out_en=None if self._out_en is None else self._out_en[b],
                    name=f"bank{b}")
                for k, inst in enumerate(blocks):
                    m.submodules[f"bank{b}_dp16kd{k}"] = inst
                m.d.comb += self._bank_data[b].eq(word)
                continue
            m.submodules[f"bank{b}"] = mem = Memory(shape=self.shape, depth=size, init=[])
            wp = mem.write_port()
            rp = mem.read_port(domain="sync", transparent_for=())
            m.d.comb += [
                wp.addr.eq(w_addr), wp.data.eq(wr.data), wp.en.eq(bank_w_en[b]),
                rp.addr.eq(r_addr), rp.en.eq(bank_r_en[b]),
                self._bank_data[b].eq(rp.data),
            ]
        # collision watch: the port strobes registered, compared in the next cycle, registered
        w_q, r_q = Signal(), Signal()
        wa_q, ra_q = (Signal(self.addr_width, reset_less=True) for _ in range(2))
        m.d.sync += [w_q.eq(wr.en), r_q.eq(rd.en), wa_q.eq(wr.addr),
                     ra_q.eq(rd.addr), self.collision.eq(w_q & r_q & (wa_q == ra_q))]
        if self.addr_width > low:
            with m.If(rd.en):
                m.d.sync += self._r_bank.eq(rd.addr[low:])
        return m


def _select(words: list, sel):
    """``words[sel]`` through a chain of multiplexers (the last word for any larger ``sel``)."""
    word = words[-1]
    for b in reversed(range(len(words) - 1)):
        word = Mux(sel == b, words[b], word)
    return word
