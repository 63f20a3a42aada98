"""Weighted loss on per-atom energy, force, stress and dipole components."""

from __future__ import annotations

import torch
from torch import nn

from equipot import keys
from equipot.data.graph import atoms_per_structure

PENALTIES = ("mse", "huber")


class WeightedLoss(nn.Module):
    """L = w_E ρ̄(ΔE/N) + w_F ρ̄(ΔF) + w_σ ρ̄(Δσ) + w_μ ρ̄(Δμ), ρ squared error or Huber
    (per component), ρ̄ its mean over the labelled components, each scaled by its structure's
    loss weight (``keys.WEIGHT``, 1 without one).

    Energy errors are divided by the number of atoms, so structures of any size weigh alike. A
    structure lacking a label (``keys.HAS_LABEL``: stress counts on periodic structures only,
    dipoles on non-periodic ones) adds nothing to that term, nor to the count it is averaged
    over; a batch without any such label gives the term 0.
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
        """ρ of every component, same shape as ``predicted``."""
        reference = reference.to(predicted.dtype)
        if self.kind == "huber":
            return nn.functional.huber_loss(predicted, reference, delta=self.huber_delta,
                                            reduction="none")
        return nn.functional.mse_loss(predicted, reference, reduction="none")

    def forward(self, predicted: dict, batch) -> dict[str, torch.Tensor]:
        """Each weighted term and their sum ``"total"``, for the labels both sides have."""
        if self.needs(keys.DIPOLE) and keys.DIPOLE in batch and keys.DIPOLE not in predicted:
            raise ValueError("loss.dipole_weight > 0 needs a model that predicts dipoles "
                             "(+model.energy_terms.electrostatics={})")
        terms = {}
        for field in keys.LABELS:
            if self.needs(field) and field in batch and field in predicted:
                prediction, reference = predicted[field], batch[field]
                if field == keys.ENERGY:
                    num_atoms = atoms_per_structure(batch)
                    prediction, reference = prediction / num_atoms, reference / num_atoms
                terms[field] = masked_mean(self._penalty(prediction, reference),
                                           *label_mask_and_weights(batch, field))
        weighted = {name: self.weights[name] * value for name, value in terms.items()}
        weighted["total"] = sum(weighted.values())
        return weighted


def label_mask_and_weights(batch, field: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per item of ``field`` (structures; atoms for forces): whether it has the label (bool)
    and its structure's loss weight (float64, 1 without ``keys.WEIGHT``), both [G] or [N]."""
    has_label = batch[keys.HAS_LABEL[field]]
    weights = (batch[keys.WEIGHT] if keys.WEIGHT in batch
               else torch.ones(has_label.shape, dtype=torch.float64, device=has_label.device))
    if field == keys.FORCES:
        return has_label[batch[keys.BATCH]], weights[batch[keys.BATCH]]
    return has_label, weights


def masked_mean(penalty: torch.Tensor, has_label: torch.Tensor, weights: torch.Tensor
                ) -> torch.Tensor:
    """Σ w ρ over the labelled components / their number (0 when there are none).

    ``penalty`` ρ [items, …], ``has_label`` [items] bool, ``weights`` w [items]."""
    components = penalty[0].numel() if penalty.shape[0] else 1
    shape = (-1,) + (1,) * (penalty.dim() - 1)
    weights = torch.where(has_label, weights, 0.0).to(penalty.dtype).view(shape)
    count = has_label.sum() * components
    return (weights * penalty).sum() / count.clamp(min=1)
