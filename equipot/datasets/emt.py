"""Synthetic reference data: fcc Cu cells labelled by ASE's EMT, an exact and cheap oracle.

For tests, examples and benchmarks that need periodic structures with energies, forces and
stress that any reader can regenerate (EMT: Jacobsen, Stoltze, Nørskov 1996, as in ASE).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator


def emt_copper(count: int, seed: int, repeat: int = 1, rattle: float = 0.08,
               strain: float = 0.03) -> list[Atoms]:
    """``count`` fcc Cu cells of 4 × repeat³ atoms (a = 3.6 Å), isotropically strained by up
    to ±``strain`` and rattled by ``rattle`` Å (Gaussian), with EMT energy (eV), forces (eV/Å)
    and stress (eV/Å³) attached as results of a SinglePointCalculator."""
    rng = np.random.default_rng(seed)
    structures = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
        atoms.set_cell(atoms.cell * (1 + rng.uniform(-strain, strain)), scale_atoms=True)
        atoms.rattle(rattle, seed=int(rng.integers(1 << 30)))
        structures.append(label_with_emt(atoms))
    return structures


def label_with_emt(atoms: Atoms) -> Atoms:
    """A copy of ``atoms`` with EMT energy (eV), forces (eV/Å) and, for a periodic cell,
    stress (eV/Å³) attached as results of a SinglePointCalculator."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    labels = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        labels["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **labels)
    return atoms
