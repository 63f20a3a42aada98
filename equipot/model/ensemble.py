"""A deep ensemble: K Potentials of one architecture trained from different seeds
(Lakshminarayanan, Pritzel, Blundell, NeurIPS 2017).

Predictions are the members' mean; the predicted standard deviation of each quantity is the
spread of the members' predictions (unbiased, over K − 1) times a calibration scale
(``equipot.uncertainty.fitting``): for energies and per-atom energies s_E, for an atom's
force components s_F × the RMS over its three components of their spread. The members share
the batch, its graph and neighbour list, and run one after the other; the cost of a call is K
times a member's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from equipot import keys
from equipot.model.potential import Potential

MEAN_OF_MEMBERS = (keys.ENERGY, keys.ATOMIC_ENERGIES, keys.FORCES, keys.STRESS, keys.CHARGES,
                   keys.DIPOLE)


@dataclass(frozen=True)
class EnsembleOptions:
    size: int = 1  # K, the number of members
    energy_scale: float = 1.0  # s_E
    forces_scale: float = 1.0  # s_F


class Ensemble(nn.Module):
    """K members (``members.<k>.*`` in the state dict) answering as one Potential does:
    ``forward(batch, compute_forces, compute_stress, create_graph)`` gives the members' mean
    and keys.ENERGY_UNCERTAINTY [G], keys.ATOMIC_ENERGIES_UNCERTAINTY [N] (eV) and
    keys.FORCES_UNCERTAINTY [N] (eV/Å)."""

    method = "ensemble"

    def __init__(self, config: Mapping, members: Sequence[Potential], options: EnsembleOptions):
        super().__init__()
        if len(members) != options.size or not members:
            raise ValueError(f"an ensemble of size {options.size} needs as many members, "
                             f"got {len(members)}")
        self.config = dict(config)
        self.metadata: dict = {}
        self.options = options
        self.members = nn.ModuleList(members)
        self.species, self.cutoff = members[0].species, members[0].cutoff

    @property
    def dtype(self) -> torch.dtype:
        return self.members[0].dtype

    @property
    def species_of_z(self) -> torch.Tensor:
        """Atomic number → index in ``species`` (−1: unknown), the members' lookup."""
        return self.members[0].species_of_z

    def check_species(self, atomic_numbers: np.ndarray, source: str = "<atoms>",
                      index: int | None = None) -> None:
        self.members[0].check_species(atomic_numbers, source, index)

    def last_layer_features(self, batch) -> torch.Tensor:
        """[N, K·H]: the members' last-layer features side by side."""
        return torch.cat([member.last_layer_features(batch) for member in self.members], dim=1)

    def forward(self, batch, compute_forces: bool = True, compute_stress: bool = False,
                create_graph: bool | None = None) -> dict[str, torch.Tensor]:
        outputs = [member(batch, compute_forces, compute_stress, create_graph)
                   for member in self.members]
        stacked = {name: torch.stack([out[name] for out in outputs])
                   for name in MEAN_OF_MEMBERS if name in outputs[0]}
        out = {name: values.mean(0) for name, values in stacked.items()}

        def spread(name: str) -> torch.Tensor:  # [K, items, ...] → [items, ...]
            values = stacked[name].detach()
            if len(values) == 1:
                return torch.zeros_like(values[0])
            return values.var(0, correction=1).sqrt()

        out[keys.ENERGY_UNCERTAINTY] = self.options.energy_scale * spread(keys.ENERGY)
        out[keys.ATOMIC_ENERGIES_UNCERTAINTY] = (self.options.energy_scale
                                                 * spread(keys.ATOMIC_ENERGIES))
        if keys.FORCES in stacked:
            out[keys.FORCES_UNCERTAINTY] = (self.options.forces_scale
                                            * spread(keys.FORCES).square().mean(-1).sqrt())
        return out
