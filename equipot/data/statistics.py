"""Training-set statistics that fix the model's energy scale, computed once, stored in its config.

- reference energies E0(z): per-element energies from isolated-atom calculations or, without
  them, the least-squares fit of total energies to element counts;
- shift: mean per-atom energy left after E0, added to every atom's energy;
- scale: RMS force component (or std of per-atom energies without forces), multiplying the
  network's output so it learns numbers of order one;
- average number of neighbours: normalises message sums so depth and density don't blow them up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from equipot import keys
from equipot.data.dataset import GraphDataset
from equipot.data.reading import LabelKeys, read_labels, read_structures
from equipot.errors import EquipotInputError


def isolated_atom_energies(path: str | Path, energy_key: str = "energy") -> dict[int, float]:
    """Energies (eV) of single-atom structures in ``path``, by atomic number."""
    structures = read_structures(path)
    for index, atoms in enumerate(structures):
        if len(atoms) != 1:
            raise EquipotInputError(f"expected one atom, found {len(atoms)}", path, index,
                                    keys.ATOMIC_NUMBERS)
    labels = read_labels(structures, LabelKeys(energy=energy_key, forces=None, stress=None),
                         str(path))
    return {int(atoms.numbers[0]): float(energy)
            for atoms, energy in zip(structures, labels[keys.ENERGY])}


def element_counts(dataset: GraphDataset, species: list[int]) -> np.ndarray:
    """[structures, species] number of atoms of each element in each structure."""
    z = dataset.tensors[keys.ATOMIC_NUMBERS]
    structure = torch.repeat_interleave(torch.arange(len(dataset)), dataset.tensors[keys.NUM_ATOMS])
    column = torch.searchsorted(torch.tensor(species), z)
    counts = torch.zeros(len(dataset), len(species), dtype=torch.float64)
    counts.index_put_((structure, column), torch.ones_like(z, dtype=torch.float64), accumulate=True)
    return counts.numpy()


def compute_statistics(dataset: GraphDataset, isolated_atoms: dict[int, float] | None = None
                       ) -> dict:
    """Species and energy statistics of a training set, as plain numbers for a model config."""
    species = sorted(int(z) for z in dataset.tensors[keys.ATOMIC_NUMBERS].unique())
    counts = element_counts(dataset, species)
    num_atoms = counts.sum(axis=1)
    energies = dataset.tensors[keys.ENERGY].numpy() if keys.ENERGY in dataset.fields else None

    if isolated_atoms is not None:
        missing = [z for z in species if z not in isolated_atoms]
        if missing:
            raise EquipotInputError(f"no isolated-atom energy for atomic numbers {missing}",
                                    field="isolated_atoms")
        reference = np.array([isolated_atoms[z] for z in species])
    elif energies is not None:
        reference = np.linalg.lstsq(counts, energies, rcond=None)[0]
    else:
        reference = np.zeros(len(species))

    if energies is not None:
        per_atom = (energies - counts @ reference) / num_atoms
        shift = float(per_atom.mean())
        spread = float(per_atom.std())
    else:
        shift, spread = 0.0, 1.0
    if keys.FORCES in dataset.fields:
        scale = float(dataset.tensors[keys.FORCES].square().mean().sqrt())
    else:
        scale = spread
    return {
        "species": species,
        "reference_energies": [float(e) for e in reference],
        "shift": shift,
        "scale": scale if scale > 1e-8 else 1.0,
        "avg_num_neighbors": float(dataset.tensors[keys.NUM_EDGES].sum()) / float(num_atoms.sum()),
    }
