"""The network reads no pair closer than a floor: ZBL alone decides below it.

A network only interpolates: for a pair of elements closer than in any training structure its
energy is an extrapolation, and a smooth fit is as likely to attract as to repel there (the
short-range report of ``equipot.analysis.short_range`` finds dimers of trained models of every
family collapsing, and falling by up to 10⁶ eV as r → 0). So the lengths the network reads are
floored, per pair of elements, at a radius r_f, and the physics priors (ZBL), which read the
true lengths, alone decide below:

    r' = r_f + w g((r − r_f) / w),   g(u) = 0 (u ≤ 0),  6u³ − 8u⁴ + 3u⁵ (0 < u < 1),  u (u ≥ 1)

g is monotonic, and r' and its first two derivatives are continuous (forces and their
derivatives stay continuous); r' = r from r_f + w on. Below r_f the network's energy no longer
depends on that pair's distance (it still sees the direction). A model config's
``distance_floor`` (``DistanceFloorOptions``; null: none) chooses r_f with ``at``:

- ``covalent``: ``factor`` × the sum of covalent radii, by default 0.5 with w = 0.1 Å,
  where the ZBL prior is at full strength and no training structure comes near (bonds in the
  bundled MD sets are never shorter than 0.82 of it). It costs no accuracy and keeps the
  network from extrapolating wildly at nuclear distances; between r_f and the training data
  the dimer-repulsion penalty of training (``equipot.train.dimer_repulsion``) keeps it
  repulsive.
- ``training``: the pair's shortest training distance, w small (0.02 Å), a guarantee by
  construction without training. g' = 0 at r_f, so no force along a pair at its closest
  training approach can come from the network, which costs accuracy on compressed bonds.
  Pairs never within the cutoff in training are floored at the cutoff.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from equipot.physics.elements import covalent_radius_sums

DEFAULT_WIDTHS = {"covalent": 0.1, "training": 0.02}  # Å, w of each choice of r_f


@dataclass(frozen=True)
class DistanceFloorOptions:
    at: str = "covalent"  # r_f: "covalent" (factor × the covalent radii) or "training"
    factor: float = 0.5  # with at=covalent: r_f / (R_i + R_j)
    width: float | None = None  # w, Å; None: DEFAULT_WIDTHS[at]


def blend_to_identity(u: torch.Tensor) -> torch.Tensor:
    """g(u) above: 0 for u ≤ 0, u for u ≥ 1, C² in between."""
    t = u.clamp(0.0, 1.0)
    return torch.where(u >= 1.0, u, t**3 * (6.0 - 8.0 * t + 3.0 * t**2))


def training_floors(shortest_distances: Sequence[Sequence[float | None]],
                    cutoff: float) -> list[list[float]]:
    """[S][S] Å: each pair's shortest training distance (None, never within the cutoff in
    training: the cutoff)."""
    return [[cutoff if r is None else float(r) for r in row] for row in shortest_distances]


def covalent_floors(species: Sequence[int], factor: float) -> list[list[float]]:
    """[S][S] Å: ``factor`` × the sum of the pair's covalent radii (ASE's)."""
    return (factor * covalent_radius_sums(species)).tolist()


class DistanceFloor(nn.Module):
    """Edge lengths [E] Å → floored lengths [E] Å, for the pair of species indices of each edge.

    ``floors``: [S][S] r_f, Å; ``width``: w, Å.
    """

    def __init__(self, floors: Sequence[Sequence[float]], width: float):
        super().__init__()
        if width <= 0:
            raise ValueError(f"the distance floor's width must be positive, got {width} Å")
        self.width = float(width)
        self.register_buffer("floor", torch.tensor(floors), persistent=False)

    def forward(self, lengths: torch.Tensor, species_i: torch.Tensor,
                species_j: torch.Tensor) -> torch.Tensor:
        floor = self.floor.to(lengths.dtype)[species_i, species_j]
        return floor + self.width * blend_to_identity((lengths - floor) / self.width)


def build_distance_floor(options: Mapping, species: Sequence[int], cutoff: float,
                         shortest_distances: Sequence[Sequence[float | None]] | None
                         ) -> DistanceFloor:
    """The floor a model config's ``distance_floor`` options describe (``DistanceFloorOptions``);
    ``at: training`` needs the statistic ``shortest_distances``."""
    options = DistanceFloorOptions(**options)
    if options.at not in DEFAULT_WIDTHS:
        raise ValueError(f"distance_floor.at={options.at!r} is not one of "
                         f"{sorted(DEFAULT_WIDTHS)}")
    width = DEFAULT_WIDTHS[options.at] if options.width is None else float(options.width)
    if options.at == "covalent":
        return DistanceFloor(covalent_floors(species, float(options.factor)), width)
    if shortest_distances is None:
        raise ValueError("distance_floor.at=training needs the training statistic "
                         "shortest_distances in the model config")
    return DistanceFloor(training_floors(shortest_distances, cutoff), width)
