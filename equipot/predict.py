"""Predictions for many structures at once, without labels: what ``EquipotCalculator`` gives
for each, computed in batches of structures (``equipot-predict`` writes them to a file).

A batch collects whole structures, in input order, until it holds ``batch_size`` atoms (a
larger structure makes a batch of its own), so that every batch costs about the same time and
memory whatever the sizes of the structures. Float32 models round a batch's sums differently
from one structure's (relative differences of order 1e-7).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import ase
import numpy as np
import torch
from tqdm import tqdm

from equipot import keys
from equipot.analysis.evaluation import check_finite
from equipot.calculator import ase_results
from equipot.data.dataset import GraphDataset
from equipot.data.reading import MIN_VOLUME, LabelKeys
from equipot.errors import EquipotInputError
from equipot.heap import keep_freed_memory
from equipot.model.ensemble import Ensemble
from equipot.model.exported import ExportedPotential
from equipot.model.potential import Potential

BATCH_ATOMS = 4096  # default atoms per batch


def predict(model: Potential | Ensemble, structures: Sequence[ase.Atoms],
            batch_size: int = BATCH_ATOMS, source: str = "<structures>",
            progress: bool = False) -> list[dict[str, float | np.ndarray]]:
    """The calculator's results of every structure (energy, free_energy, energies, forces;
    stress for periodic cells with a volume; charges, dipole and uncertainties where the model
    predicts them), in input order. ``batch_size``: atoms per batch; ``source`` names the
    structures in errors (bad geometry, unknown elements, non-finite predictions, each with
    the structure's index)."""
    if batch_size < 1:
        raise ValueError(f"batch_size is a number of atoms ≥ 1, got {batch_size}")
    if isinstance(model, ExportedPotential):
        raise EquipotInputError("an exported model takes one structure per call; predict in "
                                "batches with the model file it was exported from",
                                str(model.path))
    for index, atoms in enumerate(structures):
        model.check_species(atoms.numbers, source, index)
    dataset = GraphDataset.from_atoms(list(structures), model.cutoff, LabelKeys.only(), source)
    wants_stress = [bool(atoms.pbc.any()) and abs(atoms.cell.volume) >= MIN_VOLUME
                    for atoms in structures]
    device = next(model.parameters()).device
    model.eval()
    keep_freed_memory()  # batches of similar size reuse their pages (equipot.heap)
    results: list[dict] = []
    with tqdm(total=len(dataset), desc="predict", unit="structure", disable=not progress) as bar:
        for indices in batches_by_atoms(dataset.tensors[keys.NUM_ATOMS].tolist(), batch_size):
            batch = dataset.consecutive(indices[0], indices[-1] + 1).to(device)
            out = model(batch, compute_forces=True,
                        compute_stress=any(wants_stress[index] for index in indices))
            check_finite(out, batch, source, indices[0])
            atoms = (dataset.atom_ptr[indices[0]:indices[-1] + 2] - dataset.atom_ptr[indices[0]])
            results += [ase_results(one, wants_stress[index], not structures[index].pbc.any())
                        for index, one in zip(indices, split_structures(out, atoms.tolist()))]
            bar.update(len(indices))
    return results


def batches_by_atoms(num_atoms: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Consecutive structure indices, in batches of at most ``batch_size`` atoms (one
    structure alone where it is larger)."""
    batch, atoms = [], 0
    for index, count in enumerate(num_atoms):
        if batch and atoms + count > batch_size:
            yield batch
            batch, atoms = [], 0
        batch.append(index)
        atoms += count
    if batch:
        yield batch


def split_structures(out: dict[str, torch.Tensor], atoms: list[int]
                     ) -> Iterator[dict[str, torch.Tensor]]:
    """A batch's outputs, one structure at a time: per-atom fields sliced by its atoms
    (structure k's are ``atoms[k]`` … ``atoms[k + 1]`` − 1), per-structure fields as a batch
    of one."""
    for structure in range(len(atoms) - 1):
        items = {keys.ATOM: slice(atoms[structure], atoms[structure + 1]),
                 keys.STRUCTURE: slice(structure, structure + 1)}
        yield {name: value[items[keys.FIELDS[name].per]] for name, value in out.items()}
