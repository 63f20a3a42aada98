"""What interaction blocks and energy terms see of a batch: atoms, edges and edge geometry.

Built once per forward pass by the Potential from (possibly strained) positions and cell, so
that every block shares the same edge vectors and radial basis and gradients flow back to
positions and strain in one place. The radial basis and envelope are functions of the
geometry's own lengths, computed on the first request: a geometry with other lengths (the
network's floored ones, ``with_lengths``) has its own.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import torch
from e3nn import o3

from equipot.nn.triplets import Triplets, build_triplets


def edge_vectors(positions: torch.Tensor, centre: torch.Tensor, neighbour: torch.Tensor,
                 shifts: torch.Tensor, edge_cells: torch.Tensor) -> torch.Tensor:
    """r_ij = pos[j] − pos[i] + S_ij @ cell, [E, 3] Å: the one definition of an edge vector.

    positions [N, 3] Å; centre, neighbour [E]; shifts S [E, 3] (integer-valued, in the
    positions' dtype); edge_cells [E, 3, 3] Å, the cell of each edge's structure.
    """
    return (positions[neighbour] - positions[centre]
            + torch.einsum("ei,eij->ej", shifts, edge_cells))


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
    shifts: torch.Tensor  # [E, 3] float64 integers S, cell shifts of the edges
    vectors: torch.Tensor  # [E, 3] Å, r_ij = pos[j] − pos[i] + S @ cell
    lengths: torch.Tensor  # [E] Å
    radial_functions: Callable[[torch.Tensor], torch.Tensor]  # lengths [E] → basis [E, B]
    envelope_function: Callable[[torch.Tensor], torch.Tensor]  # lengths [E] → envelope [E]
    total_charge: torch.Tensor | None = None  # [G] e, given total charges (None: all neutral)
    _shared: dict = field(default_factory=dict, repr=False)

    @property
    def num_atoms(self) -> int:
        return self.atomic_numbers.shape[0]

    @cached_property
    def radial_basis(self) -> torch.Tensor:
        """[E, B] raw radial basis of the lengths, computed once and shared by every block."""
        return self.radial_functions(self.lengths)

    @cached_property
    def envelope(self) -> torch.Tensor:
        """[E] smooth cutoff envelope of the lengths, 1 at r = 0 and 0 from the cutoff."""
        return self.envelope_function(self.lengths)

    def with_lengths(self, vectors: torch.Tensor, lengths: torch.Tensor) -> Geometry:
        """The same atoms and edges with other edge vectors [E, 3] and lengths [E] (Å), and
        nothing computed from the old ones."""
        return replace(self, vectors=vectors, lengths=lengths, _shared={})

    @cached_property
    def unit_vectors(self) -> torch.Tensor:
        """[E, 3] r_ij / |r_ij|, computed once and shared by every block."""
        return self.vectors / self.lengths.unsqueeze(-1)

    @cached_property
    def triplets(self) -> Triplets:
        """Triplets k → j → i of the edges, built on the first request (only blocks with
        angular messages ask) and shared by every block."""
        return build_triplets(self.centre, self.neighbour, self.shifts, self.num_atoms)

    def shared(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()``, evaluated once per forward pass and shared by every block that asks
        with the same ``key`` (spherical harmonics, DimeNet++'s spherical basis, ...)."""
        if key not in self._shared:
            self._shared[key] = compute()
        return self._shared[key]

    def spherical_harmonics(self, l_max: int) -> torch.Tensor:
        """[E, (l_max + 1)²] Y_lm(r̂_ij), l = 0 … l_max, component-normalised (e3nn order)."""
        return self.shared(("spherical_harmonics", l_max), lambda: o3.spherical_harmonics(
            o3.Irreps.spherical_harmonics(l_max), self.unit_vectors, normalize=False,
            normalization="component"))
