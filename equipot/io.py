"""Atomic file writes: a reader never sees a half-written checkpoint, cache or output."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                         suffix=f".tmp{path.suffix}")  # writers may check it
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it private; give it the usual mode
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def atomic_save(obj, path: str | Path) -> None:
    """``torch.save`` that leaves either the old file or the complete new one."""
    with atomic_path(path) as temporary:
        torch.save(obj, temporary)


def atomic_write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)
