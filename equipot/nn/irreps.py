"""Build-time checks that a block is given the features it can take."""

from __future__ import annotations

from e3nn import o3
from torch import nn


def require_irreps(block: nn.Module, irreps_in: o3.Irreps | str, *accepted: str) -> o3.Irreps:
    """``irreps_in`` if it is one of ``accepted``; otherwise a readable build-time error."""
    irreps_in = o3.Irreps(irreps_in)
    if irreps_in not in [o3.Irreps(irreps) for irreps in accepted]:
        raise ValueError(f"{type(block).__name__} takes features {' or '.join(accepted)}, "
                         f"but the module before it gives {irreps_in}")
    return irreps_in
