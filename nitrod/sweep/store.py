"""Run directories: configuration hashes, atomic writes, the completion marker."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

#: the file whose presence makes a run directory complete (written last)
MARKER = "done.json"


def config_hash(config: dict) -> str:
    """16 hex digits of the SHA-256 of ``config`` as canonical JSON (sorted keys)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_atomic(path, data) -> None:
    """Write ``data`` (str or bytes) to ``path`` through a temporary file in the same folder,
    flushed to disk and renamed over ``path``: a reader sees the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        with open(tmp, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def run_dir(out, run_hash: str) -> Path:
    return Path(out) / "runs" / run_hash


def is_done(out, run_hash: str) -> bool:
    return (run_dir(out, run_hash) / MARKER).is_file()
