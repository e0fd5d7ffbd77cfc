"""``nitrod build``: the board build (boards/build.py) with what the application knows.

The board flow synthesises a board's trainer core; this adds, to each board's
``report.json`` and the summary table, the board's default network: the largest batch the
geometry's memories hold for it (the compiler lays it out), the cycles of one training step
(the core's exact cycle model, ``TrainerCore.program_cycles``, or ``--cycles-per-step``) and the
compute-only training samples/s that gives at the clock the build runs; and beside it
``end_to_end_samples_per_s``, the link counted (nitrod/link_cost.py: the bytes of each step
both ways at the bitstream's baud rate, and an epoch's weight reads), with the link's figures
in ``link_cost``.
"""

from __future__ import annotations

import argparse
import math
import sys

from boards import build
from golden.network import ARCHITECTURES, Network, NetworkSpec, parse_layers

from .compiler import CompileError, compile_network, hardware_refusal

__all__ = ["network_spec", "network_max_batch", "annotate", "link_figures", "main", "COLUMNS",
           "REPORTED_CNNS", "cnn_networks", "multiplier_ceiling"]

#: the learning rate the projection's programs are compiled with (any: cycles do not depend
#: on it)
PROJECTION_LR_INV = 512


def network_spec(board) -> NetworkSpec:
    """The board's default network (``board.network["layers"]``) as a NetworkSpec (a square
    input as one channel of side x side)."""
    sizes = board.network["layers"]
    side = math.isqrt(sizes[0])
    shape = (1, side, side) if side * side == sizes[0] else (1, 1, sizes[0])
    return NetworkSpec(input_shape=shape, classes=sizes[-1],
                       layers=tuple(f"l{n}" for n in sizes[1:-1]))


#: the CNNs every trainer build reports on (beside the board's own ``cnn_network``): the
#: digits ``small`` CNN and a 28 x 28 MNIST CNN
REPORTED_CNNS = (
    {"name": "digits small CNN", "dataset": "digits", "input_shape": [1, 8, 8],
     "layers": ARCHITECTURES["small"][0]},
    {"name": "MNIST CNN", "dataset": "mnist5k", "input_shape": [1, 28, 28],
     "layers": "c16,p,c32,p,c64,l64"},
)


def cnn_networks(board, geometry) -> list[dict]:
    """For each CNN of :data:`REPORTED_CNNS` and the board's ``cnn_network``: the largest
    batch the geometry's memories hold (``max_batch``, None if not even one sample) and why one
    more does not fit (``does_not_fit``: the memories that are short), and whether the board's
    core runs CNN programs (``core_runs_cnn``; if not, ``refused`` says so)."""
    out = []
    for cnn in (*REPORTED_CNNS, board.cnn_network):
        spec = NetworkSpec(tuple(cnn["input_shape"]), 10, parse_layers(cnn["layers"]))
        max_batch, reason = network_max_batch(spec, geometry)
        entry = {**cnn, "max_batch": max_batch, "does_not_fit": reason,
                 "core_runs_cnn": board.trainer.RUNS_CNN}
        refusal = hardware_refusal(spec, board.trainer.RUNS_CNN)
        if refusal:
            entry["refused"] = refusal
        out.append(entry)
    return out


def network_max_batch(spec: NetworkSpec, geometry, limit: int = 1024):
    """``(batch, reason)``: the largest batch of ``spec`` (any network: an MLP or a CNN) the
    compiler lays out in ``geometry`` (``None`` if not even 1), and why one more does not fit
    (``None`` at ``limit``)."""
    def fits(batch):
        try:
            compile_network(spec, geometry, batch)
            return True, None
        except CompileError as exc:
            return False, str(exc)

    ok, reason = fits(1)
    if not ok:
        return None, reason
    lo, hi = 1, 2
    while hi <= limit and fits(hi)[0]:
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:                            # fits(lo), not fits(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid)[0] else (lo, mid)
    return lo, fits(lo + 1)[1] if lo < limit else None


def annotate(board, geometry, report, *, cycles_per_step=None, batch=None) -> dict:
    """The network entries of a build's report: for a trainer core ``network`` (with
    ``max_batch``) and ``cnn_networks`` (:func:`cnn_networks`); ``batch`` and ``cycles_per_step`` (given, or from the trainer's cycle model
    at the largest batch) and ``compute_samples_per_second`` at the core clock
    (``target_mhz``), when timing is met; beside it ``end_to_end_samples_per_s`` and
    ``link_cost`` (:func:`link_figures`: with the cycle model, the partial step of an epoch
    takes its own cycles; with ``cycles_per_step``, every step those)."""
    out = {}
    max_batch = None
    given_cycles = cycles_per_step
    if report.get("core") == "trainer":
        spec = network_spec(board)
        max_batch, limit = network_max_batch(spec, geometry)
        out["network"] = {**board.network, "max_batch": max_batch, "max_batch_limit": limit}
        out["cnn_networks"] = cnn_networks(board, geometry)
    if cycles_per_step is None and max_batch:
        plan = compile_network(spec, geometry, max_batch)
        cycles_per_step = board.trainer.program_cycles(geometry, plan.program(PROJECTION_LR_INV))
        batch = max_batch if cycles_per_step else None
        if cycles_per_step:
            out["cycles_per_step_from"] = "the core's cycle model (program_cycles)"
    out.update(cycles_per_step=cycles_per_step, batch=batch, compute_samples_per_second=None,
               end_to_end_samples_per_s=None)
    if cycles_per_step and batch:
        if report.get("timing_met"):
            out["compute_samples_per_second"] = round(
                report["target_mhz"] * 1e6 / cycles_per_step * batch, 1)
            out.update(multiplier_ceiling(board, report, out["compute_samples_per_second"]))
        else:
            report["notes"].append("timing not met at the core clock: no throughput projected")
    if report.get("core") == "trainer" and batch:
        try:
            out["link_cost"] = link_figures(board, geometry, batch, report,
                                            cycles_per_step=given_cycles)
        except Exception as exc:              # a figure, not the build: say why it is missing
            report["notes"].append(f"link cost not computed: {type(exc).__name__}: {exc}")
        else:
            if out["compute_samples_per_second"] is not None:
                out["end_to_end_samples_per_s"] = out["link_cost"]["epoch"]["samples_per_s"]
    return out


def multiplier_ceiling(board, report, compute: float) -> dict:
    """The device's multiplier ceiling for the board's default network: every multiplier of
    the device (``resources["dsp"]``: MULT18X18D, SB_MAC16) doing a useful MAC every cycle at
    the clock the build runs, ``multiplier_ceiling_samples_per_s``, and the fraction of it
    ``compute`` (samples/s) reaches."""
    macs = Network(network_spec(board)).macs_per_sample()
    ceiling = board.resources["dsp"] * report["target_mhz"] * 1e6 / macs
    return {"multiplier_ceiling_samples_per_s": round(ceiling, 1),
            "multiplier_ceiling_fraction": round(compute / ceiling, 4)}


def link_figures(board, geometry, batch, report, *, cycles_per_step=None) -> dict:
    """The link's cost of the board's default network at ``batch`` (nitrod/link_cost.py) at the
    bitstream's baud rate and burst, pipelined: a step's bytes both ways, frames, round trips
    (the polls apart) and times, and an epoch of the network's training set (its weights read
    once, as ``nitrod board train`` does to score the test split).  Times need the cycles
    (``cycles_per_step`` for every step, else the core's cycle model) and the core clock."""
    from .link_cost import LinkCostModel, LinkSettings

    spec = network_spec(board)
    link = report.get("link") or {}
    settings = LinkSettings(baud=link.get("baud", board.baud),
                            max_burst=link.get("link_max_burst", board.link_max_burst))
    clock_hz = report["target_mhz"] * 1e6
    model = LinkCostModel(spec, geometry, batch, settings,
                          macs=board.trainer.mac_elements(geometry),
                          cycles=cycles_per_step, core=board.trainer, clock_hz=clock_hz)
    step = model.step()
    samples = board.network.get("train_samples", batch)
    epoch = model.epoch(samples)
    inputs = model.inputs_as_bytes()

    def rounded(x, digits=6):
        return None if x is None else round(x, digits)

    t = step["traffic"]
    return {
        "baud": settings.baud, "max_burst": settings.max_burst, "pipelined": True,
        "step": {"batch": batch, "bytes_to_board": t.to_board, "bytes_from_board": t.from_board,
                 "frames": t.frames, "polls": step["polls"],
                 "round_trips": t.round_trips - step["polls"],
                 "link_seconds": rounded(step["link_seconds"]),
                 "run_seconds": rounded(step["run_seconds"]),
                 "samples_per_s": rounded(step["samples_per_s"], 1)},
        "epoch": {"samples": samples, "steps": epoch["steps"],
                  "bytes": epoch["traffic"].bytes,
                  "weight_read_bytes": epoch["weights_traffic"].bytes,
                  "seconds": rounded(epoch["seconds"], 4),
                  "samples_per_s": rounded(epoch["samples_per_s"], 1)},
        "inputs_as_bytes": {"input_bytes_now": inputs["input_payload_bytes_now"],
                            "input_bytes_then": inputs["input_payload_bytes_as_bytes"],
                            "step_bytes_then": inputs["step_bytes_as_bytes"],
                            "step_samples_per_s_then": rounded(inputs["samples_per_s_as_bytes"],
                                                               1),
                            "note": "not built: each input sent once, a byte a value"},
    }


#: the summary table: the board build's columns, then the network's
COLUMNS = [*build.COLUMNS,
           ("batch", "batch", None), ("cycles_per_step", "cycles/step", None),
           ("compute_samples_per_second", "compute samples/s", None),
           ("end_to_end_samples_per_s", "end-to-end samples/s", None),
           ("multiplier_ceiling_fraction", "of the multiplier ceiling",
            lambda r: None if r.get("multiplier_ceiling_fraction") is None
            else f"{r['multiplier_ceiling_fraction']:.1%}"),
           ("cnn_networks", "CNN batch", lambda r: _cnn_cell(r.get("cnn_networks")))]


def _cnn_cell(cnns) -> str | None:
    """The summary's CNN cell: each reported CNN's layers and largest batch ("-": does not
    fit; "(refused)": the core does not run CNN programs)."""
    if not cnns:
        return None
    cells = [f"{c['layers']}: {c['max_batch'] or '-'}" for c in cnns]
    return "; ".join(cells) + (" (refused: the core runs MLPs only)"
                               if not cnns[0]["core_runs_cnn"] else "")


def main(argv=None, prog="build") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description="Synthesise, place, route and pack a board top (YoWASP) and "
                               "write the bitstream and report.json.")
    build.add_arguments(parser)
    parser.add_argument("--cycles-per-step", type=int, default=None, metavar="N",
                        help="cycles one training step takes, for the projected throughput "
                             "(default: the core's cycle model, where it has one)")
    parser.add_argument("--batch", type=int, default=None, metavar="M",
                        help="samples per step (with --cycles-per-step)")
    args = parser.parse_args(argv)
    if (args.cycles_per_step is None) != (args.batch is None):
        print(f"{prog}: --cycles-per-step and --batch go together", file=sys.stderr)
        return 2
    return build.run(args, columns=COLUMNS, annotate=lambda board, geometry, report: annotate(
        board, geometry, report, cycles_per_step=args.cycles_per_step, batch=args.batch))
