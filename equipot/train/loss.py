"""Weighted loss on per-atom energy, force, stress and dipole components."""

from __future__ import annotations

import torch
from torch import nn

from equipot import keys
from equipot.data.graph import atoms_per_structure

PENALTIES = ("mse", "huber")


class WeightedLoss(nn.Module):
    """L = w_E ρ(ΔE/N) + w_F ρ(ΔF) + w_σ ρ(Δσ) + w_μ ρ(Δμ), ρ mean squared error or Huber
    (per component).

    Energy errors are divided by the number of atoms, so structures of any size weigh alike;
    stress enters only for periodic structures, dipoles (e·Å) only for non-periodic ones.
    """

    def __init__(self, energy_weight: float = 1.0, forces_weight: float = 100.0,
                 stress_weight: float = 0.0, dipole_weight: float = 0.0, kind: str = "mse",
                 huber_delta: float = 0.01):
        super().__init__()
        if kind not in PENALTIES:
            raise ValueError(f"unknown loss '{kind}'; available: {sorted(PENALTIES)}")
        self.weights = {keys.ENERGY: energy_weight, keys.FORCES: forces_weight,
                        keys.STRESS: stress_weight, keys.DIPOLE: dipole_weight}
        self.kind, self.huber_delta = kind, huber_delta

    def needs(self, field: str) -> bool:
        return self.weights[field] > 0

    def _penalty(self, predicted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        reference = reference.to(predicted.dtype)
        if self.kind == "huber":
            return nn.functional.huber_loss(predicted, reference, delta=self.huber_delta)
        return nn.functional.mse_loss(predicted, reference)

    def forward(self, predicted: dict, batch) -> dict[str, torch.Tensor]:
        """Each weighted term and their sum ``"total"``, for the labels both sides have."""
        terms = {}
        if self.needs(keys.ENERGY) and keys.ENERGY in batch:
            num_atoms = atoms_per_structure(batch)
            terms[keys.ENERGY] = self._penalty(predicted[keys.ENERGY] / num_atoms,
                                               batch[keys.ENERGY] / num_atoms)
        if self.needs(keys.FORCES) and keys.FORCES in batch:
            terms[keys.FORCES] = self._penalty(predicted[keys.FORCES], batch[keys.FORCES])
        if self.needs(keys.STRESS) and keys.STRESS in batch:
            periodic = batch[keys.PBC].any(dim=1)
            terms[keys.STRESS] = self._penalty(predicted[keys.STRESS][periodic],
                                               batch[keys.STRESS][periodic])
        if self.needs(keys.DIPOLE) and keys.DIPOLE in batch:
            if keys.DIPOLE not in predicted:
                raise ValueError("loss.dipole_weight > 0 needs a model that predicts dipoles "
                                 "(model.energy_terms=[{name: electrostatics}])")
            molecule = ~batch[keys.PBC].any(dim=1)
            reference = batch[keys.DIPOLE][molecule]
            if reference.numel():
                terms[keys.DIPOLE] = self._penalty(predicted[keys.DIPOLE][molecule], reference)
        weighted = {name: self.weights[name] * value for name, value in terms.items()}
        weighted["total"] = sum(weighted.values())
        return weighted
