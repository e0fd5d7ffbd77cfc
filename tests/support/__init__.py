"""What the tests share: the cocotb benches (:data:`BENCHES`), the slow reference model of the
arithmetic, the arithmetic units' stimulus and checks (:mod:`.units`) and the conformance suite
every trainer core runs (:mod:`.conformance`)."""

from pathlib import Path

#: the cocotb test modules that run inside the simulator (one bench per design)
BENCHES = Path(__file__).parent / "benches"
