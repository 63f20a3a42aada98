"""MACE (equipot/blocks/mace.py): features of every l rotate by their Wigner D-matrices, a readout
after every layer, correlation orders 1–3, weights per element, the first block as in the
reference, and the energy's symmetries. The generic tests (test_physics, test_equivariance,
test_calculator, test_checkpoint) run MACE too, through BLOCKS; these are MACE's own."""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
import pytest
import torch
from ase import Atoms
from e3nn import o3
from test_equivariance import assert_equivariant, block_outputs, random_rotation
from torch import nn
from torch_geometric.data import Batch

from equipot import keys
from equipot.blocks.mace import MACE, MACEInteraction, MACEReadout, build_mace, channel_major
from equipot.blocks.registry import FAMILIES
from equipot.data.graph import atoms_to_graph
from equipot.nn.readout import LinearReadout

from conftest import MODEL_CONFIG, make_cu_cell, make_cu_slab, make_ethanol, make_model

# Wigner D-matrices and couplings in float64 for every test of this file.
pytestmark = pytest.mark.usefixtures("float64_default_dtype")

C = MODEL_CONFIG["num_features"]


def mace_config(num_blocks: int = 3, **block_options) -> dict:
    return {**MODEL_CONFIG, "block": "mace", "num_blocks": num_blocks,
            "block_options": block_options}


@lru_cache(maxsize=None)
def cached_model(num_blocks: int = 3, max_L: int = 2, l_max: int = 3, correlation: int = 3):
    """A float64 MACE test model (random weights scaled as conftest.make_model scales them);
    tests must not modify it. Built once per configuration: the couplings of l_max = 3, ν = 3
    take seconds."""
    return make_model(mace_config(num_blocks, max_L=max_L, l_max=l_max, correlation=correlation))


def natural_irreps(max_L: int) -> o3.Irreps:
    return o3.Irreps([(C, (l, (-1) ** l)) for l in range(max_L + 1)])


def block_inputs(model, atoms) -> list[tuple[torch.Tensor, object]]:
    """(features, geometry) that each block of ``model`` receives for ``atoms``."""
    inputs = []
    handles = [block.register_forward_hook(lambda _, args, __: inputs.append(args))
               for block in model.blocks]
    try:
        model(Batch.from_data_list([atoms_to_graph(atoms, model.cutoff)]), compute_forces=False)
    finally:
        for handle in handles:
            handle.remove()
    return [(features.detach(), geometry) for features, geometry in inputs]


# ------------------------------------------------------------------ equivariance, every l


@pytest.mark.parametrize("max_L, l_max, correlation", [(2, 3, 3), (1, 3, 2), (1, 2, 3), (0, 2, 1)])
@pytest.mark.parametrize("inversion", [False, True], ids=["rotation", "rotoinversion"])
@pytest.mark.parametrize("make_structure", [make_ethanol, make_cu_cell], ids=["ethanol", "Cu"])
def test_features_of_every_l_rotate_by_their_wigner_d(max_L, l_max, correlation, inversion,
                                                      make_structure):
    model = cached_model(3, max_L, l_max, correlation)
    atoms = make_structure()
    # The hidden features carry every l up to max_L, and the highest is far from zero.
    assert [block.irreps_out for block in model.blocks] == [natural_irreps(max_L)] * 2 + [
        natural_irreps(0)]
    features, _ = block_outputs(model, atoms)
    for layer in (0, 1):
        highest = features[layer][:, model.blocks[layer].irreps_out.slices()[-1]]
        assert highest.abs().max() > 1e-2
    assert_equivariant(model, atoms, random_rotation(inversion, seed=11))


def test_one_particle_basis_holds_every_irrep_of_the_spherical_harmonics():
    model = cached_model()
    for block in model.blocks:
        assert block.irreps_sh == o3.Irreps("0e+1o+2e+3o")
        assert block.linear_a.irreps_out == o3.Irreps(f"{C}x0e+{C}x1o+{C}x2e+{C}x3o")
        assert block.product.irreps_in == block.irreps_sh


def test_channel_major_layout():
    """e3nn's "Cx0e+Cx1o+Cx2e" → [N, C, 9], and back."""
    irreps = o3.Irreps("3x0e+3x1o+3x2e")
    x = irreps.randn(5, -1)
    expected = torch.cat([x[:, s].reshape(5, mul, ir.dim) for (mul, ir), s in
                          zip(irreps, irreps.slices())], dim=-1)
    index = channel_major(irreps)
    torch.testing.assert_close(x[:, index].reshape(5, 3, 9), expected, rtol=0, atol=0)
    torch.testing.assert_close(expected.flatten(1)[:, torch.argsort(index)], x, rtol=0, atol=0)


# ------------------------------------------------------------------ readouts


def test_a_readout_after_every_layer_linear_then_mlp():
    model = cached_model(num_blocks=3)
    assert sorted(model.readouts) == ["1", "2", "3"]  # none after the embedding
    assert [type(model.readouts[k]) for k in ("1", "2")] == [LinearReadout, LinearReadout]
    last = model.readouts["3"]
    assert isinstance(last, MACEReadout)
    assert [type(layer) for layer in last.network] == [nn.Linear, nn.SiLU, nn.Linear]
    assert all(layer.bias is None for layer in last.network if isinstance(layer, nn.Linear))

    # Each layer's readout adds its part: per-atom network energy = Σ_k readout_k(x⁽ᵏ⁾).
    atoms = make_ethanol()
    features, out = block_outputs(model, atoms)
    parts = [model.readouts[str(k)](x, None) for k, x in enumerate(features, 1)]
    assert all(part.abs().max() > 1e-3 for part in parts)
    species = model.species_of_z[torch.as_tensor(atoms.numbers)]
    network = (out[keys.ATOMIC_ENERGIES] - model.reference_energies[species]
               - model.shift) / model.scale
    torch.testing.assert_close(network, sum(parts), rtol=1e-10, atol=1e-12)


def test_an_atom_without_neighbours_has_its_reference_energy():
    """The first block has no self-connection and MACE's readouts no biases, so an atom with
    no neighbour within the cutoff has zero features and E = E0(z) + shift, as in MACE."""
    model = cached_model()
    atoms = Atoms("OCH", positions=[[0, 0, 0], [10, 0, 0], [0, 10, 0]])
    out = model(Batch.from_data_list([atoms_to_graph(atoms, model.cutoff)]))
    features, _ = block_outputs(model, atoms)
    assert all(x.abs().max() == 0 for x in features)
    expected = torch.tensor([-3.0, -2.0, -1.0], dtype=torch.float64) + model.shift
    torch.testing.assert_close(out[keys.ATOMIC_ENERGIES], expected, rtol=0, atol=1e-12)
    assert out[keys.FORCES].abs().max() == 0


# ------------------------------------------------------------------ correlation order


@pytest.mark.parametrize("correlation", [1, 2, 3])
def test_correlation_orders_build_and_run(correlation):
    model = cached_model(2, 1, 3, correlation)
    atoms = make_ethanol()
    out = model(Batch.from_data_list([atoms_to_graph(atoms, model.cutoff)]))
    assert torch.isfinite(out[keys.ENERGY]).all() and out[keys.FORCES].abs().max() > 0.1
    for block in model.blocks:
        product = block.product
        assert product.correlation == correlation
        assert set(product.path_order.tolist()) == set(range(1, correlation + 1))
        # With only the weights of order ν, B is homogeneous of degree ν in A.
        basis = torch.randn(5, C, product.irreps_in.dim)
        species = torch.tensor([0, 1, 2, 3, 1])
        for order in range(1, correlation + 1):
            weights = product.weights.detach().clone()
            try:
                with torch.no_grad():
                    product.weights[..., product.path_order != order] = 0
                single, double = product(basis, species), product(2 * basis, species)
            finally:
                with torch.no_grad():
                    product.weights.copy_(weights)
            assert single.abs().max() > 1e-3
            torch.testing.assert_close(double, 2 ** order * single, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ weights per element


@pytest.mark.parametrize("layer, self_connection", [(0, True), (1, True), (1, False), (2, True),
                                                   (2, False)],
                         ids=["first", "second", "second-without-sc", "last", "last-without-sc"])
def test_weights_depend_on_the_element(layer, self_connection):
    """Changing one atom's species (its neighbours' features held fixed) changes that atom's
    output and no other's: its own W(z_i) in B (and W_A(z_i) in the first block, S(z_i) in the
    others) are at work; also with the self-connection S switched off."""
    model = cached_model()
    block = model.blocks[layer]
    features, geometry = block_inputs(model, make_ethanol())[layer]
    assert (block.self_connection is None) == (layer == 0)
    removed = block.self_connection
    if not self_connection:
        block.self_connection = None
    try:
        before = block(features, geometry)
        for atom in range(len(geometry.species)):
            species = geometry.species.clone()
            species[atom] = (species[atom] + 1) % 4
            after = block(features, dataclasses.replace(geometry, species=species))
            change = (after - before).abs().amax(dim=1)
            assert change[atom] > 1e-3 * before.abs().max()
            assert torch.cat([change[:atom], change[atom + 1:]]).max() < 1e-12
    finally:
        block.self_connection = removed


def test_only_the_first_block_lacks_a_self_connection():
    model = cached_model()
    assert [block.first for block in model.blocks] == [True, False, False]
    options = dict(num_features=C, num_radial=8, avg_num_neighbors=10.0, num_species=4, l_max=2)
    assert MACEInteraction(o3.Irreps(f"{C}x0e"), **options).self_connection is not None
    first = MACEInteraction(o3.Irreps(f"{C}x0e"), first_block=True, **options)
    assert first.self_connection is None


def test_bad_options_are_refused():
    options = dict(num_features=C, num_radial=8, avg_num_neighbors=10.0, num_species=4)
    with pytest.raises(ValueError, match="max_L must lie in 0 … l_max = 1"):
        MACEInteraction(o3.Irreps(f"{C}x0e"), max_L=2, l_max=1, **options)
    with pytest.raises(ValueError, match="0e scalars first"):
        MACEInteraction(o3.Irreps(f"{C}x1o"), **options)


# ------------------------------------------------------------------ symmetries of the energy


@pytest.mark.parametrize("make_structure", [make_ethanol, make_cu_slab], ids=["ethanol", "slab"])
def test_permutation_invariance(make_structure):
    model = cached_model()
    atoms = make_structure()
    permutation = np.random.default_rng(7).permutation(len(atoms))
    assert np.any(permutation != np.arange(len(atoms)))

    def evaluate(structure):
        return model(Batch.from_data_list([atoms_to_graph(structure, model.cutoff)]))

    before, after = evaluate(atoms), evaluate(atoms[permutation])
    assert before[keys.FORCES].abs().max() > 0.1
    assert abs(after[keys.ENERGY] - before[keys.ENERGY]).item() < 1e-10
    torch.testing.assert_close(after[keys.ATOMIC_ENERGIES],
                               before[keys.ATOMIC_ENERGIES][permutation], rtol=0, atol=1e-10)
    torch.testing.assert_close(after[keys.FORCES], before[keys.FORCES][permutation],
                               rtol=0, atol=1e-9)


def test_registered():
    assert FAMILIES["mace"] is MACE and MACE.build is build_mace
