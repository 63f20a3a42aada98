"""PaiNN interaction: one message and one update block (Schütt, Unke, Gastegger, ICML 2021).

Each atom carries scalars s_i [F] and vectors v_i [F, 3] (irreps ``Fx0e + Fx1o``; the first
block may receive scalars only, its vectors then start at zero). With φ, a: two-layer SiLU
MLPs, W a linear filter of the radial basis e, u the cutoff envelope, r̂_ij the unit edge
vector and ⟨n⟩ the average number of neighbours:

message   (Δs_ij, Δv^v_ij, Δv^s_ij) = φ(s_j) ∘ W(e(r_ij)) u(r_ij)                 split in 3×F
          s_i ← s_i + (1/⟨n⟩) Σ_j Δs_ij
          v_i ← v_i + (1/⟨n⟩) Σ_j [ v_j ∘ Δv^v_ij + Δv^s_ij r̂_ij ]
update    (a_vv, a_sv, a_ss) = a(s_i, ‖V v_i‖)                                    split in 3×F
          v_i ← v_i + a_vv ∘ U v_i
          s_i ← s_i + a_ss + a_sv ∘ ⟨U v_i, V v_i⟩

U, V mix channels without bias, so vectors stay equivariant; norms and scalar products of
vectors are invariant, so scalars stay invariant.
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


class PaiNNInteraction(nn.Module):
    def __init__(self, irreps_in: o3.Irreps, num_features: int, num_radial: int,
                 avg_num_neighbors: float, epsilon: float = 1e-8):
        super().__init__()
        F = num_features
        self.num_features = F
        self.irreps_in = require_irreps(self, irreps_in, f"{F}x0e", f"{F}x0e+{F}x1o")
        self.irreps_out = o3.Irreps(f"{F}x0e+{F}x1o")
        self.inv_avg_num_neighbors = 1.0 / avg_num_neighbors
        self.epsilon = epsilon  # keeps ‖V v‖ differentiable at v = 0
        self.phi = mlp(F, F, 3 * F, activation=nn.SiLU)
        self.filter = nn.Linear(num_radial, 3 * F)
        self.mix_vectors = nn.Linear(F, 2 * F, bias=False)  # U and V, stacked
        self.a = mlp(2 * F, F, 3 * F, activation=nn.SiLU)

    def forward(self, features: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        F, num_atoms = self.num_features, geometry.num_atoms
        s = features[:, :F]
        # Vectors as [N, 3, F] inside the block (e3nn's layout is [N, F, 3]): the products
        # with per-channel scalars then broadcast over rows of F contiguous channels.
        if features.shape[1] == F:
            v = features.new_zeros(num_atoms, 3, F)
        else:
            v = features[:, F:].view(num_atoms, F, 3).transpose(1, 2)

        # Message: from neighbours j to centres i.
        centre, neighbour = geometry.centre, geometry.neighbour
        x = self.phi(s)[neighbour] * (self.filter(geometry.radial_basis)
                                      * geometry.envelope.unsqueeze(-1))
        ds, dv_v, dv_s = x.split(F, dim=-1)
        dv = v[neighbour] * dv_v.unsqueeze(1) + geometry.unit_vectors.unsqueeze(-1) * \
            dv_s.unsqueeze(1)
        s = s + scatter_sum(ds, centre, num_atoms) * self.inv_avg_num_neighbors
        v = v + scatter_sum(dv, centre, num_atoms) * self.inv_avg_num_neighbors

        # Update: atom-wise mixing of scalars and vectors.
        u_v, v_v = self.mix_vectors(v).split(F, dim=-1)
        norm = torch.sqrt(v_v.square().sum(1) + self.epsilon)
        a_vv, a_sv, a_ss = self.a(torch.cat([s, norm], dim=-1)).split(F, dim=-1)
        v = v + a_vv.unsqueeze(1) * u_v
        s = s + a_ss + a_sv * (u_v * v_v).sum(1)
        return torch.cat([s, v.transpose(1, 2).reshape(num_atoms, 3 * F)], dim=-1)


@dataclass(frozen=True)
class PaiNNOptions:
    epsilon: float = 1e-8  # keeps ‖V v‖ differentiable at v = 0


def build_painn(context: BlockContext, options: PaiNNOptions) -> FamilyParts:
    return species_embedding_parts(context, lambda irreps, _: PaiNNInteraction(
        irreps, context.num_features, context.num_radial, context.avg_num_neighbors,
        options.epsilon))


PAINN = Family("painn", build_painn, PaiNNOptions)
