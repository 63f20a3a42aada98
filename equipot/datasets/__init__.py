"""Data sets bundled with equipot (see each folder's README and LICENSE)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def bundled(name: str) -> str:
    """Absolute path of a bundled file, e.g. ``bundled("rmd17_ethanol/train.xyz")``."""
    path = Path(str(resources.files(__name__).joinpath(name)))
    if not path.exists():
        raise FileNotFoundError(f"equipot has no bundled file '{name}'")
    return str(path)
