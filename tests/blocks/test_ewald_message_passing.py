"""Ewald message passing (equipot/blocks/ewald_messages.py, equipot/nn/k_vectors.py), float64.

The k-vectors are checked against brute-force enumerations in numpy; the model against its
symmetries (rotated, translated, permuted copies), finite differences of its energy (forces,
stress) and copies of the structure with one part moved beyond the cutoff. A model without the
option must predict what it predicted before the block existed.
"""

import copy

import numpy as np
import pytest
import torch
from ase import Atoms
from torch_geometric.data import Batch

import equipot
from equipot import keys
from equipot.blocks import ewald_messages as ewald_message_passing
from equipot.data.graph import atoms_to_graph
from equipot.errors import EquipotInputError
from equipot.model.build import build_potential
from equipot.nn.k_vectors import k_vectors

from conftest import (
    MODEL_CONFIG,
    evaluate,
    fd_forces,
    fd_stress,
    make_cu_cell,
    make_cu_slab,
    make_ethanol,
    make_model,
    random_rotation,
    relative_error,
)

# Molecules: a grid of spacing 0.15 Å⁻¹ (kernel period 41.9 Å) in the ball of 1 Å⁻¹.
MOLECULAR = {**MODEL_CONFIG, "long_range_messages": {"k_cutoff": 1.0, "k_spacing": 0.15}}
# Crystals with lattice vectors of 2.5–5 Å need a larger ball to hold reciprocal-lattice vectors.
CRYSTALLINE = {**MODEL_CONFIG, "long_range_messages": {"k_cutoff": 3.0, "k_spacing": 0.15}}


def make_cu_supercell():
    """The triclinic Cu cell of conftest repeated to 8 atoms (V ≈ 98 Å³, 20 k-vectors)."""
    return make_cu_cell().repeat((2, 2, 1))


def backbone_only(model):
    """A copy of ``model`` whose long-range updates are zero: its backbone alone."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for block in model.blocks:
            for parameter in block.long_range.update[-1].parameters():
                parameter.zero_()
    return model


def energy(model, atoms) -> float:
    return float(evaluate(model, atoms, forces=False)[keys.ENERGY][0])


def computed_k_vectors(atoms_list, k_cutoff, k_spacing=0.15):
    """Per structure, the k-vectors [K_g, 3] and weights [K_g] of k_vectors() on a batch."""
    cell = torch.tensor(np.stack([atoms.cell.array for atoms in atoms_list]))
    pbc = torch.tensor(np.stack([atoms.pbc for atoms in atoms_list]))
    k = k_vectors(cell, pbc, k_cutoff, k_spacing)
    return [(vectors[weights > 0].numpy(), weights[weights > 0].numpy())
            for vectors, weights in zip(k.vectors, k.weights)]


def brute_force_k_vectors(fourier_cell, k_cutoff, n_max=20):
    """Every reciprocal-lattice vector 2π B n of ``fourier_cell`` with 0 < |k| ≤ k_cutoff."""
    n = np.stack(np.meshgrid(*[np.arange(-n_max, n_max + 1)] * 3), axis=-1).reshape(-1, 3)
    k = n @ (2 * np.pi * np.linalg.inv(fourier_cell).T)
    length = np.linalg.norm(k, axis=1)
    return k[(length > 0) & (length <= k_cutoff)]


def assert_same_set(half, full):
    """``half`` (one of each ±k) and its mirror image are the set ``full``."""
    both = np.concatenate([half, -half])
    assert len(both) == len(full) > 0
    np.testing.assert_allclose(both[np.lexsort(both.round(8).T)],
                               full[np.lexsort(full.round(8).T)], rtol=0, atol=1e-10)


def expected_weight(fourier_cell, k_cutoff):
    """2 / (expected number of k-vectors in the ball) = 2 (2π)³ / (V · 4/3 π k_c³)."""
    volume = abs(np.linalg.det(fourier_cell))
    return 2 * (2 * np.pi) ** 3 / (volume * 4 / 3 * np.pi * k_cutoff**3)


# ---------------------------------------------------------------- k-vectors


def test_periodic_k_vectors_are_the_reciprocal_lattice_in_the_ball():
    """Triclinic cells of different sizes in one batch (padded to the largest set)."""
    skewed = Atoms("Cu", cell=[[4.0, 0.3, -0.2], [1.1, 3.5, 0.4], [-0.6, 0.9, 6.2]], pbc=True)
    structures = [make_cu_cell(), make_cu_supercell(), skewed]
    k_cutoff = 3.0
    for atoms, (vectors, weights) in zip(structures, computed_k_vectors(structures, k_cutoff)):
        assert_same_set(vectors, brute_force_k_vectors(atoms.cell.array, k_cutoff))
        np.testing.assert_allclose(weights, expected_weight(atoms.cell.array, k_cutoff),
                                   rtol=1e-12)


def test_aperiodic_k_vectors_are_a_grid_in_the_ball():
    """Molecules: the grid Δk ℤ³ on the lab axes; slabs: the surface's reciprocal lattice in
    the plane, times a grid of spacing Δk along the normal."""
    k_cutoff, k_spacing = 1.0, 0.15
    molecule, slab = make_ethanol(), make_cu_slab()
    period = 2 * np.pi / k_spacing
    a, b = slab.cell.array[:2]
    normal = np.cross(a, b) / np.linalg.norm(np.cross(a, b))
    fourier_cells = [period * np.eye(3), np.stack([a, b, period * normal])]
    computed = computed_k_vectors([molecule, slab], k_cutoff, k_spacing)
    for fourier_cell, (vectors, weights) in zip(fourier_cells, computed):
        assert_same_set(vectors, brute_force_k_vectors(fourier_cell, k_cutoff))
        np.testing.assert_allclose(weights, expected_weight(fourier_cell, k_cutoff), rtol=1e-12)
    # The weights make the sum over the ball a mean: they add up to ≈ 1.
    assert abs(computed[0][1].sum() - 1.0) < 0.02


def test_wires_are_refused():
    wire = make_cu_slab()
    wire.pbc = [True, False, False]
    with pytest.raises(EquipotInputError, match="field 'pbc': structure 1 of the batch is a wire"):
        evaluate(make_model(MOLECULAR), [make_ethanol(), wire])


def test_edge_feature_backbones_are_refused_when_built():
    with pytest.raises(ValueError, match="the dimenet block passes its features on "
                                         "edges"):
        build_potential({**MOLECULAR, "block": "dimenet"})


# ---------------------------------------------------------------- symmetries


@pytest.mark.parametrize("config, make_atoms", [(MOLECULAR, make_ethanol),
                                                (CRYSTALLINE, make_cu_supercell)])
def test_translation_and_permutation_invariance(config, make_atoms):
    model, atoms = make_model(config), make_atoms()
    before = evaluate(model, atoms)
    order = np.random.default_rng(0).permutation(len(atoms))
    moved = atoms[order]
    moved.positions += [3.1, -2.7, 40.0]
    after = evaluate(model, moved)
    assert abs(before[keys.ENERGY][0] - energy(backbone_only(model), atoms)) > 0.1
    assert abs(after[keys.ENERGY][0] - before[keys.ENERGY][0]) < 1e-10
    np.testing.assert_allclose(after[keys.FORCES], before[keys.FORCES][order], rtol=0,
                               atol=1e-9)


@pytest.mark.parametrize("make_atoms", [make_cu_supercell, make_cu_slab])
def test_rotation_invariance_is_exact_for_cells_and_slabs(make_atoms):
    model, atoms = make_model(CRYSTALLINE), make_atoms()
    rotation = random_rotation(0)
    before = evaluate(model, atoms, stress=True)
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rotation.T
    rotated.cell = atoms.cell.array @ rotation.T
    after = evaluate(model, rotated, stress=True)
    assert abs(before[keys.ENERGY][0] - energy(backbone_only(model), atoms)) > 0.1
    assert abs(after[keys.ENERGY][0] - before[keys.ENERGY][0]) < 1e-10
    np.testing.assert_allclose(after[keys.FORCES], before[keys.FORCES] @ rotation.T, rtol=0,
                               atol=1e-9)
    np.testing.assert_allclose(after[keys.STRESS][0],
                               rotation @ before[keys.STRESS][0] @ rotation.T, rtol=0, atol=1e-9)


def test_rotation_invariance_of_molecules_is_approximate():
    """The k-grid of a molecule is fixed in the lab frame: energies of rotated copies agree
    to ~10⁻⁵ of the long-range part of the energy at Δk = 0.15 Å⁻¹ (measured: 8 × 10⁻⁶ here,
    2–6 × 10⁻⁵ for ethanol and benzene with unscaled weights; 10⁻⁴ at Δk = 0.2 Å⁻¹)."""
    model, atoms = make_model(MOLECULAR), make_ethanol()
    reference = energy(model, atoms)
    long_range_part = reference - energy(backbone_only(model), atoms)
    errors = []
    for seed in range(4):
        rotated = atoms.copy()
        rotated.positions = atoms.positions @ random_rotation(seed).T
        errors.append(abs(energy(model, rotated) - reference))
    assert abs(long_range_part) > 1.0
    assert max(errors) < 1e-4 * abs(long_range_part)


# ---------------------------------------------------------------- derivatives


def test_forces_are_minus_energy_gradient_on_a_molecule():
    model, atoms = make_model(MOLECULAR), make_ethanol()
    forces = evaluate(model, atoms)[keys.FORCES]
    assert np.abs(forces - evaluate(backbone_only(model), atoms)[keys.FORCES]).max() > 0.1
    assert relative_error(forces, fd_forces(model, atoms)) < 1e-6


@pytest.mark.parametrize("make_atoms", [make_cu_supercell, make_cu_slab])
def test_stress_is_strain_derivative(make_atoms):
    """Straining the cell moves the k-vectors (and some across the cutoff, where the
    envelope makes the filter vanish smoothly)."""
    model, atoms = make_model(CRYSTALLINE), make_atoms()
    stress = evaluate(model, atoms, stress=True)[keys.STRESS][0]
    without = evaluate(backbone_only(model), atoms, stress=True)[keys.STRESS][0]
    assert np.abs(stress - without).max() > 1e-2
    assert relative_error(stress, fd_stress(model, atoms)) < 1e-6


def test_a_batch_predicts_what_its_structures_do_alone():
    model = make_model(CRYSTALLINE)
    structures = [make_ethanol(), make_cu_supercell(), make_cu_slab()]
    batched = evaluate(model, structures, stress=True)
    alone = [evaluate(model, atoms, stress=True) for atoms in structures]
    np.testing.assert_allclose(batched[keys.ENERGY], [out[keys.ENERGY][0] for out in alone],
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(batched[keys.FORCES],
                               np.concatenate([out[keys.FORCES] for out in alone]), atol=1e-10)
    np.testing.assert_allclose(batched[keys.STRESS],
                               np.concatenate([out[keys.STRESS] for out in alone]), atol=1e-10)


# ---------------------------------------------------------------- reach


def test_an_atom_beyond_the_cutoff_is_felt_in_a_molecule():
    """A Cu atom 15 Å from ethanol (local cutoff 4 Å) moved 2 Å further away: only the model
    with long-range messages notices."""
    ethanol = make_ethanol()
    far, farther = (ethanol + Atoms("Cu", positions=[[distance, 0.0, 0.0]])
                    for distance in (15.0, 17.0))
    with_block, without_block = make_model(MOLECULAR), make_model(MODEL_CONFIG)
    assert abs(energy(with_block, far) - energy(with_block, farther)) > 1e-3
    assert abs(energy(without_block, far) - energy(without_block, farther)) < 1e-12


def test_a_molecule_beyond_the_cutoff_is_felt_in_a_periodic_box():
    """Two ethanol molecules 12 Å apart in a 24 Å box; one moved by 2 Å, still 10 Å from the
    other and its images."""
    box = 24.0

    def two_molecules(shift):
        first, second = make_ethanol(seed=1), make_ethanol(seed=2)
        first.positions += [6.0, 12.0, 12.0]
        second.positions += [18.0 + shift, 12.0, 12.0]
        return Atoms(first + second, cell=np.eye(3) * box, pbc=True)

    with_block = make_model({**CRYSTALLINE, "long_range_messages": {"k_cutoff": 1.5}})
    without_block = make_model(MODEL_CONFIG)
    assert abs(energy(with_block, two_molecules(0.0))
               - energy(with_block, two_molecules(2.0))) > 1e-3
    assert abs(energy(without_block, two_molecules(0.0))
               - energy(without_block, two_molecules(2.0))) < 1e-10


# ---------------------------------------------------------------- every atom-feature backbone


@pytest.mark.parametrize("block", ["schnet", "painn", "nequip", "mace"])
def test_every_atom_feature_backbone_carries_it(block, float64_default_dtype):
    """Built into each backbone's stack: the stage's irreps are the block's, the non-scalar
    channels pass through the long-range update, and a rotated periodic cell gives the same
    energy."""
    model = make_model({**CRYSTALLINE, "block": block})
    stage = model.blocks[0]
    assert stage.irreps_in == stage.block.irreps_in and stage.irreps_out == stage.block.irreps_out
    atoms = make_cu_supercell()
    graph = Batch.from_data_list([atoms_to_graph(atoms, model.cutoff)])
    captured = {}
    stage.long_range.register_forward_hook(
        lambda module, inputs, output: captured.update(before=inputs[0], after=output))
    model(graph, compute_forces=False)
    scalars = stage.long_range.num_scalars
    assert torch.equal(captured["after"][:, scalars:], captured["before"][:, scalars:])
    assert not torch.allclose(captured["after"][:, :scalars], captured["before"][:, :scalars])

    rotation = random_rotation(1)
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rotation.T
    rotated.cell = atoms.cell.array @ rotation.T
    reference = energy(model, atoms)
    assert abs(energy(model, rotated) - reference) < 1e-9 * max(1.0, abs(reference))


def test_float32_agrees_with_float64():
    model = make_model(CRYSTALLINE)
    structures = [make_ethanol(), make_cu_supercell()]
    expected = evaluate(model, structures)
    actual = evaluate(copy.deepcopy(model).float(), structures)
    assert relative_error(actual[keys.ENERGY], expected[keys.ENERGY]) < 1e-5
    assert relative_error(actual[keys.FORCES], expected[keys.FORCES]) < 1e-4


# ---------------------------------------------------------------- no cost when off; model files


def test_a_model_without_the_option_is_unchanged(monkeypatch):
    """Same parameters and predictions as before the block existed (values recorded at commit
    c7b24be), with the option absent or null, and no k-vector is ever computed."""
    monkeypatch.setattr(ewald_message_passing, "k_vectors", None)  # any call would fail
    for config in (MODEL_CONFIG, {**MODEL_CONFIG, "long_range_messages": None}):
        model = make_model(config, weight_factor=2.5)  # SchNet's factor when recorded
        assert len(model.state_dict()) == 24
        assert sum(parameter.numel() for parameter in model.parameters()) == 2641
        assert not any(isinstance(module, ewald_message_passing.EwaldMessagePassing)
                       for module in model.modules())
        molecule, crystal = evaluate(model, make_ethanol()), evaluate(model, make_cu_cell())
        assert abs(molecule[keys.ENERGY][0] - 15.353380913299553) < 1e-9
        assert abs((molecule[keys.FORCES] ** 2).sum() - 71.88200185155341) < 1e-8
        assert abs(crystal[keys.ENERGY][0] - -3.900788291069516) < 1e-9


@pytest.mark.parametrize("config, make_atoms", [(MOLECULAR, make_ethanol),
                                                (CRYSTALLINE, make_cu_supercell)])
def test_a_saved_model_with_the_option_loads_with_the_same_predictions(tmp_path, config,
                                                                        make_atoms):
    model, atoms = make_model(config), make_atoms()
    path = tmp_path / "model.pt"
    equipot.save_model(path, model, metadata={"dtype": "float64"})
    loaded = equipot.load(path)
    assert loaded.dtype == torch.float64
    expected = evaluate(model, atoms, stress=True)
    actual = evaluate(loaded, atoms, stress=True)
    for name in (keys.ENERGY, keys.FORCES, keys.STRESS):
        np.testing.assert_allclose(actual[name], expected[name], rtol=0, atol=1e-12)
