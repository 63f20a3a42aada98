"""The ZBL repulsion prior (equipot/physics/zbl.py) and the training statistics that subtract it.

Reference numbers are independent of the code: a value worked out by hand from the ZBL
formula, finite differences of energies (ASE's own helpers), brute-force shortest distances
from ASE's neighbour list, and labels built as a known prior plus a known remainder.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import covalent_radii
from ase.neighborlist import neighbor_list as ase_neighbor_list

from equipot import EquipotCalculator, load, save_model
from equipot.data.dataset import GraphDataset
from equipot.data.reading import LabelKeys
from equipot.errors import EquipotInputError
from equipot.model.build import STATISTICS
from equipot.physics.registry import ENERGY_TERMS
from equipot.physics.term import TermContext
from equipot.physics.zbl import ZBLOptions, ZBLRepulsion, smooth_switch
from equipot.train.config import composed
from equipot.train.statistics import compute_statistics, shortest_distances

from conftest import MODEL_CONFIG, make_cu_cell, make_ethanol

ZBL = {"name": "zbl"}  # the defaults: inner_factor 0.5, outer_factor 0.8
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def dimer(z_i, z_j, r):
    return Atoms(numbers=[z_i, z_j], positions=[[0.0, 0.0, 0.0], [0.0, 0.0, r]])


def energy(model, atoms) -> float:
    atoms = atoms.copy()
    atoms.calc = EquipotCalculator(model)
    return atoms.get_potential_energy()


def atomic_energies(model, atoms) -> np.ndarray:
    atoms = atoms.copy()
    atoms.calc = EquipotCalculator(model)
    return atoms.get_potential_energies()


def zbl_by_hand(z_i, z_j, r):
    """V(r) = Z_i Z_j k_e / r · φ(r/a), written out from Ziegler, Biersack and Littmark (1985)."""
    a = 0.46850 / (z_i**0.23 + z_j**0.23)  # Å, 0.8854 Bohr radii
    x = r / a
    phi = (0.18175 * math.exp(-3.19980 * x) + 0.50986 * math.exp(-0.94229 * x)
           + 0.28022 * math.exp(-0.40290 * x) + 0.02817 * math.exp(-0.20162 * x))
    return z_i * z_j * 14.399645 / r * phi


def smooth(z_i, z_j, r):
    """The switch by its formula: 1 − 10t³ + 15t⁴ − 6t⁵ between 0.5 and 0.8 × (R_i + R_j)."""
    radii = covalent_radii[z_i] + covalent_radii[z_j]
    t = min(max((r - 0.5 * radii) / (0.3 * radii), 0.0), 1.0)
    return 1 - 10 * t**3 + 15 * t**4 - 6 * t**5


@pytest.fixture(scope="module")
def zbl_model_pair(build_model):
    """(network alone, the same network + ZBL), float64."""
    plain = build_model(MODEL_CONFIG)
    with_zbl = build_model({**MODEL_CONFIG, "energy_terms": [ZBL]})
    with_zbl.load_state_dict(plain.state_dict())
    return plain, with_zbl


# ---------------------------------------------------------------- the pair energy

def test_carbon_oxygen_at_0_6_angstrom_matches_the_hand_computed_value(zbl_model_pair):
    # By hand: a = 0.46850 / (6^0.23 + 8^0.23) = 0.46850 / (1.51029 + 1.61293) = 0.150003 Å,
    # x = 0.6 / a = 3.99993, φ(x) = 0.18175·e^-12.799 + 0.50986·e^-3.7691 + 0.28022·e^-1.6116
    # + 0.02817·e^-0.80646 = 0.080265, V = 6·8·14.399645 eV·Å / 0.6 Å · φ = 92.463 eV.
    assert zbl_by_hand(6, 8, 0.6) == pytest.approx(92.463, abs=1e-3)
    plain, with_zbl = zbl_model_pair
    r_in = 0.5 * (covalent_radii[6] + covalent_radii[8])
    assert 0.6 < r_in  # full strength: no switch at 0.6 Å
    added = energy(with_zbl, dimer(6, 8, 0.6)) - energy(plain, dimer(6, 8, 0.6))
    assert added == pytest.approx(92.463, abs=1e-3)
    term = ZBLRepulsion(TermContext((1, 6, 8), 4.0), ZBLOptions()).double()
    for (i, j), r in [((0, 0), 0.25), ((0, 2), 0.4), ((2, 1), 0.3)]:
        z_i, z_j = [1, 6, 8][i], [1, 6, 8][j]
        pair = term.pair_energy(torch.tensor([r], dtype=torch.float64), torch.tensor([i]),
                                torch.tensor([j]))
        assert float(pair) == pytest.approx(zbl_by_hand(z_i, z_j, r), rel=1e-5)


def test_prior_is_zero_from_the_outer_radius_and_splits_evenly_between_the_atoms(zbl_model_pair):
    plain, with_zbl = zbl_model_pair
    r_out = 0.8 * (covalent_radii[1] + covalent_radii[6])
    for r in (r_out, r_out + 0.01, 1.09):  # 1.09 Å: the C–H bond length
        assert energy(with_zbl, dimer(1, 6, r)) - energy(plain, dimer(1, 6, r)) == 0.0
    atoms = dimer(1, 6, 0.7)  # inside the switch: t = 0.76
    added = atomic_energies(with_zbl, atoms) - atomic_energies(plain, atoms)
    np.testing.assert_allclose(added, [0.5 * zbl_by_hand(1, 6, 0.7) * smooth(1, 6, 0.7)] * 2,
                               rtol=1e-6)
    assert added[0] > 0.05  # eV


def derivatives(function, x: float):
    """f, f', f'' at x by autograd (float64)."""
    x = torch.tensor([x], dtype=torch.float64, requires_grad=True)
    value = function(x)
    first, = torch.autograd.grad(value.sum(), x, create_graph=True)
    second, = torch.autograd.grad(first.sum(), x)
    return torch.cat([value, first, second]).detach().numpy()


def test_switch_is_twice_continuously_differentiable_at_both_ends():
    for t, value in ((0.0, 1.0), (1.0, 0.0)):
        for side in (-1e-9, 0.0, 1e-9):
            np.testing.assert_allclose(derivatives(smooth_switch, t + side), [value, 0, 0],
                                       atol=1e-7)
    # The pair energy V·s around r_in and r_out (C–O): value, slope and curvature agree from
    # both sides to O(ε); a switch that is only C¹ would jump in curvature by ~10³ eV/Å².
    term = ZBLRepulsion(TermContext((6, 8), 4.0), ZBLOptions()).double()

    def pair_energy(r):
        pairs = torch.ones_like(r, dtype=torch.long)
        return term.pair_energy(r, 0 * pairs, pairs)

    r_in, r_out = float(term.inner_radius[0, 1]), float(term.outer_radius[0, 1])
    epsilon = 1e-7
    below = derivatives(pair_energy, r_in - epsilon)
    above = derivatives(pair_energy, r_in + epsilon)
    np.testing.assert_allclose(below, above, rtol=1e-5)
    assert np.all(np.abs(below) > 1.0)  # eV, eV/Å, eV/Å²: the comparison is not of zeros
    # Approaching r_out, f ~ ε³, f' ~ ε², f'' ~ ε (a C¹ switch would leave f'' ~ 10³ eV/Å²).
    assert np.all(np.abs(derivatives(pair_energy, r_out - epsilon)) < [1e-12, 1e-8, 1e-2])
    np.testing.assert_allclose(derivatives(pair_energy, r_out + epsilon), 0.0, atol=0.0)
    # It falls strictly wherever it is not zero: V > 0 falls, s does not rise.
    r = torch.linspace(0.1, r_out + 0.2, 500, dtype=torch.float64)
    energies = pair_energy(r).numpy()
    assert np.all((np.diff(energies) < 0) | (energies[:-1] == 0))


# ---------------------------------------------------------------- through the Potential

def test_forces_and_stress_match_finite_differences_with_the_prior_active(zbl_model_pair):
    plain, with_zbl = zbl_model_pair
    ethanol = make_ethanol()
    ethanol.positions *= 0.6  # bonds at 0.6 of their length: inside ZBL and its switch
    cu = make_cu_cell()
    cu.set_cell(cu.cell * 0.75, scale_atoms=True)  # Cu–Cu ≈ 1.9 Å, inside the switch
    for atoms in (ethanol, cu):
        assert energy(with_zbl, atoms) - energy(plain, atoms) > 5.0  # eV: the prior matters
        atoms.calc = EquipotCalculator(with_zbl)
        np.testing.assert_allclose(atoms.get_forces(),
                                   calculate_numerical_forces(atoms, eps=1e-5),
                                   rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(cu.get_stress(), calculate_numerical_stress(cu, eps=1e-6),
                               rtol=1e-6, atol=1e-6)


def test_float32_model_agrees_and_the_model_file_round_trips(zbl_model_pair, tmp_path):
    _, with_zbl = zbl_model_pair
    atoms = make_ethanol()
    atoms.positions *= 0.6
    save_model(tmp_path / "model.pt", with_zbl, {"dtype": "float64"})
    loaded = load(tmp_path / "model.pt")
    assert energy(loaded, atoms) == energy(with_zbl, atoms)
    single = load(tmp_path / "model.pt", dtype=torch.float32)
    assert energy(single, atoms) == pytest.approx(energy(with_zbl, atoms), rel=1e-5)


def test_registered_as_a_fixed_term_and_on_for_every_model_config():
    assert ENERGY_TERMS["zbl"] is ZBLRepulsion and ZBLRepulsion.fixed
    for path in sorted((CONFIGS / "model").glob("*.yaml")):
        assert "energy_terms" not in yaml.safe_load(path.read_text()), path.name
        model = composed("data.train=x.xyz", f"model={path.stem}")["model"]
        assert list(model["energy_terms"]) == ["zbl"], path.name
        ZBLRepulsion(TermContext(tuple(range(1, 87)), model["cutoff"]),  # H … Rn
                     ZBLOptions(**model["energy_terms"]["zbl"]))


def test_radii_beyond_the_cutoff_or_in_the_wrong_order_fail_at_build_time(build_model):
    with pytest.raises(EquipotInputError, match=r"Cu–Cu, beyond the model cutoff 2\.0 Å"):
        ZBLRepulsion(TermContext((1, 29), 2.0), ZBLOptions())
    with pytest.raises(EquipotInputError, match="inner_factor < outer_factor"):
        build_model({**MODEL_CONFIG, "energy_terms": [{**ZBL, "inner_factor": 0.8}]})


# ---------------------------------------------------------------- statistics

def labelled(atoms, energy, forces):
    atoms = atoms.copy()
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


def test_statistics_are_fitted_to_the_labels_minus_the_prior():
    """Labels = known E0 per element + ZBL + random forces of known RMS; with the prior
    subtracted, the fit must return exactly that E0, zero shift and that RMS."""
    e0 = {1: -13.6, 8: -432.1}
    remainders = np.random.default_rng(0).normal(0.0, 0.3, (12, 2, 3))  # eV/Å
    structures = []
    for k, remainder in enumerate(remainders):
        z_i, z_j = [(1, 1), (1, 8), (8, 8)][k % 3]
        r = 0.2 + 0.01 * k  # below r_in for every pair: V·s = V
        assert r < 0.5 * (covalent_radii[z_i] + covalent_radii[z_j])
        dv_dr = (zbl_by_hand(z_i, z_j, r + 1e-6) - zbl_by_hand(z_i, z_j, r - 1e-6)) / 2e-6
        prior_forces = np.array([[0, 0, dv_dr], [0, 0, -dv_dr]])  # −∂V/∂z of each atom
        labels = e0[z_i] + e0[z_j] + zbl_by_hand(z_i, z_j, r), prior_forces + remainder
        structures.append(labelled(dimer(z_i, z_j, r), *labels))
    dataset = GraphDataset.from_atoms(structures, cutoff=4.0)
    architecture = {key: value for key, value in MODEL_CONFIG.items() if key not in STATISTICS}
    with_prior = compute_statistics(dataset, model_config={**architecture, "energy_terms": [ZBL]})
    np.testing.assert_allclose(with_prior["reference_energies"], [e0[1], e0[8]], atol=1e-6)
    assert abs(with_prior["shift"]) < 1e-6
    assert with_prior["scale"] == pytest.approx(np.sqrt(np.mean(remainders**2)), rel=1e-6)
    without = compute_statistics(dataset, model_config=architecture)
    assert without["scale"] > 10 * with_prior["scale"]  # eV-sized ZBL forces left in


def test_shortest_distances_match_a_brute_force_search(cu_slab):
    structures = [make_ethanol(), cu_slab, make_cu_cell()]
    dataset = GraphDataset.from_atoms(structures, cutoff=4.0,
                                      label_keys=LabelKeys(energy=None, forces=None, stress=None))
    species = [1, 6, 8, 29]
    expected = np.full((4, 4), np.inf)
    for atoms in structures:
        i, j, d = ase_neighbor_list("ijd", atoms, 4.0)
        for z_i, z_j, distance in zip(atoms.numbers[i], atoms.numbers[j], d):
            a, b = species.index(z_i), species.index(z_j)
            expected[a, b] = min(expected[a, b], distance)
    found = np.array([[np.inf if r is None else r for r in row]
                      for row in shortest_distances(dataset, species)])
    np.testing.assert_allclose(found, expected, rtol=1e-12)
    assert np.isinf(found[1, 3])  # C and Cu never meet: None in the model config
