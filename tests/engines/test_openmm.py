"""OpenMM with equipot forces (``MLPotential("equipot", modelPath=…)``, registered by entry
point): forces equal the calculator's after unit conversion, on a molecule and in a periodic
box; Verlet steps conserve energy; a mixed ML/MM system runs with the model's energy on its ML
atoms."""

import numpy as np
import openmm
import pytest
from ase.build import bulk, molecule
from openmm import app, unit
from openmmml import MLPotential

from equipot import EquipotCalculator
from equipot.engines.openmm import KJ_PER_MOL
from equipot.model.checkpoint import save_model

from conftest import MODEL_CONFIG, make_ethanol, make_model

EV_PER_ANGSTROM = 10.0 * KJ_PER_MOL  # kJ/mol/nm per eV/Å


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A float64 model of H, C, O, Cu (random weights, forces of order 1 eV/Å; ZBL keeps
    atoms apart) in a file."""
    path = tmp_path_factory.mktemp("openmm") / "model.pt"
    save_model(path, make_model({**MODEL_CONFIG, "energy_terms": [{"name": "zbl"}]}),
               {"dtype": "float64"})
    return path


def topology_of(atoms) -> app.Topology:
    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    for index, number in enumerate(atoms.numbers):
        topology.addAtom(f"X{index}", app.Element.getByAtomicNumber(int(number)), residue)
    if atoms.pbc.all():
        topology.setPeriodicBoxVectors([openmm.Vec3(*row) for row in atoms.cell.array * 0.1]
                                       * unit.nanometer)
    return topology


def two_ethanols_in_a_box():
    first, second = make_ethanol(1), make_ethanol(2)
    second.rotate(90, "x")
    first.translate([2.5, 2.5, 2.5] - first.positions.mean(0))
    second.translate([6.5, 6.5, 6.0] - second.positions.mean(0))
    box = first + second
    box.cell, box.pbc = [9.0, 9.0, 9.0], True
    return box


def context(system, atoms, platform="Reference"):
    simulation = openmm.Context(system, openmm.VerletIntegrator(0.5 * unit.femtosecond),
                                openmm.Platform.getPlatformByName(platform))
    simulation.setPositions(atoms.positions * 0.1 * unit.nanometer)
    return simulation


@pytest.mark.parametrize("structure", ["molecule", "periodic box"])
def test_forces_are_the_calculators(model_file, structure):
    atoms = make_ethanol() if structure == "molecule" else two_ethanols_in_a_box()
    system = MLPotential("equipot", modelPath=str(model_file)).createSystem(topology_of(atoms))
    state = context(system, atoms).getState(getEnergy=True, getForces=True)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    atoms.calc = EquipotCalculator(model_file)
    expected = atoms.get_forces()
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(forces / EV_PER_ANGSTROM, expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())
    assert energy / KJ_PER_MOL == pytest.approx(atoms.get_potential_energy(), rel=1e-10)


def test_verlet_steps_conserve_energy(tmp_path):
    """1 000 steps of 1 fs from 300 K in a periodic 8-atom Cu cell, with a random model
    (unscaled weights: forces that move the atoms without heating them up) and ZBL."""
    path = tmp_path / "copper.pt"
    save_model(path, make_model({**MODEL_CONFIG, "energy_terms": [{"name": "zbl"}]},
                                weight_factor=1.0), {"dtype": "float64"})
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((1, 1, 2))
    atoms.rattle(0.05, seed=1)
    system = MLPotential("equipot", modelPath=str(path)).createSystem(topology_of(atoms))
    simulation = openmm.Context(system, openmm.VerletIntegrator(1 * unit.femtosecond),
                                openmm.Platform.getPlatformByName("Reference"))
    simulation.setPositions(atoms.positions * 0.1 * unit.nanometer)
    simulation.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    potential, total = [], []
    for _ in range(100):
        simulation.getIntegrator().step(10)
        state = simulation.getState(getEnergy=True)
        potential.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        total.append(potential[-1] + state.getKineticEnergy().value_in_unit(
            unit.kilojoule_per_mole))
    spread = np.ptp(total) / KJ_PER_MOL / len(atoms)  # eV/atom
    assert spread < 5e-3
    assert np.ptp(potential) / KJ_PER_MOL / len(atoms) > 10 * spread  # the atoms do move


def waters(count: int):
    """``count`` water molecules on a 3.1 Å grid, as ASE atoms and an OpenMM topology with
    TIP3P's residue and atom names and bonds."""
    atoms = molecule("H2O")[:0]
    topology = app.Topology()
    chain = topology.addChain()
    for index in range(count):
        water = molecule("H2O")  # O, H, H
        water.translate([3.1 * (index % 2), 3.1 * (index // 2 % 2), 3.1 * (index // 4)])
        atoms += water
        residue = topology.addResidue("HOH", chain)
        oxygen = topology.addAtom("O", app.element.oxygen, residue)
        for name in ("H1", "H2"):
            topology.addBond(oxygen, topology.addAtom(name, app.element.hydrogen, residue))
    return atoms, topology


def test_a_mixed_ml_mm_system_runs_with_the_models_energy_on_its_atoms(model_file):
    atoms, topology = waters(8)
    mm_system = app.ForceField("amber14/tip3p.xml").createSystem(
        topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
    potential = MLPotential("equipot", modelPath=str(model_file))
    mixed = potential.createMixedSystem(topology, mm_system, [0, 1, 2], forceGroup=1)
    simulation = context(mixed, atoms)
    ml_energy = simulation.getState(getEnergy=True, groups={1}).getPotentialEnergy()
    first_water = atoms[:3]
    first_water.calc = EquipotCalculator(model_file)
    assert ml_energy.value_in_unit(unit.kilojoule_per_mole) / KJ_PER_MOL == pytest.approx(
        first_water.get_potential_energy(), rel=1e-10)
    simulation.getIntegrator().step(20)
    state = simulation.getState(getEnergy=True, getPositions=True)
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    moved = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom) - atoms.positions
    assert np.abs(moved).max() > 1e-4
