"""Electrostatics of fixed charges (equipot/physics/ewald.py), float64, against independent numbers:
Madelung constants, brute-force Coulomb double loops, the α-independence of the Ewald sum,
supercells, a molecule in a large box, and the symmetries of physics."""

import itertools
import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, make_supercell
from scipy.special import erf

from equipot.errors import EquipotInputError
from equipot.physics.elements import COULOMB_CONSTANT
from equipot.physics.ewald import electrostatic_energies

MADELUNG_ROCK_SALT = 1.747565  # per ion pair, in units of the nearest-neighbour distance
MADELUNG_CESIUM_CHLORIDE = 1.762675


def energies(structures, charges, **options):
    """Per-atom energies (numpy, eV) of a batch of ase.Atoms with the given charges (e)."""
    structures = structures if isinstance(structures, list) else [structures]
    charges = charges if isinstance(charges, list) else [charges]
    result = electrostatic_energies(
        torch.tensor(np.concatenate(charges)),
        torch.tensor(np.concatenate([atoms.positions for atoms in structures])),
        torch.tensor(np.stack([atoms.cell.array for atoms in structures])),
        torch.tensor(np.stack([atoms.pbc for atoms in structures])),
        torch.repeat_interleave(torch.arange(len(structures)),
                                torch.tensor([len(atoms) for atoms in structures])),
        **options)
    return result.numpy()


def energy(atoms, charges, **options) -> float:
    return float(energies(atoms, charges, **options).sum())


def ionic_charges(atoms):
    """+1 on the first element of the formula, −1 on the other."""
    return np.where(atoms.numbers == atoms.numbers[0], 1.0, -1.0)


def random_crystal(seed=0, net_charge=0.0):
    """A rattled triclinic rock-salt-like cell of 8 atoms with random charges summing to
    ``net_charge``."""
    atoms = bulk("NaCl", "rocksalt", a=5.0, cubic=True)
    rng = np.random.default_rng(seed)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.1, 0.1, (3, 3))),
                   scale_atoms=True)
    atoms.rattle(0.2, seed=seed)
    charges = ionic_charges(atoms) + rng.uniform(-0.3, 0.3, len(atoms))
    return atoms, charges - charges.mean() + net_charge / len(atoms)


def random_molecule(seed=0, count=7):
    rng = np.random.default_rng(seed)
    return Atoms("H" * count, positions=rng.uniform(0, 4, (count, 3))), rng.normal(size=count)


def coulomb_double_loop(positions, charges, width=None):
    """Σ_{i<j} k_e q_i q_j s(r)/r, s = 1 or erf(r / 2σ), one pair at a time."""
    total = 0.0
    for i, j in itertools.combinations(range(len(charges)), 2):
        r = np.linalg.norm(positions[i] - positions[j])
        shielding = 1.0 if width is None else erf(r / (2 * width))
        total += COULOMB_CONSTANT * charges[i] * charges[j] * shielding / r
    return total


# ---------------------------------------------------------------- Madelung constants


@pytest.mark.parametrize("accuracy", [1e-8, 1e-12])
def test_madelung_constant_of_rock_salt(accuracy):
    """The conventional 8-atom cell holds 4 ion pairs: E = −4 M k_e / r_0, r_0 = a/2."""
    a = 5.64
    atoms = bulk("NaCl", "rocksalt", a=a, cubic=True)
    assert len(atoms) == 8
    madelung = -energy(atoms, ionic_charges(atoms), accuracy=accuracy) * (a / 2) / (
        4 * COULOMB_CONSTANT)
    assert abs(madelung - MADELUNG_ROCK_SALT) < 1e-6


def test_madelung_constant_of_rock_salt_primitive_cell():
    """The same crystal in its 2-atom fcc primitive cell (non-orthogonal lattice vectors)."""
    a = 4.0
    atoms = bulk("NaCl", "rocksalt", a=a)
    assert len(atoms) == 2 and not np.allclose(atoms.cell.angles(), 90.0)
    madelung = -energy(atoms, ionic_charges(atoms), accuracy=1e-12) * (a / 2) / COULOMB_CONSTANT
    assert abs(madelung - MADELUNG_ROCK_SALT) < 1e-6


def test_madelung_constant_of_cesium_chloride():
    a = 3.0
    atoms = bulk("CsCl", "cesiumchloride", a=a)
    nearest = math.sqrt(3) * a / 2
    madelung = -energy(atoms, ionic_charges(atoms), accuracy=1e-12) * nearest / COULOMB_CONSTANT
    assert abs(madelung - MADELUNG_CESIUM_CHLORIDE) < 1e-6


# ---------------------------------------------------------------- the Ewald sum's consistency


@pytest.mark.parametrize("net_charge", [0.0, 1.3])
@pytest.mark.parametrize("width", [None, 0.6])
def test_energy_does_not_depend_on_alpha(net_charge, width):
    """Independent of the splitting parameter α, also for a charged cell (where only the
    background term makes it so) and for Gaussian charges."""
    atoms, charges = random_crystal(net_charge=net_charge)
    assert abs(charges.sum() - net_charge) < 1e-12
    values = [energy(atoms, charges, accuracy=1e-12, alpha=alpha, shielding_width=width)
              for alpha in (0.25, 0.5, 1.0, 2.0)]
    values.append(energy(atoms, charges, accuracy=1e-12, shielding_width=width))  # α chosen
    assert abs(values[0]) > 1.0
    assert np.ptp(values) < 1e-6


def test_background_term_matters_for_a_charged_cell():
    """Without it, a charged cell's energy would change with α by π Q² k_e / (2 V) Δ(1/α²)."""
    atoms, charges = random_crystal(net_charge=1.3)
    first, second = (energy(atoms, charges, accuracy=1e-12, alpha=alpha) for alpha in (0.5, 1.0))
    background_change = -math.pi * 1.3**2 / (2 * atoms.get_volume()) * COULOMB_CONSTANT * (
        1 / 0.5**2 - 1 / 1.0**2)
    assert abs(background_change) > 1e-2
    assert abs(first - second) < 1e-6


@pytest.mark.parametrize("net_charge", [0.0, 1.3])
def test_supercell_energy_is_eight_cells(net_charge):
    atoms, charges = random_crystal(seed=1, net_charge=net_charge)
    supercell = make_supercell(atoms, 2 * np.eye(3))
    repeat = np.tile(charges, 8)  # make_supercell lists the images of each atom in turn
    assert np.allclose(supercell.numbers, np.tile(atoms.numbers, 8))
    cell_energies = energies(atoms, charges, accuracy=1e-12)
    super_energies = energies(supercell, repeat, accuracy=1e-12)
    assert abs(super_energies.sum() - 8 * cell_energies.sum()) < 1e-6
    np.testing.assert_allclose(super_energies, np.tile(cell_energies, 8), rtol=0, atol=1e-7)


@pytest.mark.parametrize("width", [None, 0.7])
def test_neutral_cluster_in_a_large_box_approaches_its_coulomb_energy(width):
    """A cube of alternating charges has no dipole or quadrupole moment: its interaction with
    its periodic images in a 40 Å box is below 1e-6 of its energy."""
    corners = np.array(list(itertools.product([0.0, 2.0], repeat=3)))
    charges = np.where(corners.sum(axis=1) % 4 == 0, 1.0, -1.0)
    molecule = Atoms("H8", positions=corners + 20.0, cell=np.eye(3) * 40.0, pbc=False)
    crystal = molecule.copy()
    crystal.pbc = True
    coulomb = energy(molecule, charges, shielding_width=width)
    assert abs(coulomb - coulomb_double_loop(corners, charges, width)) < 1e-10
    ewald = energy(crystal, charges, accuracy=1e-12, shielding_width=width)
    assert abs(ewald - coulomb) < 1e-6 * abs(coulomb)


# ---------------------------------------------------------------- molecules


@pytest.mark.parametrize("width", [None, 0.7])
def test_coulomb_matches_double_loop(width):
    molecule, charges = random_molecule()
    assert abs(charges.sum()) > 0.1  # a charged molecule
    expected = coulomb_double_loop(molecule.positions, charges, width)
    assert abs(energy(molecule, charges, shielding_width=width) - expected) < 1e-10


def test_batch_equals_structures_alone():
    """Pairs never cross structures: a batch of molecules and cells of different sizes gives
    each structure's energies alone (the Ewald parameters are chosen per structure)."""
    first, first_charges = random_molecule(seed=1, count=5)
    second, second_charges = random_molecule(seed=2, count=3)
    crystal, crystal_charges = random_crystal(seed=3, net_charge=0.5)
    primitive = bulk("NaCl", "rocksalt", a=4.0)
    structures = [first, crystal, second, primitive]
    charges = [first_charges, crystal_charges, second_charges, ionic_charges(primitive)]
    batched = energies(structures, charges, accuracy=1e-10)
    alone = np.concatenate([energies(atoms, q, accuracy=1e-10)
                            for atoms, q in zip(structures, charges)])
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-10)


def test_gaussian_charges_of_vanishing_width_are_point_charges():
    molecule, charges = random_molecule(seed=4)
    assert abs(energy(molecule, charges, shielding_width=1e-3) - energy(molecule, charges)) < 1e-10
    crystal, crystal_charges = random_crystal(seed=4)
    point = energy(crystal, crystal_charges, accuracy=1e-12)
    assert abs(energy(crystal, crystal_charges, accuracy=1e-12, shielding_width=1e-3)
               - point) < 1e-6


# ---------------------------------------------------------------- symmetries and errors


@pytest.mark.parametrize("periodic", [False, True])
def test_rotation_translation_and_permutation_invariance(periodic):
    atoms, charges = random_crystal(seed=5) if periodic else random_molecule(seed=5)
    reference = energies(atoms, charges, accuracy=1e-12)
    q, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(3, 3)))
    moved = atoms.copy()
    moved.positions = atoms.positions @ q.T + [1.3, -7.0, 2.2]
    moved.cell = atoms.cell.array @ q.T
    np.testing.assert_allclose(energies(moved, charges, accuracy=1e-12), reference,
                               rtol=0, atol=1e-8)
    order = np.random.default_rng(6).permutation(len(atoms))
    np.testing.assert_allclose(energies(atoms[order], charges[order], accuracy=1e-12),
                               reference[order], rtol=0, atol=1e-8)


def test_forces_and_stress_of_fixed_charges_match_finite_differences():
    """Autograd through positions and a strain of positions and cell (as the Potential does)
    against central differences, for Gaussian charges in a charged triclinic cell."""
    atoms, charges = random_crystal(seed=7, net_charge=-0.7)
    options = dict(accuracy=1e-12, shielding_width=0.5)
    positions = torch.tensor(atoms.positions, requires_grad=True)
    strain = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    deformation = torch.eye(3, dtype=torch.float64) + 0.5 * (strain + strain.T)
    cell = torch.tensor(atoms.cell.array) @ deformation
    total = electrostatic_energies(
        torch.tensor(charges), positions @ deformation, cell[None], torch.ones(1, 3, dtype=bool),
        torch.zeros(len(atoms), dtype=torch.long), **options).sum()
    gradient, virial = torch.autograd.grad(total, (positions, strain))

    h = 1e-5
    numerical = np.zeros((len(atoms), 3))
    for index in np.ndindex(len(atoms), 3):
        displaced = [atoms.copy(), atoms.copy()]
        displaced[0].positions[index] += h
        displaced[1].positions[index] -= h
        numerical[index] = (energy(displaced[0], charges, **options)
                            - energy(displaced[1], charges, **options)) / (2 * h)
    assert np.abs(numerical).max() > 1.0
    assert np.abs(gradient.numpy() - numerical).max() < 1e-6 * np.abs(numerical).max()

    numerical_virial = np.zeros((3, 3))
    for i, j in itertools.product(range(3), repeat=2):
        values = []
        for sign in (1, -1):
            epsilon = np.zeros((3, 3))
            epsilon[i, j] = epsilon[j, i] = sign * h / 2 if i != j else sign * h
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ (np.eye(3) + epsilon), scale_atoms=True)
            values.append(energy(strained, charges, **options))
        numerical_virial[i, j] = (values[0] - values[1]) / (2 * h)
    assert np.abs(virial.numpy() - numerical_virial).max() < 1e-6 * np.abs(numerical_virial).max()


def test_slab_is_an_error():
    atoms, charges = random_crystal()
    atoms.pbc = [True, True, False]
    with pytest.raises(EquipotInputError, match="pbc"):
        energies([random_molecule()[0], atoms], [random_molecule()[1], charges])
