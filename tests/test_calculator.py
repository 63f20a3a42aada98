"""EquipotCalculator: ASE properties agree with the Potential and with each other, errors are
clear, model files load, and ASE molecular dynamics runs with it."""

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_stress
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from torch_geometric.data import Batch

from equipot import EquipotCalculator, keys, save_model
from equipot.data.graph import atoms_to_graph
from equipot.errors import EquipotInputError


def potential_outputs(model, atoms, stress=False):
    graph = Batch.from_data_list([atoms_to_graph(atoms, model.cutoff)])
    out = model(graph, compute_forces=True, compute_stress=stress)
    return {name: value.detach().numpy() for name, value in out.items()}


@pytest.fixture
def structure(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("structure", ["ethanol", "cu_cell", "cu_slab"], indirect=True)
def test_properties_agree_with_potential(model, structure):
    structure.calc = EquipotCalculator(model)
    energy = structure.get_potential_energy()
    energies = structure.get_potential_energies()
    forces = structure.get_forces()
    expected = potential_outputs(model, structure)

    assert isinstance(energy, float)
    assert energies.shape == (len(structure),)
    assert abs(energies.sum() - energy) < 1e-10
    if len(set(structure.numbers)) > 1:  # (the two Cu atoms of cu_cell are equivalent)
        assert np.ptp(energies) > 1e-3  # per-atom energies, not energy / N
    assert structure.get_potential_energy(force_consistent=True) == energy
    assert structure.calc.get_property("free_energy", structure) == energy
    assert energy == pytest.approx(expected[keys.ENERGY][0], abs=1e-12)
    np.testing.assert_allclose(energies, expected[keys.ATOMIC_ENERGIES], rtol=0, atol=1e-12)
    assert forces.shape == (len(structure), 3) and forces.dtype == np.float64
    assert np.abs(forces).max() > 0.1
    np.testing.assert_allclose(forces, expected[keys.FORCES], rtol=0, atol=1e-12)


def test_results_follow_moved_atoms(model, ethanol):
    ethanol.calc = EquipotCalculator(model)
    before = ethanol.get_potential_energy()
    ethanol.positions[0] += [0.05, 0.0, 0.0]
    after = ethanol.get_potential_energy()
    assert after != before
    assert after == pytest.approx(potential_outputs(model, ethanol)[keys.ENERGY][0], abs=1e-12)


def test_stress_of_molecule_is_not_implemented(model, ethanol):
    ethanol.calc = EquipotCalculator(model)
    with pytest.raises(PropertyNotImplementedError):
        ethanol.get_stress()


@pytest.mark.parametrize("structure", ["cu_cell", "cu_slab"], indirect=True)
def test_stress_of_periodic_cell(model, structure):
    structure.calc = EquipotCalculator(model)
    stress = structure.get_stress()
    assert stress.shape == (6,)
    assert np.abs(stress).max() > 1e-3
    # Voigt order xx, yy, zz, yz, xz, xy of the Potential's 3 × 3 stress
    full = potential_outputs(model, structure, stress=True)[keys.STRESS][0]
    np.testing.assert_allclose(stress, full[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]],
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(structure.get_stress(voigt=False), full, rtol=0, atol=1e-12)
    numerical = calculate_numerical_stress(structure, 1e-6)
    assert np.abs(stress - numerical).max() < 1e-6 * np.abs(numerical).max()


@pytest.mark.parametrize("element", [79, 7])
@pytest.mark.parametrize("structure", ["ethanol", "cu_cell"], indirect=True)
def test_unknown_element_is_named(model, structure, element):
    structure.numbers[0] = element
    structure.calc = EquipotCalculator(model)
    with pytest.raises(EquipotInputError) as error:
        structure.get_potential_energy()
    message = str(error.value)
    assert str(element) in message
    assert "unknown" in message.lower()


@pytest.mark.parametrize("pbc", [False, True])
def test_overlapping_atoms_are_an_input_error(model, pbc):
    atoms = Atoms("CO", positions=[[1.0, 1.0, 1.0], [1.0, 1.0, 1.05]], cell=np.eye(3) * 6.0,
                  pbc=pbc)
    atoms.calc = EquipotCalculator(model)
    with pytest.raises(EquipotInputError, match="overlap"):
        atoms.get_forces()


def test_model_file_path(model, model_config, tmp_path, cu_cell, ethanol):
    path = tmp_path / "model.pt"
    save_model(path, model)
    assert path.is_file()
    direct = EquipotCalculator(model)
    for from_file, tolerance in ((EquipotCalculator(path, dtype=torch.float64), 1e-10),
                                 (EquipotCalculator(str(path), dtype=torch.float64), 1e-10),
                                 (EquipotCalculator(path), 1e-4)):  # float32 by default
        for atoms in (ethanol, cu_cell):
            expected = direct.get_potential_energy(atoms)
            energy = from_file.get_potential_energy(atoms)
            assert abs(energy - expected) <= tolerance * max(1.0, abs(expected))
            np.testing.assert_allclose(from_file.get_forces(atoms), direct.get_forces(atoms),
                                       rtol=0, atol=tolerance * 100)


def test_velocity_verlet_runs(build_model, model_config, ethanol, tmp_path):
    """Every block drives ASE's MD through a model file, with no block-specific code."""
    # unscaled random weights: the shared model's random forces would tear ethanol apart
    save_model(tmp_path / "model.pt", build_model(model_config, weight_factor=1.0))
    ethanol.calc = EquipotCalculator(tmp_path / "model.pt", dtype=torch.float64)
    MaxwellBoltzmannDistribution(ethanol, temperature_K=300, rng=np.random.default_rng(0))
    start = ethanol.positions.copy()
    dynamics = VelocityVerlet(ethanol, timestep=0.25 * units.fs)
    potential, total = [], []
    dynamics.attach(lambda: (potential.append(ethanol.get_potential_energy()),
                             total.append(ethanol.get_total_energy())))
    dynamics.run(40)
    assert dynamics.nsteps == 40
    assert np.all(np.isfinite(ethanol.positions))
    assert np.abs(ethanol.positions - start).max() > 1e-2
    # Forces are −∇E: the total energy stays put while potential and kinetic energy trade.
    exchanged = np.ptp(potential)
    assert exchanged > 1e-4
    assert np.ptp(total) < 0.05 * exchanged
