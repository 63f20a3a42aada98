"""SchNet interaction block (Schütt et al., J. Chem. Phys. 148, 241722, 2018).

A continuous-filter convolution of invariant atom features h (F channels):

    x_j  = W_in h_j                                   atom-wise linear, no bias
    W_ij = Dense(ssp(Dense(e(r_ij)))) · u(r_ij)       filter from the radial basis e, cut off by u
    m_i  = (1/⟨n⟩) Σ_j x_j ⊙ W_ij                     convolution over neighbours j of i
    h_i ← h_i + Dense(ssp(Dense(m_i)))                atom-wise update, residual

⟨n⟩ is the training set's average number of neighbours, so message sums stay of order one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from e3nn import o3
from torch import nn

from equipot.blocks.contract import BlockContext, Family, FamilyParts, species_embedding_parts
from equipot.nn.geometry import Geometry
from equipot.nn.irreps import require_irreps
from equipot.nn.mlp import mlp
from equipot.nn.scatter import scatter_sum


class SchNetInteraction(nn.Module):
    def __init__(self, irreps_in: o3.Irreps, num_features: int, num_radial: int,
                 avg_num_neighbors: float, num_filters: int | None = None):
        super().__init__()
        num_filters = num_filters or num_features
        self.irreps_in = self.irreps_out = require_irreps(self, irreps_in, f"{num_features}x0e")
        self.inv_avg_num_neighbors = 1.0 / avg_num_neighbors
        self.atom_to_filter = nn.Linear(num_features, num_filters, bias=False)
        self.filter_network = mlp(num_radial, num_filters, num_filters)
        self.update = mlp(num_filters, num_features, num_features)

    def forward(self, features: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        x = self.atom_to_filter(features)
        filters = self.filter_network(geometry.radial_basis) * geometry.envelope.unsqueeze(-1)
        messages = x[geometry.neighbour] * filters
        aggregated = scatter_sum(messages, geometry.centre, geometry.num_atoms)
        return features + self.update(aggregated * self.inv_avg_num_neighbors)


@dataclass(frozen=True)
class SchNetOptions:
    num_filters: int | None = None  # width of W_in and the filters (default: num_features)


def build_schnet(context: BlockContext, options: SchNetOptions) -> FamilyParts:
    return species_embedding_parts(context, lambda irreps, _: SchNetInteraction(
        irreps, context.num_features, context.num_radial, context.avg_num_neighbors,
        options.num_filters))


SCHNET = Family("schnet", build_schnet, SchNetOptions)
