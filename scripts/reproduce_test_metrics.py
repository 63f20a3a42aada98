"""Recompute a training run's test metrics with equipot.load + EquipotCalculator.

One structure at a time through ASE, as a user would, against the run's test_metrics.json:

    python scripts/reproduce_test_metrics.py runs/demo equipot/datasets/rmd17_ethanol/test.xyz
"""

import json
import sys
from pathlib import Path

import numpy as np

import equipot
from equipot.data.reading import read_structures


def main(run_dir: Path, test_file: Path) -> None:
    expected = json.loads((run_dir / "test_metrics.json").read_text())
    calculator = equipot.EquipotCalculator(equipot.load(run_dir / "model.pt"))
    energy_errors, force_errors, num_atoms = [], [], []
    for atoms in read_structures(test_file):
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = calculator
        energy_errors.append(atoms.get_potential_energy() - energy)
        force_errors.append((atoms.get_forces() - forces).ravel())
        num_atoms.append(len(atoms))
    energy_errors, force_errors = np.array(energy_errors), np.concatenate(force_errors)
    recomputed = {
        "energy_mae": np.abs(energy_errors).mean(),
        "energy_rmse": np.sqrt(np.square(energy_errors).mean()),
        "energy_per_atom_mae": np.abs(energy_errors / num_atoms).mean(),
        "energy_per_atom_rmse": np.sqrt(np.square(energy_errors / num_atoms).mean()),
        "forces_mae": np.abs(force_errors).mean(),
        "forces_rmse": np.sqrt(np.square(force_errors).mean()),
    }
    print(f"{'metric':<22}{'training run':>16}{'calculator':>16}{'rel. diff':>12}")
    for name, value in recomputed.items():
        difference = abs(value - expected[name]) / abs(expected[name])
        print(f"{name:<22}{expected[name]:>16.10f}{value:>16.10f}{difference:>12.1e}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
