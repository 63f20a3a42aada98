"""Learned initial features of each chemical species."""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn


class SpeciesEmbedding(nn.Module):
    """Species index [N] → scalar features [N, F] (irreps ``Fx0e``)."""

    def __init__(self, num_species: int, num_features: int):
        super().__init__()
        self.irreps_out = o3.Irreps(f"{num_features}x0e")
        self.embedding = nn.Embedding(num_species, num_features)

    def forward(self, species: torch.Tensor) -> torch.Tensor:
        return self.embedding(species)
