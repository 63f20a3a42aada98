"""What interaction blocks and energy terms see of a batch: atoms, edges and edge geometry.

Built once per forward pass by the Potential from (possibly strained) positions and cell, so
that every block shares the same edge vectors and radial basis and gradients flow back to
positions and strain in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch
from e3nn import o3


@dataclass
class Geometry:
    """Shapes: N atoms, E edges, G structures, B radial basis functions."""

    atomic_numbers: torch.Tensor  # [N] int64
    species: torch.Tensor  # [N] int64, index into the model's species list
    batch: torch.Tensor  # [N] int64, structure of each atom
    num_graphs: int
    positions: torch.Tensor  # [N, 3] Å
    cell: torch.Tensor  # [G, 3, 3] Å
    pbc: torch.Tensor  # [G, 3] bool
    centre: torch.Tensor  # [E] int64, atom i receiving the message
    neighbour: torch.Tensor  # [E] int64, atom j sending it
    vectors: torch.Tensor  # [E, 3] Å, r_ij = pos[j] − pos[i] + S @ cell
    lengths: torch.Tensor  # [E] Å
    radial_basis: torch.Tensor  # [E, B], raw radial basis of the lengths
    envelope: torch.Tensor  # [E], smooth cutoff envelope, 1 at r = 0 and 0 from the cutoff
    _spherical_harmonics: dict = field(default_factory=dict, repr=False)

    @property
    def num_atoms(self) -> int:
        return self.atomic_numbers.shape[0]

    @cached_property
    def unit_vectors(self) -> torch.Tensor:
        """[E, 3] r_ij / |r_ij|, computed once and shared by every block."""
        return self.vectors / self.lengths.unsqueeze(-1)

    def spherical_harmonics(self, l_max: int) -> torch.Tensor:
        """[E, (l_max + 1)²] Y_lm(r̂_ij), l = 0 … l_max, component-normalised (e3nn order);
        computed once per l_max and shared by every block."""
        if l_max not in self._spherical_harmonics:
            self._spherical_harmonics[l_max] = o3.spherical_harmonics(
                o3.Irreps.spherical_harmonics(l_max), self.unit_vectors, normalize=False,
                normalization="component")
        return self._spherical_harmonics[l_max]
