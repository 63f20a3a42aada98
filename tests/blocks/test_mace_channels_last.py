"""MACE's W_A on the convolution's channels-last sums (MACEInteraction.one_particle_basis)
against the e3nn modules that hold its weights, applied in e3nn's layout: the same A."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from equipot.blocks.mace import MACEInteraction, channel_major

pytestmark = pytest.mark.usefixtures("float64_default_dtype")

C, NUM_SPECIES, NUM_ATOMS = 8, 4, 6


@pytest.mark.parametrize("first_block", [True, False], ids=["first", "later"])
def test_one_particle_basis_equals_e3nn_linear_a(first_block):
    torch.manual_seed(0)
    irreps_in = o3.Irreps(f"{C}x0e") if first_block else o3.Irreps(f"{C}x0e+{C}x1o+{C}x2e")
    block = MACEInteraction(irreps_in, num_features=C, num_radial=8, avg_num_neighbors=5.0,
                            num_species=NUM_SPECIES, max_L=2, l_max=3, first_block=first_block)
    convolution = block.convolution
    aggregated = torch.randn(NUM_ATOMS, convolution.irreps_out.dim // C, C)  # [N, K, C]
    species = torch.tensor([3, 0, 1, 3, 2, 0])

    e3nn_layout = aggregated.flatten(1)[:, convolution.output_order]
    expected = (block.linear_a(e3nn_layout, species) if first_block
                else block.linear_a(e3nn_layout))
    irreps_a = block.linear_a.irreps_out
    expected = expected[:, channel_major(irreps_a)].unflatten(1, (C, -1))  # [N, C, dim]
    a = block.one_particle_basis(aggregated, species)  # [dim, N, C]
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(a.permute(1, 2, 0), expected, rtol=0, atol=1e-12)
