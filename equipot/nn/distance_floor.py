"""The network sees no pair closer than the training data had it: a floor under edge lengths.

A network only interpolates: for a pair of elements closer than in any training structure its
energy is an extrapolation, and a smooth fit is as likely to attract as to repel there (the
short-range report of ``equipot.short_range`` finds dimers of trained models of every family
collapsing). So the lengths the network reads are floored at the pair's shortest training
distance r_min, and the physics priors (ZBL), which read the true lengths, alone decide below:

    r' = r_min + w g((r − r_min) / w),   g(u) = 0 (u ≤ 0),  6u³ − 8u⁴ + 3u⁵ (0 < u < 1),  u (u ≥ 1)

g is monotonic, and r' and its first two derivatives are continuous (forces and their
derivatives stay continuous); r' = r from r_min + w on, so the network is untouched wherever
the training data are more than w away from their closest approach. w is kept small (0.02 Å):
g' = 0 at r_min, so no force along a pair at its closest training approach can come from the
network. Below r_min the network's energy no longer depends on that pair's distance (it still
sees the direction). Pairs never within the cutoff in training are floored at the cutoff: the
network does not see them at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def blend_to_identity(u: torch.Tensor) -> torch.Tensor:
    """g(u) above: 0 for u ≤ 0, u for u ≥ 1, C² in between."""
    t = u.clamp(0.0, 1.0)
    return torch.where(u >= 1.0, u, t**3 * (6.0 - 8.0 * t + 3.0 * t**2))


class DistanceFloor(nn.Module):
    """Edge lengths [E] Å → floored lengths [E] Å, for the pair of species indices of each edge.

    ``shortest_distances``: [S][S] Å, the training set's closest approach of each pair of
    species (None: never within the cutoff); ``width``: w, Å.
    """

    def __init__(self, shortest_distances: Sequence[Sequence[float | None]], cutoff: float,
                 width: float = 0.02):
        super().__init__()
        if width <= 0:
            raise ValueError(f"the distance floor's width must be positive, got {width} Å")
        self.width = float(width)
        floor = [[cutoff if r is None else float(r) for r in row] for row in shortest_distances]
        self.register_buffer("floor", torch.tensor(floor), persistent=False)

    def forward(self, lengths: torch.Tensor, species_i: torch.Tensor,
                species_j: torch.Tensor) -> torch.Tensor:
        floor = self.floor.to(lengths.dtype)[species_i, species_j]
        return floor + self.width * blend_to_identity((lengths - floor) / self.width)
