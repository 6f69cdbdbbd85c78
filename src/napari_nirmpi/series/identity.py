"""Identity of input files: what a store records of its sources, so that a resume refuses a
store computed from other data (and accepts a copied file: its content is what counts)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import NirmpiError


def file_identity(path) -> dict:
    """Path, size, mtime and a quick content hash (sha256 of size + first and last 4 MiB)."""
    p = Path(path).resolve()
    if not p.is_file():
        raise NirmpiError(f"{p}: file not found")
    st = p.stat()
    h = hashlib.sha256(str(st.st_size).encode())
    block = 4 << 20
    with open(p, "rb") as f:
        h.update(f.read(block))
        if st.st_size > 2 * block:
            f.seek(st.st_size - block)
            h.update(f.read(block))
        elif st.st_size > block:
            h.update(f.read())
    return {"path": str(p), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns),
            "sha256_head_tail_4MiB": h.hexdigest()}


def same_source(a: dict, b: dict) -> bool:
    # mtime is recorded but not compared: copying a file changes it, the content hash does not
    return all(a.get(k) == b.get(k) for k in ("size", "sha256_head_tail_4MiB"))
