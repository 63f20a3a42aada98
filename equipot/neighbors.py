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
    and every periodic image within the cutoff, also of an atom with itself.
    """
    pbc = np.asarray(pbc, dtype=bool)
    # Cell vectors of non-periodic directions are meaningless (a dummy box, or zero); vesin
    # ignores them, zeroing them keeps their values out of its search entirely.
    box = np.where(pbc[:, None], np.asarray(cell, dtype=np.float64), 0.0)
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    centre, neighbour, shifts = calculator.compute(
        np.asarray(positions, dtype=np.float64), box, pbc, quantities="ijS")
    return centre.astype(np.int64), neighbour.astype(np.int64), shifts.astype(np.int64)
