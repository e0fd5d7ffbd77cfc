"""Synthesis results kept between builds of the same netlist.

A board build runs Yosys on the design Amaranth wrote (``top.il`` and the script ``top.ys``),
then nextpnr with a placement seed.  Builds that differ only in nextpnr's options (a sweep over
placement seeds) synthesise the same netlist: Yosys is deterministic, so its outputs are kept
in ``~/.cache/nitrod/synth/<key>`` (``NITROD_SYNTH_CACHE`` to move it), the key a hash of
Yosys's inputs and version, and a later build with the same key copies them instead of running
Yosys again.  On an ECP5-85F Trainer that is most of an hour per build saved.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["SYNTH_OUTPUTS", "synth_key", "cache_dir", "restore", "store"]

#: what Yosys writes in a build directory (the netlist, its log, the statistics)
SYNTH_OUTPUTS = ("top.json", "top.rpt", "yosys_stat.json")
#: Yosys's inputs in a build directory
SYNTH_INPUTS = ("top.ys", "top.il")


def cache_dir() -> Path:
    return Path(os.environ.get("NITROD_SYNTH_CACHE")
                or Path.home() / ".cache" / "nitrod" / "synth")


def synth_key(build_dir: Path, yosys_version: str | None) -> str | None:
    """The hash of Yosys's inputs in ``build_dir`` and its version (None: no key, no
    caching, e.g. an unknown version)."""
    if not yosys_version:
        return None
    h = hashlib.sha256(yosys_version.encode())
    for name in SYNTH_INPUTS:
        path = build_dir / name
        if not path.is_file():
            return None
        h.update(name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:24]


def restore(key: str | None, build_dir: Path) -> bool:
    """Copy the cached outputs of ``key`` into ``build_dir``; False if there are none."""
    if key is None:
        return False
    entry = cache_dir() / key
    if not all((entry / name).is_file() for name in SYNTH_OUTPUTS):
        return False
    for name in SYNTH_OUTPUTS:
        shutil.copy2(entry / name, build_dir / name)
    return True


def store(key: str | None, build_dir: Path) -> None:
    """Keep ``build_dir``'s Yosys outputs under ``key`` (written whole: a staging folder
    renamed into place; an entry another build stored first stays)."""
    if key is None or not all((build_dir / n).is_file() for n in SYNTH_OUTPUTS):
        return
    entry = cache_dir() / key
    if entry.is_dir():
        return
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=entry.parent))
    for name in SYNTH_OUTPUTS:
        shutil.copy2(build_dir / name, staging / name)
    try:
        staging.rename(entry)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
