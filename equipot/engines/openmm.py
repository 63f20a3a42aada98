"""OpenMM with equipot forces: the ``equipot`` potential of OpenMM-ML.

equipot registers this module's factory under the ``openmmml.potentials`` entry point, so

    from openmmml import MLPotential
    potential = MLPotential("equipot", modelPath="runs/x/model.pt")
    system = potential.createSystem(topology)                   # all atoms by the model
    mixed = potential.createMixedSystem(topology, mm_system, ml_atoms)   # ML/MM

work with any topology whose atoms have elements, periodic (its box vectors) or not. The model
runs through an ``EquipotCalculator`` inside an ``openmm.PythonForce``; OpenMM's units are
converted (kJ/mol and nm against eV and Å). Options of ``createSystem``: ``precision``
("single", "double"; default the model file's dtype), ``device``, ``charge`` (e, the total
charge of the atoms the model sees), ``skin`` and ``compile`` (as for the calculator).
"""

from __future__ import annotations

from collections.abc import Iterable

import ase
import numpy as np
import openmm
from ase import units
from openmm import unit
from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory

from equipot.calculator import SKIN, EquipotCalculator
from equipot.model.build import DTYPES

KJ_PER_MOL = 1.0 / (units.kJ / units.mol)  # kJ/mol per eV
PRECISIONS = {"single": "float32", "double": "float64"}


class EquipotForce:
    """``openmm.PythonForce``'s computation: the state's positions (and box) → the model's
    energy (kJ/mol) and forces (kJ/mol/nm) of its atoms. Pickled as its settings (the model is
    loaded again from its file)."""

    def __init__(self, model_path: str, numbers: list[int], periodic: bool, charge: float = 0.0,
                 precision: str | None = None, device: str = "cpu", skin: float = SKIN,
                 compile: bool = False):
        if precision is not None and precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.settings = dict(model_path=model_path, numbers=list(numbers), periodic=periodic,
                             charge=charge, precision=precision, device=device, skin=skin,
                             compile=compile)
        dtype = DTYPES[PRECISIONS[precision]] if precision else None
        self.calculator = EquipotCalculator(model_path, device=device, dtype=dtype, skin=skin,
                                            compile=compile)
        self.atoms = ase.Atoms(numbers=numbers, pbc=periodic, info={"charge": charge})

    def __call__(self, state: openmm.State) -> tuple[float, np.ndarray]:
        atoms = self.atoms
        atoms.positions = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
        if atoms.pbc.any():
            atoms.cell = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.angstrom)
        self.calculator.calculate(atoms, ["energy", "forces"])
        results = self.calculator.results
        return results["energy"] * KJ_PER_MOL, results["forces"] * (10.0 * KJ_PER_MOL)

    def __getstate__(self) -> dict:
        return self.settings

    def __setstate__(self, settings: dict) -> None:
        self.__init__(**settings)


class EquipotPotentialImpl(MLPotentialImpl):
    """Adds one ``PythonForce`` of ``EquipotForce`` for the atoms the model covers."""

    def __init__(self, name: str, model_path: str | None):
        if model_path is None:
            raise ValueError(f"MLPotential('{name}') needs modelPath=, an equipot model file")
        self.name, self.model_path = name, str(model_path)

    def addForces(self, topology: openmm.app.Topology, system: openmm.System,
                  atoms: Iterable[int] | None, forceGroup: int, charge: float = 0.0,
                  precision: str | None = None, device: str = "cpu", skin: float = SKIN,
                  compile: bool = False, **args) -> None:
        included = list(topology.atoms())
        if atoms is not None:
            atoms = list(atoms)
            included = [included[index] for index in atoms]
        if any(atom.element is None for atom in included):
            raise ValueError("every atom the equipot model covers needs an element in the "
                             "Topology")
        periodic = topology.getPeriodicBoxVectors() is not None
        force = openmm.PythonForce(EquipotForce(
            self.model_path, [atom.element.atomic_number for atom in included], periodic,
            charge, precision, device, skin, compile))
        force.setForceGroup(forceGroup)
        force.setUsesPeriodicBoundaryConditions(periodic)
        if atoms is not None:
            force.setParticles(atoms)
        system.addForce(force)


class EquipotPotentialImplFactory(MLPotentialImplFactory):
    """OpenMM-ML's entry point: ``MLPotential("equipot", modelPath=…)``."""

    def createImpl(self, name: str, modelPath: str | None = None, **args) -> MLPotentialImpl:
        return EquipotPotentialImpl(name, modelPath)
