"""Irreps of hidden features, and build-time checks that a block is given the features it
can take."""

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


def hidden_irreps(num_features: int, l_max: int, parity: bool) -> o3.Irreps:
    """The irreps equivariant features may hold (NequIP, MACE): 0e first, then increasing l."""
    return o3.Irreps([(num_features, (l, p)) for l in range(l_max + 1)
                      for p in ((1, -1) if parity else ((-1) ** l,))])
