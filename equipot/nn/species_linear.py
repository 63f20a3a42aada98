"""Equivariant linear map whose weights depend on the chemical species of each atom.

    y_i = W(z_i) x_i,    W(z) acting channel-wise within each irrep (an e3nn ``o3.Linear``)

This is NequIP's and MACE's self-connection (their "tensor product with the one-hot species"),
written without a loop over species: one ``o3.Linear`` maps x to the outputs of all S species
at once, [N, S, dim(irreps_out)], and each atom keeps the row of its own species. That costs S
times the arithmetic of one linear map in a handful of tensor ops; at the small channel counts
of these models the number of ops, not the arithmetic, sets the time.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn


class SpeciesLinear(nn.Module):
    """[N, dim(irreps_in)] features and [N] species indices → [N, dim(irreps_out)]."""

    def __init__(self, irreps_in: o3.Irreps | str, irreps_out: o3.Irreps | str,
                 num_species: int):
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        self.num_species = num_species
        # S copies of irreps_out, one after the other: the output reshapes to [N, S, dim_out].
        self.linear = o3.Linear(self.irreps_in, self.irreps_out * num_species)

    def forward(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        every_species = self.linear(features).reshape(-1, self.num_species, self.irreps_out.dim)
        return every_species[torch.arange(features.shape[0], device=features.device), species]

    @torch.no_grad()
    def take_species(self, source: SpeciesLinear, rows: torch.Tensor) -> None:
        """``source``'s weights of each species s as those of species ``rows[s]`` here
        (``equipot.nn.species_rows``). Output irrep k of species s is entry s·K + k of the
        linear map's outputs (K entries in ``irreps_out``), one weight block per path."""
        entries = len(self.irreps_out)
        blocks = {(path.i_in, path.i_out): view
                  for _, path, view in self.linear.weight_views(yield_instruction=True)}
        for _, path, view in source.linear.weight_views(yield_instruction=True):
            species, entry = divmod(path.i_out, entries)
            blocks[path.i_in, int(rows[species]) * entries + entry].copy_(view)
