"""A new interaction block, defined in this file alone and registered here, runs the whole
block contract: adding a family needs no edit anywhere else in the package or its tests."""

from dataclasses import dataclass

import pytest
import torch
from e3nn import o3
from torch import nn

from equipot.blocks.contract import BlockContext, Family, FamilyParts, species_embedding_parts
from equipot.blocks.registry import FAMILIES, register_family
from equipot.nn.geometry import Geometry
from equipot.nn.mlp import mlp
from equipot.nn.scatter import scatter_sum
from equipot.testing.block_contract import CHECKS, contract_model


class ToyVectorBlock(nn.Module):
    """s_i ← s_i + MLP([s_i ‖ |v_i|²]),  v_i = (1/⟨n⟩) Σ_j (W e(r_ij) u(r_ij) ⊙ s_j) ⊗ r̂_ij:
    scalars in, scalars and vectors (Fx0e + Fx1o) out."""

    def __init__(self, irreps_in: o3.Irreps, num_features: int, num_radial: int,
                 avg_num_neighbors: float, gain: float):
        super().__init__()
        self.num_features = num_features
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(f"{num_features}x0e+{num_features}x1o")
        self.norm = gain / avg_num_neighbors
        self.filter = nn.Linear(num_radial, num_features)
        self.update = mlp(2 * num_features, num_features, num_features)

    def forward(self, features: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        s = features[:, :self.num_features]
        weights = self.filter(geometry.radial_basis) * geometry.envelope.unsqueeze(-1)
        messages = (weights * s[geometry.neighbour]).unsqueeze(-1) * geometry.unit_vectors[:, None]
        v = scatter_sum(messages, geometry.centre, geometry.num_atoms) * self.norm  # [N, F, 3]
        s = s + self.update(torch.cat([s, (v * v).sum(-1)], dim=-1))
        return torch.cat([s, v.flatten(1)], dim=-1)


@dataclass(frozen=True)
class ToyOptions:
    gain: float = 1.0  # multiplies the vector messages


def build_toy(context: BlockContext, options: ToyOptions) -> FamilyParts:
    """Only the first block reads scalars alone; later blocks read their scalar prefix."""
    return species_embedding_parts(context, lambda irreps, _: ToyVectorBlock(
        irreps, context.num_features, context.num_radial, context.avg_num_neighbors,
        options.gain))


TOY = Family("toy_vector", build_toy, ToyOptions)


@pytest.fixture(scope="module")
def toy_model():
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(FAMILIES, TOY.name, TOY)
        yield contract_model(TOY.name)


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_a_toy_block_registered_here_keeps_the_whole_contract(toy_model, check):
    CHECKS[check](toy_model)


def test_registering_a_different_family_under_a_taken_name_fails():
    with pytest.raises(ValueError, match="already registered"):
        register_family(Family("schnet", build_toy, ToyOptions))
