"""The layers import one way (pyproject.toml's [tool.importlinter] contracts): golden <-
hw.contract <- hw <- sim, boards <- nitrod; inside hw the contract at the bottom and the
trainer cores at the top; the contract and golden need no Amaranth."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("golden", "hw", "sim", "boards", "nitrod")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).parent / "lint-imports"
    return subprocess.run([str(lint), "--config", str(cwd / "pyproject.toml")], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(cwd), "PATH": str(lint.parent)})


def _copy_tree(dest: Path) -> None:
    shutil.copy(ROOT / "pyproject.toml", dest)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dest / package,
                        ignore=shutil.ignore_patterns("__pycache__"))


def test_the_import_contracts_are_kept(tmp_path):
    _copy_tree(tmp_path)
    result = _lint_imports(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_gateware_module_importing_the_application_breaks_them(tmp_path):
    """The contracts can fail: a module of hw/ that imports nitrod, or a contract module that
    imports Amaranth, is reported."""
    _copy_tree(tmp_path)
    (tmp_path / "hw" / "units" / "probe.py").write_text("from nitrod import compiler\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "the packages import one way BROKEN" in result.stdout, result.stdout
    (tmp_path / "hw" / "units" / "probe.py").unlink()
    (tmp_path / "hw" / "contract" / "probe.py").write_text("import amaranth\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "pure Python (no Amaranth) BROKEN" in result.stdout, result.stdout
