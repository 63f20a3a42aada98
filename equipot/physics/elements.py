"""Element data and pair distances shared by the physics terms, the network floor, the
dimer-repulsion penalty and the short-range report.

The short-range threshold r_min of an element pair is the distance below which its dimer must
repel: the pair's shortest distance in the training set (``shortest_distances`` of the model
config). A pair never within the cutoff in training may truly bind near a bond length: it is
held to the physical bound r_b = 0.6 (R_i + R_j) (R: ASE's covalent radii, Cordero 2008),
below which no dimer binds (the shortest bonds relative to their radii are the multiple bonds
of Cr₂, 0.60, and Mo₂, 0.63). A model file written before shortest distances were recorded
falls back to the radius sum R_i + R_j, about a single-bond length.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ase.data import covalent_radii

COULOMB_CONSTANT = 14.399645  # k_e = e²/(4π ε₀), eV·Å/e²
BINDING_BOUND_FACTOR = 0.6  # r_b / (R_i + R_j): no dimer binds closer
NO_TRAINING_DATA = "no training data"


def covalent_radius_sums(species: Sequence[int]) -> torch.Tensor:
    """[S, S] Å, float64: R_i + R_j for every pair of ``species`` (ASE's covalent radii)."""
    radii = torch.tensor(covalent_radii[list(species)], dtype=torch.float64)
    return radii[:, None] + radii[None, :]


def element_pairs(species: Sequence[int]) -> list[tuple[int, int]]:
    """Every unordered pair (i, j), i ≤ j, of indices into ``species``."""
    return [(i, j) for i in range(len(species)) for j in range(i, len(species))]


def repulsion_thresholds(species: Sequence[int],
                         shortest_distances: Sequence[Sequence[float | None]] | None
                         ) -> dict[tuple[int, int], tuple[float, str]]:
    """(r_min in Å, where it comes from) of every element pair (indices into ``species``)."""
    thresholds, radius_sums = {}, covalent_radius_sums(species)
    for i, j in element_pairs(species):
        if shortest_distances is None:
            thresholds[i, j] = (float(radius_sums[i, j]), "sum of covalent radii: model file "
                                                          "has no shortest training distances")
        elif shortest_distances[i][j] is None:
            thresholds[i, j] = (BINDING_BOUND_FACTOR * float(radius_sums[i, j]),
                                f"{NO_TRAINING_DATA}: {BINDING_BOUND_FACTOR:g} × covalent "
                                f"radii, below which no dimer binds")
        else:
            thresholds[i, j] = (float(shortest_distances[i][j]), "shortest training distance")
    return thresholds
