"""The link soak: a training run through a link that flips bits, drops, duplicates and loses
bytes and frames, bit-exact with golden or it fails.

    .venv/bin/python benchmarks/link_soak.py            # 25 epochs: about 100,000 frames

Host: nitrod/link.py's LinkClient (retries, sequence numbers) under nitrod/backends.py's
AcceleratorBackend, as for a board.  Line: tests/support/link_soak.py's FaultyLine.  Device:
the reference model of the board's HostLink (tests/support/benches/tb_host_link_model.py, the
model the gateware is checked against byte for byte in tests/hw/link) driving a Trainer's host
bus modelled over nitrod/isa_model.py (MachineBus): the whole protocol at byte level, in Python,
fast enough for 100,000 frames.  The gateware's own soak, through the simulated UART in
Verilator, is tests/sim/test_sim_link.py::test_training_through_a_faulty_uart_is_bit_exact
(smaller: the simulated UART moves about 600 bytes/s).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.link_soak import run_soak  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="link_soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=25, help="digits epochs (about 4,000 frames each)")
    ap.add_argument("--hidden", default="16", help="MLP hidden sizes")
    ap.add_argument("--rate", type=float, default=0.015,
                    help="probability that a request, and separately its response, is corrupted")
    ap.add_argument("--lose-rate", type=float, default=0.002,
                    help="probability that a response is lost whole")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--retries", type=int, default=8)
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    r = run_soak(epochs=args.epochs, hidden=tuple(int(h) for h in args.hidden.split(",")),
                 rate=args.rate, lose_rate=args.lose_rate, seed=args.seed, retries=args.retries)
    print(f"{r['frames']} frames ({r['requests']} requests and their responses), "
          f"{r['corrupted_frames']} corrupted ({r['corrupted_percent']}%), "
          f"{r['faults_total']} faults injected: " + ", ".join(f"{k} {v}" for k, v in r["faults"].items()))
    print(f"recovered: {r['retries']} retries, {r['recovered_requests']} requests answered after a "
          f"retry ({r['timeouts']} timeouts, {r['crc_errors']} response CRC errors, "
          f"{r['error_responses']} ERROR answers, {r['stale_responses']} late answers skipped); "
          f"{r['repeated_writes_not_applied']} repeated WRITEs answered without writing again")
    print(f"{r['steps']} training steps of MLP {r['network']} in {r['seconds']} s: "
          f"{'bit-exact with golden' if r['bit_exact'] else 'DIFFERS FROM GOLDEN'}; no request hung")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    return 0 if r["bit_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
