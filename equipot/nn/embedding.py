"""Learned initial features of each chemical species."""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from equipot.nn.geometry import Geometry


class SpeciesEmbedding(nn.Module):
    """Each atom's species → scalar features [N, F] (irreps ``Fx0e``)."""

    def __init__(self, num_species: int, num_features: int):
        super().__init__()
        self.irreps_out = o3.Irreps(f"{num_features}x0e")
        self.embedding = nn.Embedding(num_species, num_features)

    def forward(self, geometry: Geometry) -> torch.Tensor:
        return self.embedding(geometry.species)

    @torch.no_grad()
    def take_species(self, source: SpeciesEmbedding, rows: torch.Tensor) -> None:
        """``source``'s rows as rows ``rows`` [S_source] of this (wider) embedding
        (``equipot.nn.species_rows``)."""
        self.embedding.weight[rows] = source.embedding.weight
