"""Radial-cutoff neighbour lists (vesin), with periodic images as integer cell shifts.

Periodicity is taken per lattice vector from ``pbc``; the cell vectors of non-periodic
directions are never used, so slabs and wires need no fake vacuum cell.
"""

from __future__ import annotations

import numpy as np
import vesin


def neighbor_list(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i, j, S) with |pos[j] - pos[i] + S @ cell| < cutoff, i ≠ j or S ≠ 0.

    positions [N, 3] Å, cell [3, 3] Å (rows are lattice vectors), pbc [3] bool.
    Returns centre indices i [E] and neighbour indices j [E] (int64), and shifts S [E, 3]
    (int64, zero along non-periodic directions). Both directions of each pair are listed,
    and every periodic image within the cutoff, also of an atom with itself, sorted by i, then
    j, then S: the same positions give the same list in the same order however it was found,
    so sums over edges, and a model's results, are reproducible to the bit.
    """
    pbc = np.asarray(pbc, dtype=bool)
    # Cell vectors of non-periodic directions are meaningless (a dummy box, or zero); vesin
    # ignores them, zeroing them keeps their values out of its search entirely.
    box = np.where(pbc[:, None], np.asarray(cell, dtype=np.float64), 0.0)
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    centre, neighbour, shifts = calculator.compute(
        np.asarray(positions, dtype=np.float64), box, pbc, quantities="ijS")
    order = np.lexsort((*shifts.T[::-1], neighbour, centre))
    return (centre[order].astype(np.int64), neighbour[order].astype(np.int64),
            shifts[order].astype(np.int64))


class SkinNeighborList:
    """The pairs within ``cutoff`` of a structure that moves a little between calls (MD,
    relaxations): a list of the pairs within ``cutoff + skin`` (Å) is kept and searched again
    only when it could miss a pair (Verlet, Phys. Rev. 159, 98 (1967)); each call filters it to
    the pairs within ``cutoff``, so the result equals ``neighbor_list``'s, in the same order.

    When is the old list still complete? Let r₀, h₀ be the positions and cell it was built from,
    h the cell now and M = h₀⁻¹h the strain (rows are lattice vectors; M = 1 without a cell
    change). Each atom's position now is r₀h₀⁻¹h + n·h + δ: its old position carried along by
    the strain, n an integer lattice translation (a wrap into the cell, or a crossing of its
    boundary) and δ the rest. An image pair that was farther than cutoff + skin apart is now at
    least (cutoff + skin)·σ_min(M) − 2 max|δ| apart, σ_min the smallest singular value of M;
    the list is kept while that is ≥ cutoff: without a cell change, while no atom has moved more
    than skin / 2 (up to lattice translations). A kept pair's image shift becomes S + n_i − n_j,
    so wrapped positions need no new search. A change of atoms, periodicity, or (for slabs and
    wires) cell searches again.
    """

    def __init__(self, cutoff: float, skin: float):
        if skin < 0:
            raise ValueError(f"skin must be ≥ 0 Å, not {skin}")
        self.cutoff, self.skin = float(cutoff), float(skin)
        self.searches = 0  # how many times the list was built: for tests and benchmarks
        self._reference = None  # positions, cell, pbc it was built from
        self._pairs = None  # centre, neighbour, shifts within cutoff + skin

    def update(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(centre [E], neighbour [E], shifts [E, 3], vectors [E, 3] Å) of the pairs within
        ``cutoff`` now, as ``neighbor_list`` gives them (vectors: pos[j] − pos[i] + S·cell)."""
        positions = np.asarray(positions, dtype=np.float64)
        pbc = np.asarray(pbc, dtype=bool)
        cell = np.where(pbc[:, None], np.asarray(cell, dtype=np.float64), 0.0)
        translations = self._translations(positions, cell, pbc)
        if translations is None:
            self._pairs = neighbor_list(positions, cell, pbc, self.cutoff + self.skin)
            self._reference = (positions.copy(), cell.copy(), pbc.copy())
            self.searches += 1
            translations = np.zeros((len(positions), 3), dtype=np.int64)
        centre, neighbour, shifts = self._pairs
        shifts = shifts + translations[centre] - translations[neighbour]
        vectors = positions[neighbour] - positions[centre] + shifts @ cell
        inside = np.einsum("ij,ij->i", vectors, vectors) < self.cutoff ** 2
        return centre[inside], neighbour[inside], shifts[inside], vectors[inside]

    def _translations(self, positions, cell, pbc) -> np.ndarray | None:
        """n [N, 3] (int64) of the class docstring where the old list is still complete,
        otherwise None."""
        if self._reference is None:
            return None
        old_positions, old_cell, old_pbc = self._reference
        if len(positions) != len(old_positions) or not np.array_equal(pbc, old_pbc):
            return None
        strain_bound = 1.0
        if not np.array_equal(cell, old_cell):
            if not pbc.all():
                return None
            strain = np.linalg.solve(old_cell, cell)  # M = h₀⁻¹ h
            old_positions = old_positions @ strain
            strain_bound = float(np.linalg.svd(strain, compute_uv=False).min())
        moved = positions - old_positions
        translations = np.zeros((len(positions), 3), dtype=np.int64)
        if pbc.any():
            lattice = cell[pbc]  # [P, 3]
            fractions = moved @ np.linalg.pinv(lattice)  # [N, P]
            translations[:, pbc] = np.rint(fractions).astype(np.int64)
            moved = moved - translations[:, pbc] @ lattice
        largest = float(np.sqrt(np.einsum("ij,ij->i", moved, moved).max(initial=0.0)))
        if (self.cutoff + self.skin) * strain_bound - 2 * largest < self.cutoff:
            return None
        return translations
