"""Learned charges in a Potential (equipot/physics/electrostatics.py), float64: charges sum to the
structure's charge, forces and stress are exact derivatives with the Ewald and Coulomb sums in
the graph, symmetries hold, models without the term pay nothing, and total charges and dipoles
travel from files through datasets, loss, metrics and the ASE calculator."""

import itertools
import json

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from torch_geometric.data import Batch

import equipot.physics.electrostatics as electrostatics_module
from equipot import EquipotCalculator, keys, load, save_model
from equipot.data.dataset import GraphDataset
from equipot.data.graph import atoms_to_graph
from equipot.errors import EquipotInputError
from equipot.physics.elements import COULOMB_CONSTANT
from equipot.train.loss import WeightedLoss
from equipot.train.metrics import ErrorMetrics

from conftest import MODEL_CONFIG, run_defaults

SPECIES_CHARGES = [0.3, -0.2, -0.7, 0.8]  # e, offsets q_0 of H, C, O, Cu (MODEL_CONFIG's species)
ATOM_BLOCKS = ["schnet", "painn", "nequip"]  # per-atom features (MACE's too, but slow to build)


def charged_config(block="schnet", **options):
    return {**MODEL_CONFIG, "block": block,
            "energy_terms": [{"name": "electrostatics", "accuracy": 1e-12, **options}]}


@pytest.fixture(scope="module")
def charged_model(build_model):
    """Factory: a test model with the electrostatics term and sizeable species offsets q_0."""

    def make(block="schnet", **options):
        model = build_model(charged_config(block, **options))
        with torch.no_grad():
            model.energy_terms[0].species_charges.copy_(torch.tensor(SPECIES_CHARGES))
        return model

    return make


def copper_oxide(seed=0):
    """A rattled, triclinically distorted 8-atom CuO rock-salt cell."""
    atoms = bulk("CuO", "rocksalt", a=4.2, cubic=True)
    distortion = np.eye(3) + np.random.default_rng(seed).uniform(-0.05, 0.05, (3, 3))
    atoms.set_cell(atoms.cell.array @ distortion, scale_atoms=True)
    atoms.rattle(0.1, seed=seed)
    return atoms


def with_charge(atoms, charge):
    atoms = atoms.copy()
    atoms.info["charge"] = charge
    return atoms


def evaluate(model, structures, stress=False):
    graphs = [atoms_to_graph(atoms, model.cutoff) for atoms in structures]
    out = model(Batch.from_data_list(graphs), compute_forces=True, compute_stress=stress)
    return {name: value.detach().numpy() for name, value in out.items()}


def relative_error(actual, expected):
    return np.abs(actual - expected).max() / np.abs(expected).max()


def random_rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


# ---------------------------------------------------------------- charges


@pytest.mark.parametrize("block", ATOM_BLOCKS)
def test_charges_sum_to_each_structures_total_charge(charged_model, block, ethanol):
    model = charged_model(block)
    structures = [ethanol, with_charge(ethanol, 1), with_charge(copper_oxide(), -2.0)]
    out = evaluate(model, structures)
    offsets = np.cumsum([0] + [len(atoms) for atoms in structures])
    for k, total in enumerate([0.0, 1.0, -2.0]):
        charges = out[keys.CHARGES][offsets[k]:offsets[k + 1]]
        assert abs(charges.sum() - total) < 1e-12
        assert np.ptp(charges) > 0.1  # the head and the offsets give atoms different charges


def test_dipole_is_sum_of_charges_times_positions(charged_model, ethanol):
    cell = copper_oxide()
    out = evaluate(charged_model(), [ethanol, cell])
    charges = out[keys.CHARGES][:len(ethanol)]
    np.testing.assert_allclose(out[keys.DIPOLE][0], charges @ ethanol.positions,
                               rtol=0, atol=1e-12)
    assert np.abs(out[keys.DIPOLE][0]).max() > 0.1
    assert np.all(out[keys.DIPOLE][1] == 0.0)  # a crystal's dipole depends on the cell chosen


# ---------------------------------------------------------------- energy, forces, stress


@pytest.mark.parametrize("charge", [0.0, 1.0])
def test_energy_adds_the_coulomb_energy_of_its_charges(build_model, charged_model, ethanol,
                                                       charge):
    """The term adds ½ Σ_{i≠j} k_e q_i q_j / r_ij (a double loop here) to the plain model."""
    plain = build_model(MODEL_CONFIG)
    with_term = charged_model()
    missing, unexpected = with_term.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(name.startswith("energy_terms.") for name in missing)
    atoms = with_charge(ethanol, charge)
    before, after = evaluate(plain, [atoms]), evaluate(with_term, [atoms])
    q = after[keys.CHARGES]
    coulomb = sum(COULOMB_CONSTANT * q[i] * q[j] / atoms.get_distance(i, j)
                  for i, j in itertools.combinations(range(len(atoms)), 2))
    assert abs(coulomb) > 0.5
    assert abs(after[keys.ENERGY][0] - before[keys.ENERGY][0] - coulomb) < 1e-10


@pytest.mark.parametrize("width", [None, 0.5])
@pytest.mark.parametrize("structure", ["ethanol", "copper_oxide"])
def test_forces_and_stress_match_finite_differences(build_model, charged_model, ethanol,
                                                    structure, width):
    atoms = with_charge(ethanol, 1.0) if structure == "ethanol" else with_charge(copper_oxide(),
                                                                                 -1.0)
    periodic = bool(atoms.pbc.all())
    model = charged_model(shielding_width=width)
    out = evaluate(model, [atoms], stress=periodic)
    plain = evaluate(build_model(MODEL_CONFIG), [atoms], stress=periodic)
    assert relative_error(out[keys.FORCES], plain[keys.FORCES]) > 0.05  # it matters
    atoms.calc = EquipotCalculator(model)
    numerical = calculate_numerical_forces(atoms, eps=1e-5)
    assert relative_error(out[keys.FORCES], numerical) < 1e-6
    if periodic:
        assert relative_error(out[keys.STRESS][0], plain[keys.STRESS][0]) > 0.05
        numerical = calculate_numerical_stress(atoms, eps=1e-6, voigt=False)
        assert relative_error(out[keys.STRESS][0], numerical) < 1e-6


@pytest.mark.parametrize("structure", ["ethanol", "copper_oxide"])
def test_rotation_translation_and_permutation(charged_model, ethanol, structure):
    atoms = with_charge(ethanol, 1.0) if structure == "ethanol" else copper_oxide()
    periodic = bool(atoms.pbc.all())
    model = charged_model("painn")  # equivariant features, invariant charges
    before = evaluate(model, [atoms], stress=periodic)
    rotation, translation = random_rotation(3), np.array([0.4, -2.0, 1.1])
    moved = atoms.copy()
    moved.positions = atoms.positions @ rotation.T + translation
    moved.cell = atoms.cell.array @ rotation.T
    after = evaluate(model, [moved], stress=periodic)
    assert abs(after[keys.ENERGY][0] - before[keys.ENERGY][0]) < 1e-9
    np.testing.assert_allclose(after[keys.CHARGES], before[keys.CHARGES], rtol=0, atol=1e-10)
    np.testing.assert_allclose(after[keys.FORCES], before[keys.FORCES] @ rotation.T,
                               rtol=0, atol=1e-8)
    if periodic:
        np.testing.assert_allclose(after[keys.STRESS][0],
                                   rotation @ before[keys.STRESS][0] @ rotation.T,
                                   rtol=0, atol=1e-9)
    else:  # a charged molecule's dipole moves with the origin: μ' = R μ + Q t
        np.testing.assert_allclose(after[keys.DIPOLE][0],
                                   rotation @ before[keys.DIPOLE][0] + 1.0 * translation,
                                   rtol=0, atol=1e-9)

    order = np.random.default_rng(4).permutation(len(atoms))
    permuted = evaluate(model, [atoms[order]])
    assert abs(permuted[keys.ENERGY][0] - before[keys.ENERGY][0]) < 1e-9
    np.testing.assert_allclose(permuted[keys.CHARGES], before[keys.CHARGES][order],
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(permuted[keys.FORCES], before[keys.FORCES][order],
                               rtol=0, atol=1e-8)


# ---------------------------------------------------------------- no cost without the term


def test_model_without_the_term_pays_nothing(build_model, charged_model, ethanol, monkeypatch):
    plain, with_term = build_model(MODEL_CONFIG), charged_model()
    term_parameters = sum(p.numel() for p in with_term.energy_terms.parameters())
    assert term_parameters > 0
    assert (sum(p.numel() for p in plain.parameters())
            == sum(p.numel() for p in with_term.parameters()) - term_parameters)
    assert not any(name.startswith("energy_terms") for name in plain.state_dict())
    expected = evaluate(plain, [ethanol, copper_oxide()], stress=True)

    def fail(*args, **kwargs):
        raise AssertionError("electrostatics computed for a model without the term")

    monkeypatch.setattr(electrostatics_module, "electrostatic_energies", fail)
    monkeypatch.setattr(electrostatics_module.Electrostatics, "forward", fail)
    out = evaluate(plain, [ethanol, copper_oxide()], stress=True)
    assert set(out) == {keys.ENERGY, keys.ATOMIC_ENERGIES, keys.FORCES, keys.STRESS}
    for name, value in expected.items():
        assert np.array_equal(out[name], value), name
    with pytest.raises(AssertionError, match="electrostatics computed"):
        evaluate(with_term, [ethanol])


def test_features_on_edges_are_a_clear_error_at_build_time(build_model):
    with pytest.raises(ValueError, match="per-atom features"):
        build_model(charged_config("dimenet"))


def test_slab_is_a_clear_error(charged_model, cu_slab):
    with pytest.raises(EquipotInputError, match="pbc"):
        evaluate(charged_model(), [cu_slab])


# ---------------------------------------------------------------- calculator and model files


def test_calculator_returns_charges_and_dipole_and_follows_the_charge(charged_model, ethanol):
    model = charged_model()
    ethanol.calc = EquipotCalculator(model)
    charges = ethanol.get_charges()
    expected = evaluate(model, [ethanol])
    np.testing.assert_allclose(charges, expected[keys.CHARGES], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ethanol.get_dipole_moment(), expected[keys.DIPOLE][0],
                               rtol=0, atol=1e-12)
    neutral_energy = ethanol.get_potential_energy()
    ethanol.info["charge"] = 1
    assert abs(ethanol.get_charges().sum() - 1.0) < 1e-12  # recalculated, not cached
    assert ethanol.get_potential_energy() != neutral_energy


def test_calculator_without_charges_says_so(build_model, ethanol, cu_cell):
    model = build_model(MODEL_CONFIG)
    ethanol.calc = EquipotCalculator(model)
    with pytest.raises(PropertyNotImplementedError):
        ethanol.get_charges()
    cu_cell.calc = EquipotCalculator(model)
    with pytest.raises(PropertyNotImplementedError):
        cu_cell.get_dipole_moment()


def test_model_file_round_trip(charged_model, tmp_path, ethanol):
    model = charged_model(shielding_width=0.4)
    save_model(tmp_path / "model.pt", model)
    loaded = load(tmp_path / "model.pt", dtype=torch.float64)
    atoms = [with_charge(ethanol, -1), copper_oxide()]
    before, after = evaluate(model, atoms), evaluate(loaded, atoms)
    for name in (keys.ENERGY, keys.CHARGES, keys.FORCES, keys.DIPOLE):
        np.testing.assert_array_equal(after[name], before[name])


# ---------------------------------------------------------------- data, loss and metrics


def labelled_molecules(count=4):
    frames = []
    for k in range(count):
        atoms = with_charge(bulk("Cu", "fcc", a=3.6).repeat(2) if k == count - 1 else
                            molecule("H2O"), float(k % 3 - 1))
        atoms.rattle(0.05, seed=k)
        atoms.info["energy"] = -float(k)
        atoms.info["dipole"] = [0.1 * k, 0.2, -0.3]
        frames.append(atoms)
    return frames


def test_total_charge_and_dipole_reach_the_batch(tmp_path):
    path = tmp_path / "charged.xyz"
    ase.io.write(path, labelled_molecules(), format="extxyz")
    dataset = GraphDataset.from_file(path, 3.0, cache_dir=tmp_path / "cache")
    batch = Batch.from_data_list([dataset[k] for k in range(len(dataset))])
    np.testing.assert_array_equal(batch[keys.TOTAL_CHARGE].numpy(), [-1.0, 0.0, 1.0, -1.0])
    # A dipole is a label of the molecules only: the Cu cell's is ignored.
    np.testing.assert_allclose(batch[keys.DIPOLE].numpy()[:, 0], [0.0, 0.1, 0.2, 0.0])
    assert batch[keys.label(keys.DIPOLE).has].tolist() == [True, True, True, False]
    assert batch[keys.DIPOLE].shape == (4, 3)
    plain = atoms_to_graph(molecule("H2O"), 3.0)
    assert plain[keys.TOTAL_CHARGE].tolist() == [0.0]  # absent: neutral


@pytest.mark.parametrize("field, value, message", [
    ("charge", "minus one", "expected one number"),
    ("charge", [1.0, 2.0], "expected one number"),
    ("charge", float("nan"), "NaN"),
    ("dipole", [0.1, 0.2], "expected 3 values"),
    ("dipole", [0.1, float("inf"), 0.0], "NaN or inf"),
])
def test_malformed_charge_or_dipole_names_file_structure_and_field(tmp_path, field, value,
                                                                    message):
    frames = labelled_molecules(3)
    frames[1].info[field] = value
    path = tmp_path / "bad.xyz"
    ase.io.write(path, frames, format="extxyz")
    with pytest.raises(EquipotInputError, match=message) as error:
        GraphDataset.from_file(path, 3.0, cache_dir=False)
    assert str(path) in str(error.value) and "structure 1" in str(error.value)
    assert error.value.field in (field, keys.DIPOLE)


def test_dipole_missing_in_one_structure_leaves_it_out(tmp_path):
    frames = labelled_molecules(3)
    del frames[2].info["dipole"]
    path = tmp_path / "partial.xyz"
    ase.io.write(path, frames, format="extxyz")
    dataset = GraphDataset.from_file(path, 3.0, cache_dir=False)
    assert dataset.tensors[keys.label(keys.DIPOLE).has].tolist() == [True, True, False]


def test_dipole_loss_and_metrics_count_molecules_only(charged_model):
    frames = labelled_molecules()
    dataset = GraphDataset.from_atoms(frames, MODEL_CONFIG["cutoff"])
    batch = Batch.from_data_list([dataset[k] for k in range(len(dataset))])
    model = charged_model()
    predicted = model(batch, compute_forces=False)
    molecule = ~batch[keys.PBC].any(dim=1)
    assert molecule.tolist() == [True, True, True, False]
    error = (predicted[keys.DIPOLE] - batch[keys.DIPOLE])[molecule]

    loss = WeightedLoss(**run_defaults("loss", energy_weight=0.0, forces_weight=0.0,
                                                dipole_weight=2.0))(predicted, batch)
    assert abs(loss[keys.DIPOLE].item() - 2.0 * error.square().mean().item()) < 1e-12
    loss["total"].backward()
    assert model.energy_terms[0].species_charges.grad.abs().max() > 0

    metrics = ErrorMetrics()
    metrics.update(predicted, batch)
    assert abs(metrics.compute()["dipole_mae"].item() - error.abs().mean().item()) < 1e-12


def test_dipole_loss_needs_a_model_with_dipoles(build_model, ethanol):
    ethanol.info.update(energy=-1.0, dipole=[0.0, 0.0, 1.0])
    dataset = GraphDataset.from_atoms([ethanol], MODEL_CONFIG["cutoff"])
    batch = Batch.from_data_list([dataset[0]])
    with pytest.raises(ValueError, match="dipole_weight"):
        loss = WeightedLoss(**run_defaults("loss", dipole_weight=1.0))
        loss(build_model(MODEL_CONFIG)(batch), batch)


@pytest.mark.slow
def test_training_with_the_electrostatics_experiment(tmp_path):
    """equipot-train with experiment=electrostatics learns from charges and dipoles, reports
    the dipole error, and writes a model whose calculator gives charges (about 20 s)."""
    from test_cli import BIN, FAST, run

    rng = np.random.default_rng(0)
    frames = []
    for k in range(30):
        atoms = molecule("H2O")
        atoms.rattle(0.05, seed=k)
        atoms.info.update(energy=float(rng.normal()), charge=float(k % 2),
                          dipole=rng.normal(size=3).tolist())
        atoms.arrays["forces"] = rng.normal(size=(3, 3))
        frames.append(atoms)
    ase.io.write(tmp_path / "train.xyz", frames)
    run([str(BIN / "equipot-train"), "data.train=train.xyz", "data.valid_count=5",
         "data.test_count=5", "experiment=electrostatics", "hydra.run.dir=run", *FAST], tmp_path)
    metrics = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert "dipole_mae" in metrics
    atoms = with_charge(frames[0], 1.0)
    atoms.calc = EquipotCalculator(tmp_path / "run" / "model.pt")
    assert abs(atoms.get_charges().sum() - 1.0) < 1e-5
