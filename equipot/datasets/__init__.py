"""Data sets bundled with equipot (see each folder's README and LICENSE).

A model file records its training data's paths (``metadata["data"]``); a bundled file is
recorded by name, ``bundled:<name>`` (``portable``), which every installation resolves to its
own copy (``located``): fine-tuning replays the source's data from this record.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

ROOT = Path(str(resources.files(__name__)))  # where the bundled files are
PREFIX = "bundled:"  # how a model file records one (``portable``)


def bundled(name: str) -> str:
    """Absolute path of a bundled file, e.g. ``bundled("rmd17_ethanol/train.xyz")``."""
    path = ROOT / name
    if not path.exists():
        raise FileNotFoundError(f"equipot has no bundled file '{name}'")
    return str(path)


def portable(path: str | None) -> str | None:
    """``bundled:<name>`` for a path inside equipot's bundled data; any other path as given."""
    if path is None:
        return None
    resolved, root = Path(path).resolve(), ROOT.resolve()
    if resolved.is_relative_to(root) and resolved.is_file():
        return PREFIX + resolved.relative_to(root).as_posix()
    return path


def located(recorded: str | None) -> str | None:
    """The path of a recorded data path (``portable``'s inverse) in this installation."""
    if recorded is not None and recorded.startswith(PREFIX):
        return bundled(recorded[len(PREFIX):])
    return recorded
