"""Per-atom energy from the invariant part of the final atom features."""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from equipot.nn.mlp import mlp


class ScalarReadout(nn.Module):
    """MLP of the leading scalar (0e) channels: [N, dim(irreps_in)] → [N] (dimensionless).

    Equivariant features are laid out as e3nn does (scalars first), so the invariant
    channels are a prefix of the feature vector.
    """

    def __init__(self, irreps_in: o3.Irreps | str, hidden: int):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        first_mul, first_ir = self.irreps_in[0]
        if first_ir != o3.Irrep("0e"):
            raise ValueError(f"readout needs scalar (0e) channels first, got {self.irreps_in}")
        self.num_scalars = first_mul
        self.network = mlp(self.num_scalars, hidden, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.network(features[:, : self.num_scalars]).squeeze(-1)
