"""SpeciesLinear: one equivariant linear map per species, chosen per atom without a loop."""

from __future__ import annotations

import torch
from e3nn import o3

from equipot.nn.species_linear import SpeciesLinear


def test_each_atom_gets_its_own_species_map_and_outputs_rotate():
    torch.manual_seed(0)
    irreps_in, irreps_out = o3.Irreps("4x0e + 3x1o + 2x2e"), o3.Irreps("5x0e + 2x1o")
    layer = SpeciesLinear(irreps_in, irreps_out, num_species=3).double()
    features = irreps_in.randn(1, -1, dtype=torch.float64).repeat(3, 1)  # one atom, 3 species
    species = torch.tensor([0, 1, 2])
    out = layer(features, species)
    assert out.shape == (3, irreps_out.dim)
    assert torch.cdist(out, out).fill_diagonal_(1).min() > 1e-3  # three different maps

    # Species s's map is linear and the same for every atom of species s.
    x = irreps_in.randn(6, -1, dtype=torch.float64)
    species = torch.tensor([2, 0, 2, 1, 0, 2])
    for s in range(3):
        same = species == s
        assert torch.allclose(layer(x[same], species[same]), layer(x, species)[same])
    assert torch.allclose(layer(2 * x[:2] - x[2:4], species[:2]),
                          2 * layer(x[:2], species[:2]) - layer(x[2:4], species[:2]))

    rotation = -o3.rand_matrix(dtype=torch.float64)  # a rotoinversion
    rotated = layer(x @ irreps_in.D_from_matrix(rotation).T, species)
    expected = layer(x, species) @ irreps_out.D_from_matrix(rotation).T
    assert torch.abs(rotated - expected).max() < 1e-12
