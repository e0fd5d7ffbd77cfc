"""ruff's checks (pyproject.toml [tool.ruff]): no syntax error, no undefined name, no unused
import or variable in the packages and the tests."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run([str(ruff), "check", "--no-cache", "golden", "hw", "sim", "boards",
                             "nitrod", "tests"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
