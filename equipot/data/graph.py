"""One structure → one graph: atoms, cell, periodicity, radial-cutoff edges and labels."""

from __future__ import annotations

import ase
import numpy as np
import torch
from torch_geometric.data import Data

from equipot import keys
from equipot.data.reading import read_total_charge
from equipot.errors import EquipotInputError
from equipot.neighbors import neighbor_list

MIN_DISTANCE = 0.1  # Å; closer atoms are an input error, not physics


def atoms_to_graph(atoms: ase.Atoms, cutoff: float,
                   labels: dict[str, np.ndarray | None] | None = None, source: str = "<atoms>",
                   index: int | None = None, weight: float | None = None) -> Data:
    """The graph of ``atoms`` with every pair closer than ``cutoff`` (Å) as two edges.

    Floating-point fields are float64; the model casts them to its own dtype. ``labels`` maps
    label names (``keys.labels()``) to validated arrays, or to None where the structure lacks
    one (see ``read_labels``): each label comes with its ``has`` flag, and a missing one is
    stored as zeros. ``weight``: the structure's
    loss weight (``keys.WEIGHT``), for datasets. The total charge comes from
    ``atoms.info["charge"]`` (default 0).
    """
    geometry = positions, cell, pbc = checked_geometry(atoms, source, index)
    centre, neighbour, shifts = neighbor_list(positions, cell, pbc, cutoff)
    vectors = positions[neighbour] - positions[centre] + shifts @ cell
    check_overlaps(centre, neighbour, vectors, source, index)
    fields = structure_fields(atoms, geometry, centre, neighbour, shifts, source, index)
    for name, value in (labels or {}).items():
        label = keys.label(name)
        fields[label.has] = torch.tensor([value is not None])
        value = torch.as_tensor(missing_label(name, len(atoms)) if value is None else value,
                                dtype=torch.float64)
        fields[name] = value if label.per == keys.ATOM else value.unsqueeze(0)
    if weight is not None:
        fields[keys.WEIGHT] = torch.tensor([float(weight)], dtype=torch.float64)
    return Data(**fields)


def checked_geometry(atoms: ase.Atoms, source: str = "<atoms>", index: int | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions [N, 3], cell [3, 3], pbc [3]) of ``atoms`` as float64/bool arrays, with an
    ``EquipotInputError`` for NaN or inf, or degenerate periodic lattice vectors."""
    positions = np.asarray(atoms.positions, dtype=np.float64)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    if not np.all(np.isfinite(positions)):
        raise EquipotInputError("contains NaN or inf", source, index, "positions")
    if not np.all(np.isfinite(cell[pbc])):
        raise EquipotInputError("contains NaN or inf", source, index, "cell")
    if pbc.any() and np.linalg.matrix_rank(cell[pbc]) < pbc.sum():
        raise EquipotInputError("periodic lattice vectors are degenerate", source, index, "cell")
    return positions, cell, pbc


def check_overlaps(centre: np.ndarray, neighbour: np.ndarray, vectors: np.ndarray,
                   source: str = "<atoms>", index: int | None = None) -> None:
    """An ``EquipotInputError`` naming the pair if an edge (vectors [E, 3], Å) is shorter than
    ``MIN_DISTANCE``."""
    squared = np.einsum("ij,ij->i", vectors, vectors)
    if squared.size and squared.min() < MIN_DISTANCE ** 2:
        edge = int(squared.argmin())
        raise EquipotInputError(
            f"atoms {centre[edge]} and {neighbour[edge]} overlap: distance "
            f"{np.sqrt(squared[edge]):.3g} Å < {MIN_DISTANCE} Å", source, index, "positions")


def structure_fields(atoms: ase.Atoms, geometry: tuple[np.ndarray, np.ndarray, np.ndarray],
                     centre: np.ndarray, neighbour: np.ndarray, shifts: np.ndarray,
                     source: str = "<atoms>", index: int | None = None
                     ) -> dict[str, torch.Tensor]:
    """The label-free fields of one structure's graph: what a model reads. ``geometry`` is
    ``checked_geometry(atoms)``'s (positions, cell, pbc); the edges are centre, neighbour [E]
    and integer image shifts [E, 3]."""
    positions, cell, pbc = geometry
    return {
        keys.ATOMIC_NUMBERS: torch.as_tensor(atoms.numbers, dtype=torch.long),
        keys.POSITIONS: torch.as_tensor(positions),
        keys.CELL: torch.as_tensor(cell).unsqueeze(0),
        keys.PBC: torch.as_tensor(pbc).unsqueeze(0),
        keys.EDGE_INDEX: torch.as_tensor(np.stack([centre, neighbour])),
        keys.SHIFTS: torch.as_tensor(shifts, dtype=torch.float64),
        keys.TOTAL_CHARGE: torch.tensor([read_total_charge(atoms, source, index)],
                                        dtype=torch.float64),
    }


def missing_label(name: str, num_atoms: int) -> np.ndarray:
    """The zeros that stand in for label ``name`` of a structure of ``num_atoms`` lacking it."""
    label = keys.label(name)
    return np.zeros((num_atoms, *label.shape) if label.per == keys.ATOM else label.shape)


def atoms_per_structure(batch) -> torch.Tensor:
    """[G] int64 number of atoms of each structure in a torch_geometric batch."""
    return torch.bincount(batch[keys.BATCH], minlength=batch.num_graphs)


def per_item(batch, name: str, values: torch.Tensor) -> torch.Tensor:
    """``values`` [G] of each structure in a batch, one per item of field ``name``: [G], or
    [N] (each atom its structure's) for a per-atom field."""
    return values[batch[keys.BATCH]] if keys.FIELDS[name].per == keys.ATOM else values


def label_mask(batch, name: str) -> torch.Tensor:
    """[items] bool: which items of label ``name`` in a batch (its structures, or its atoms
    for a per-atom label) belong to structures that have the label."""
    return per_item(batch, name, batch[keys.label(name).has])


def per_atom(batch, values: torch.Tensor) -> torch.Tensor:
    """``values`` [G, …] of each structure divided by its number of atoms."""
    return values / atoms_per_structure(batch).view(-1, *(1,) * (values.dim() - 1))


def single_structure_batch(fields: dict[str, torch.Tensor]) -> keys.GraphFields:
    """The batch of the one structure whose graph ``fields`` are, built directly: the fields
    of ``Batch.from_data_list([Data(**fields)])``, without its collation (~1 ms)."""
    return keys.GraphFields(fields, **{keys.BATCH: torch.zeros(len(fields[keys.ATOMIC_NUMBERS]),
                                                          dtype=torch.long)})
