"""Training-set statistics that fix the model's energy scale, computed once, stored in its config.

- reference energies E0(z): per-element energies from isolated-atom calculations or, without
  them, the least-squares fit of total energies to element counts;
- shift: mean per-atom energy left after E0, added to every atom's energy;
- scale: RMS force component (or std of per-atom energies without forces), multiplying the
  network's output so it learns numbers of order one;
- average number of neighbours: normalises message sums so depth and density don't blow them up;
- shortest distances: per element pair, the closest approach in the training set (Å), the
  edge of the data that the short-range check (``equipot.analysis.short_range``) tests below.

Energy terms that are fixed functions of the structure (``fixed = True``, e.g. the ZBL prior)
are subtracted from the labels first: E0, shift and scale describe what the network must learn.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch_geometric.loader import DataLoader

from equipot import keys
from equipot.data.dataset import GraphDataset
from equipot.errors import EquipotInputError
from equipot.model.build import build_fixed_terms, listed_energy_terms
from equipot.nn.geometry import edge_vectors
from equipot.physics.registry import ENERGY_TERMS

PRIOR_BATCH_SIZE = 64  # structures per batch when evaluating fixed energy terms


def element_counts(dataset: GraphDataset, species: list[int]) -> np.ndarray:
    """[structures, species] number of atoms of each element in each structure."""
    z = dataset.tensors[keys.ATOMIC_NUMBERS]
    structure = torch.repeat_interleave(torch.arange(len(dataset)), dataset.tensors[keys.NUM_ATOMS])
    column = torch.searchsorted(torch.tensor(species), z)
    counts = torch.zeros(len(dataset), len(species), dtype=torch.float64)
    counts.index_put_((structure, column), torch.ones_like(z, dtype=torch.float64), accumulate=True)
    return counts.numpy()


def shortest_distances(dataset: GraphDataset, species: list[int]) -> list[list[float | None]]:
    """[S][S] shortest distance (Å) between atoms of each pair of ``species`` over all
    structures, None for pairs never closer than the cutoff."""
    tensors = dataset.tensors
    edge_structure = torch.repeat_interleave(torch.arange(len(dataset)), tensors[keys.NUM_EDGES])
    centre, neighbour = tensors[keys.EDGE_INDEX] + dataset.atom_ptr[edge_structure]
    vectors = edge_vectors(tensors[keys.POSITIONS], centre, neighbour, tensors[keys.SHIFTS],
                           tensors[keys.CELL][edge_structure])
    column = torch.searchsorted(torch.tensor(species), tensors[keys.ATOMIC_NUMBERS])
    pair = column[centre] * len(species) + column[neighbour]
    shortest = torch.full((len(species) ** 2,), torch.inf, dtype=vectors.dtype).scatter_reduce(
        0, pair, torch.linalg.vector_norm(vectors, dim=-1), "amin")
    return [[float(r) if np.isfinite(r) else None for r in row]
            for row in shortest.view(len(species), len(species)).tolist()]


def fixed_term_labels(dataset: GraphDataset, species: list[int], model_config: Mapping
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Energies [G] (eV) and forces [N, 3] (eV/Å) of the fixed energy terms named in
    ``model_config`` on every structure of ``dataset`` (zeros without such terms).

    They come from a Potential of those terms alone (``build_fixed_terms``), so the numbers
    are exactly those the trained model adds.
    """
    terms = listed_energy_terms(model_config.get("energy_terms"))
    if not any(ENERGY_TERMS[term["name"]].fixed for term in terms):
        return np.zeros(len(dataset)), np.zeros((len(dataset.tensors[keys.ATOMIC_NUMBERS]), 3))
    prior = build_fixed_terms({**model_config, "species": species}).eval()
    outputs = [prior(batch, compute_forces=True)
               for batch in DataLoader(dataset, batch_size=PRIOR_BATCH_SIZE, shuffle=False)]
    return (np.concatenate([out[keys.ENERGY].numpy() for out in outputs]),
            np.concatenate([out[keys.FORCES].numpy() for out in outputs]))


def compute_statistics(dataset: GraphDataset, isolated_atoms: dict[int, float] | None = None,
                       model_config: Mapping | None = None) -> dict:
    """Species and energy statistics of a training set, as plain numbers for a model config.

    ``model_config`` (its architecture part suffices) names the energy terms; the fixed ones
    are subtracted from energy and force labels before anything is fitted.
    """
    species = sorted(int(z) for z in dataset.tensors[keys.ATOMIC_NUMBERS].unique())
    counts = element_counts(dataset, species)
    num_atoms = counts.sum(axis=1)
    prior_energies, prior_forces = fixed_term_labels(dataset, species, model_config or {})
    energies = forces = None
    if keys.ENERGY in dataset.fields:  # structures with an energy label
        has_energy = dataset.tensors[keys.label(keys.ENERGY).has].numpy()
        energies = (dataset.tensors[keys.ENERGY].numpy() - prior_energies)[has_energy]
        counts, num_atoms = counts[has_energy], num_atoms[has_energy]
    if keys.FORCES in dataset.fields:  # atoms of structures with a force label
        has_forces = dataset.tensors[keys.label(keys.FORCES).has].repeat_interleave(
            dataset.tensors[keys.NUM_ATOMS]).numpy()
        forces = (dataset.tensors[keys.FORCES].numpy() - prior_forces)[has_forces]

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
    if forces is not None:
        scale = float(np.sqrt(np.square(forces).mean()))
    else:
        scale = spread
    return {
        "species": species,
        "reference_energies": [float(e) for e in reference],
        "shift": shift,
        "scale": scale if scale > 1e-8 else 1.0,
        "avg_num_neighbors": float(dataset.tensors[keys.NUM_EDGES].sum())
                             / float(dataset.tensors[keys.NUM_ATOMS].sum()),
        "shortest_distances": shortest_distances(dataset, species),
    }
