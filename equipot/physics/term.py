"""Additive energy terms (physics priors, long-range parts) that any backbone can carry.

An energy term derives from ``EnergyTerm`` and declares, as class attributes:

- ``name``: how model configs name it (``model.energy_terms.<name>``);
- ``Options``: the dataclass of those options, with their defaults;
- ``fixed``: True for a fixed function of the structure (no parameters, no features: a physics
  prior such as ZBL). The training statistics (reference energies, shift, scale) are then
  fitted to the labels minus its energies and forces, so the network's scale matches what is
  left for it to learn;
- ``reads_features``: True for a term that reads the last stage's per-atom features (a charge
  head); it is given their irreps in its context.

It is built as ``Term(context, options)`` and called as ``term(geometry, features)``, and
always returns a mapping: per-atom energies [N] (eV) under ``keys.ATOMIC_ENERGIES``, and any
further outputs (``keys.CHARGES`` …) that the Potential returns with its own. The Potential
adds the energies to the network's before forces and stress are taken, so a term never calls
autograd itself. The geometry a term gets holds the true edge lengths (never the network's
floored ones) and a radial basis of those lengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from e3nn import o3
from torch import nn

from equipot.nn.geometry import Geometry


@dataclass(frozen=True)
class TermContext:
    """What a term is built from besides its options."""

    species: tuple[int, ...]  # atomic numbers of the model's elements
    cutoff: float  # Å, the model's
    features: o3.Irreps | None = None  # irreps of the features a term reading them gets


class EnergyTerm(nn.Module):
    name: ClassVar[str]
    Options: ClassVar[type]
    fixed: ClassVar[bool] = False
    reads_features: ClassVar[bool] = False

    def forward(self, geometry: Geometry, features: torch.Tensor | None
                ) -> dict[str, torch.Tensor]:
        raise NotImplementedError
