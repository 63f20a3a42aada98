"""Physics of the Potential (float64): forces and stress are exact derivatives of the energy,
the energy has the symmetries of physics, batching changes nothing, energy terms add up, and
the model's dtype and autograd modes behave as documented.

Structures and the model (random weights, scaled up so everything is far from zero) come
from conftest.py. Reference values are computed independently: finite differences of the
energy with fresh neighbour lists, ASE's numerical stress and ASE's neighbour list.
"""

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.fd import calculate_numerical_stress
from ase.neighborlist import neighbor_list as ase_neighbor_list
from torch_geometric.data import Batch

from equipot import EquipotCalculator, keys
from equipot.data.graph import atoms_to_graph
from equipot.nn.scatter import scatter_sum
from equipot.physics.registry import ENERGY_TERMS, register_energy_term
from equipot.physics.term import EnergyTerm

from conftest import evaluate, fd_forces, fd_stress, random_rotation, relative_error

CUTOFF = 4.0
STRUCTURES = ["ethanol", "cu_cell", "cu_slab"]
PERIODIC = ["cu_cell", "cu_slab", "cu_cell_left_handed", "cu_primitive", "cu_wire"]


@pytest.fixture
def structure(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def cu_cell_left_handed(cu_cell):
    """The same crystal with two lattice vectors swapped: det(cell) < 0."""
    atoms = cu_cell.copy()
    atoms.cell = cu_cell.cell.array[[1, 0, 2]]
    assert np.linalg.det(atoms.cell.array) < 0
    return atoms


@pytest.fixture
def cu_primitive():
    """One Cu atom in a triclinic cell: every edge joins the atom to one of its own images."""
    atoms = bulk("Cu", "fcc", a=3.6)
    distortion = np.eye(3) + np.random.default_rng(4).uniform(-0.05, 0.05, (3, 3))
    atoms.set_cell(atoms.cell.array @ distortion, scale_atoms=True)
    return atoms


@pytest.fixture
def cu_wire(cu_slab):
    """The slab made periodic along its first lattice vector only."""
    cu_slab.pbc = [True, False, False]
    return cu_slab


# ---------------------------------------------------------------- 1. forces = −∇E


@pytest.mark.parametrize("structure", STRUCTURES, indirect=True)
def test_forces_are_minus_energy_gradient(model, structure):
    out = evaluate(model, structure)
    forces = out[keys.FORCES]
    assert np.abs(forces).max() > 0.1, "forces too small for a meaningful check"
    if structure.pbc.all():  # a small triclinic cell: atoms see their own images
        assert np.all(np.linalg.norm(structure.cell.array, axis=1) < 2 * CUTOFF)
        assert not np.allclose(structure.cell.angles(), 90.0)
        centre, neighbour = atoms_to_graph(structure, CUTOFF)[keys.EDGE_INDEX]
        assert bool((centre == neighbour).any())
    assert relative_error(forces, fd_forces(model, structure)) < 1e-6


# ---------------------------------------------------------------- 2. stress = (1/V) ∂E/∂ε


@pytest.mark.parametrize("structure", PERIODIC, indirect=True)
def test_stress_is_strain_derivative(model, structure):
    stress = evaluate(model, structure, stress=True)[keys.STRESS][0]
    assert np.abs(stress).max() > 1e-3, "stress too small for a meaningful check"
    np.testing.assert_allclose(stress, stress.T, rtol=0, atol=1e-12)
    assert relative_error(stress, fd_stress(model, structure)) < 1e-6


@pytest.mark.parametrize("structure", PERIODIC, indirect=True)
def test_stress_matches_ase_numerical_stress(model, structure):
    structure.calc = EquipotCalculator(model)
    stress = structure.get_stress()
    assert stress.shape == (6,)
    numerical = calculate_numerical_stress(structure, 1e-6)
    assert relative_error(stress, numerical) < 1e-6


@pytest.mark.parametrize("c_factor", [2.0, 0.0])
def test_slab_ignores_its_non_periodic_cell_vector(model, cu_slab, c_factor):
    """The c vector of a slab only sets the volume: energy and forces do not depend on it
    (a zero c vector is allowed), and stress × volume does not either."""
    before = evaluate(model, cu_slab, stress=True)
    other = cu_slab.copy()
    cell = cu_slab.cell.array.copy()
    cell[2] *= c_factor
    other.cell = cell
    after = evaluate(model, other, stress=c_factor != 0)
    assert abs(after[keys.ENERGY][0] - before[keys.ENERGY][0]) < 1e-10
    np.testing.assert_allclose(after[keys.FORCES], before[keys.FORCES], rtol=0, atol=1e-10)
    if c_factor:
        np.testing.assert_allclose(after[keys.STRESS][0] * c_factor, before[keys.STRESS][0],
                                   rtol=0, atol=1e-10)


def test_stress_of_a_molecule_in_a_batch_is_zero(model, ethanol, cu_cell):
    stress = evaluate(model, [ethanol, cu_cell], stress=True)[keys.STRESS]
    assert np.all(stress[0] == 0.0)
    assert np.abs(stress[1]).max() > 1e-2


# ---------------------------------------------------------------- 3. symmetries


@pytest.mark.parametrize("structure", STRUCTURES, indirect=True)
@pytest.mark.parametrize("seed", [0, 1])
def test_rotation_invariance_and_force_equivariance(model, structure, seed):
    rotation = random_rotation(seed)
    before = evaluate(model, structure, stress=structure.pbc.any())
    rotated = structure.copy()
    rotated.positions = structure.positions @ rotation.T
    rotated.cell = structure.cell.array @ rotation.T
    after = evaluate(model, rotated, stress=structure.pbc.any())
    assert abs(after[keys.ENERGY][0] - before[keys.ENERGY][0]) < 1e-10
    np.testing.assert_allclose(after[keys.ATOMIC_ENERGIES], before[keys.ATOMIC_ENERGIES],
                               rtol=0, atol=1e-10)
    assert np.abs(before[keys.FORCES]).max() > 0.1
    np.testing.assert_allclose(after[keys.FORCES], before[keys.FORCES] @ rotation.T,
                               rtol=0, atol=1e-9)
    if structure.pbc.any():
        np.testing.assert_allclose(after[keys.STRESS][0],
                                   rotation @ before[keys.STRESS][0] @ rotation.T,
                                   rtol=0, atol=1e-9)


@pytest.mark.parametrize("structure", STRUCTURES, indirect=True)
def test_translation_invariance(model, structure):
    before = evaluate(model, structure)
    for shift in ([0.31, -1.7, 2.9], [13.3, 7.1, -11.9]):
        moved = structure.copy()
        moved.positions += np.array(shift)
        after = evaluate(model, moved)
        assert abs(after[keys.ENERGY][0] - before[keys.ENERGY][0]) < 1e-10
        np.testing.assert_allclose(after[keys.FORCES], before[keys.FORCES], rtol=0, atol=1e-9)
        if structure.pbc.any():  # wrapping atoms back into the cell changes nothing either
            moved.wrap()
            wrapped = evaluate(model, moved)
            assert abs(wrapped[keys.ENERGY][0] - before[keys.ENERGY][0]) < 1e-10
            np.testing.assert_allclose(wrapped[keys.FORCES], before[keys.FORCES],
                                       rtol=0, atol=1e-9)


@pytest.mark.parametrize("structure", STRUCTURES, indirect=True)
def test_permutation_invariance(model, structure):
    permutation = np.random.default_rng(5).permutation(len(structure))
    assert np.any(permutation != np.arange(len(structure)))
    before = evaluate(model, structure)
    after = evaluate(model, structure[permutation])
    assert abs(after[keys.ENERGY][0] - before[keys.ENERGY][0]) < 1e-10
    np.testing.assert_allclose(after[keys.ATOMIC_ENERGIES],
                               before[keys.ATOMIC_ENERGIES][permutation], rtol=0, atol=1e-10)
    np.testing.assert_allclose(after[keys.FORCES], before[keys.FORCES][permutation],
                               rtol=0, atol=1e-9)


def test_left_handed_cell_is_the_same_crystal(model, cu_cell, cu_cell_left_handed):
    right = evaluate(model, cu_cell, stress=True)
    left = evaluate(model, cu_cell_left_handed, stress=True)
    assert abs(left[keys.ENERGY][0] - right[keys.ENERGY][0]) < 1e-10
    np.testing.assert_allclose(left[keys.STRESS], right[keys.STRESS], rtol=0, atol=1e-10)


@pytest.mark.parametrize("repeat", [(2, 2, 2), (1, 2, 3)])
def test_supercell_energy_is_extensive(model, cu_cell, repeat):
    before = evaluate(model, cu_cell, stress=True)
    supercell = cu_cell.repeat(repeat)
    after = evaluate(model, supercell, stress=True)
    cells = math.prod(repeat)
    assert abs(before[keys.ENERGY][0]) > 1.0
    assert abs(after[keys.ENERGY][0] - cells * before[keys.ENERGY][0]) < 1e-10
    np.testing.assert_allclose(after[keys.ATOMIC_ENERGIES],
                               np.tile(before[keys.ATOMIC_ENERGIES], cells), rtol=0, atol=1e-10)
    np.testing.assert_allclose(after[keys.FORCES], np.tile(before[keys.FORCES], (cells, 1)),
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(after[keys.STRESS], before[keys.STRESS], rtol=0, atol=1e-9)


def test_slab_supercell_energy_is_extensive(model, cu_slab):
    before = evaluate(model, cu_slab)[keys.ENERGY][0]
    after = evaluate(model, cu_slab.repeat((2, 3, 1)))[keys.ENERGY][0]
    assert abs(after - 6 * before) < 1e-10


# ---------------------------------------------------------------- 4. batching


def test_batch_equals_structures_one_by_one(model, ethanol, cu_cell, cu_slab):
    isolated = Atoms("CO", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 2 * CUTOFF]])  # no edges
    structures = [ethanol, cu_cell, Atoms("H"), cu_slab, cu_cell.repeat((1, 2, 1)), isolated,
                  ethanol[:5]]
    batched = evaluate(model, structures, stress=True)
    offsets = np.cumsum([0] + [len(atoms) for atoms in structures])
    assert batched[keys.ENERGY].shape == (len(structures),)
    for k, atoms in enumerate(structures):
        alone = evaluate(model, atoms, stress=True)
        atoms_k = slice(offsets[k], offsets[k + 1])
        assert abs(batched[keys.ENERGY][k] - alone[keys.ENERGY][0]) < 1e-10
        np.testing.assert_allclose(batched[keys.ATOMIC_ENERGIES][atoms_k],
                                   alone[keys.ATOMIC_ENERGIES], rtol=0, atol=1e-10)
        np.testing.assert_allclose(batched[keys.FORCES][atoms_k], alone[keys.FORCES],
                                   rtol=0, atol=1e-10)
        np.testing.assert_allclose(batched[keys.STRESS][k], alone[keys.STRESS][0],
                                   rtol=0, atol=1e-10)


# ---------------------------------------------------------------- 5. energy terms

PAIR_TERM = "test_physics_exponential_pair"
ENVELOPE_EXPONENT = 6  # the model config's default


@dataclass(frozen=True)
class ExponentialPairOptions:
    A: float = 1.0  # eV


@register_energy_term
class ExponentialPair(EnergyTerm):
    """e_i = ½ Σ_j A exp(−r_ij) u(r_ij) over the geometry's edges."""

    name = PAIR_TERM
    Options = ExponentialPairOptions

    def __init__(self, context, options):
        super().__init__()
        self.A = float(options.A)

    def forward(self, geometry, features=None):
        pair = 0.5 * self.A * torch.exp(-geometry.lengths) * geometry.envelope
        return {keys.ATOMIC_ENERGIES: scatter_sum(pair, geometry.centre, geometry.num_atoms)}


def numpy_pair_energies(atoms, A, cutoff=CUTOFF, p=ENVELOPE_EXPONENT):
    """The same per-atom pair energies from ASE's neighbour list and the envelope formula."""
    i, d = ase_neighbor_list("id", atoms, cutoff)
    x = d / cutoff
    envelope = (1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1)
                - p * (p + 1) / 2 * x ** (p + 2))
    return np.bincount(i, weights=0.5 * A * np.exp(-d) * envelope, minlength=len(atoms))


@pytest.fixture(scope="module")
def models_with_and_without_term(model_config, build_model):
    assert PAIR_TERM in ENERGY_TERMS
    plain = build_model(model_config)
    with_term = build_model({**model_config, "energy_terms": [{"name": PAIR_TERM, "A": 2.0}]},
                            seed=123)  # other random weights, replaced by plain's below
    assert len(with_term.energy_terms) == 1
    with_term.load_state_dict(plain.state_dict())
    return plain, with_term


@pytest.mark.parametrize("structure", STRUCTURES, indirect=True)
def test_energy_term_adds_its_pair_energy(models_with_and_without_term, structure):
    plain, with_term = models_with_and_without_term
    expected = numpy_pair_energies(structure, A=2.0)
    assert expected.sum() > 1.0
    before, after = evaluate(plain, structure), evaluate(with_term, structure)
    assert abs((after[keys.ENERGY][0] - before[keys.ENERGY][0]) - expected.sum()) < 1e-10
    np.testing.assert_allclose(after[keys.ATOMIC_ENERGIES] - before[keys.ATOMIC_ENERGIES],
                               expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("structure", ["ethanol", "cu_cell"], indirect=True)
def test_energy_term_forces_and_stress_match_finite_differences(models_with_and_without_term,
                                                                  structure):
    plain, with_term = models_with_and_without_term
    periodic = structure.pbc.any()
    out = evaluate(with_term, structure, stress=periodic)
    # the term changes the forces, and they are still −∇E
    assert relative_error(out[keys.FORCES], evaluate(plain, structure)[keys.FORCES]) > 1e-3
    assert relative_error(out[keys.FORCES], fd_forces(with_term, structure)) < 1e-6
    if periodic:
        assert relative_error(out[keys.STRESS][0], fd_stress(with_term, structure)) < 1e-6


# ---------------------------------------------------------------- 6. dtype and autograd modes


def test_float32_model_matches_float64(model, model_config, build_model, ethanol, cu_cell):
    single = build_model(model_config, dtype=torch.float32, seed=7)
    single.load_state_dict(model.state_dict())
    assert single.dtype == torch.float32
    for atoms in (ethanol, cu_cell):
        graph = Batch.from_data_list([atoms_to_graph(atoms, CUTOFF)])
        out32 = single(graph, compute_forces=True, compute_stress=bool(atoms.pbc.any()))
        out64 = model(graph, compute_forces=True, compute_stress=bool(atoms.pbc.any()))
        assert out32[keys.ENERGY].dtype == torch.float64
        assert out32[keys.ATOMIC_ENERGIES].dtype == torch.float64
        e32, e64 = out32[keys.ENERGY].item(), out64[keys.ENERGY].item()
        assert e32 != e64  # it really ran in single precision
        assert abs(e32 - e64) < 1e-4 * abs(e64)
        f32, f64 = out32[keys.FORCES].double().numpy(), out64[keys.FORCES].numpy()
        assert relative_error(f32, f64) < 1e-3


def test_eval_mode_outputs_do_not_require_grad(model, cu_cell):
    assert not model.training
    graph = Batch.from_data_list([atoms_to_graph(cu_cell, CUTOFF)])
    out = model(graph, compute_forces=True, compute_stress=True)
    for name in (keys.ENERGY, keys.ATOMIC_ENERGIES, keys.FORCES, keys.STRESS):
        assert not out[name].requires_grad, name


def test_train_mode_force_loss_backpropagates(model_config, build_model, ethanol, cu_cell):
    """In train mode forces keep their graph, and ∂(Σ F²)/∂θ matches finite differences."""
    network = build_model(model_config)
    graph = Batch.from_data_list([atoms_to_graph(ethanol, CUTOFF)])
    parameter = next(p for p in network.blocks[0].parameters() if p.dim() == 2)

    def force_loss():
        out = network(graph, compute_forces=True)
        return (out[keys.FORCES] ** 2).sum()

    network.train()
    periodic = Batch.from_data_list([atoms_to_graph(cu_cell, CUTOFF)])
    assert network(periodic, compute_stress=True)[keys.STRESS].requires_grad
    out = network(graph, compute_forces=True)
    assert out[keys.FORCES].requires_grad and out[keys.ENERGY].requires_grad
    loss = (out[keys.FORCES] ** 2).sum()
    loss.backward()
    gradient = parameter.grad[0, 0].item()
    assert abs(gradient) > 1e-3

    network.eval()
    h = 1e-6
    values = []
    with torch.no_grad():
        for sign in (+1, -1):
            parameter[0, 0] += sign * h
            values.append(force_loss().item())
            parameter[0, 0] -= sign * h
    numerical = (values[0] - values[1]) / (2 * h)
    assert abs(gradient - numerical) < 1e-6 * abs(numerical)


def test_create_graph_argument_overrides_mode(model_config, build_model, ethanol):
    network = build_model(model_config)
    graph = Batch.from_data_list([atoms_to_graph(ethanol, CUTOFF)])
    assert network(graph, create_graph=True)[keys.FORCES].requires_grad
    network.train()
    assert not network(graph, create_graph=False)[keys.FORCES].requires_grad


def test_forces_under_no_grad(model, ethanol):
    graph = Batch.from_data_list([atoms_to_graph(ethanol, CUTOFF)])
    expected = model(graph)[keys.FORCES]
    with torch.no_grad():
        forces = model(graph)[keys.FORCES]
    assert torch.equal(forces, expected)
