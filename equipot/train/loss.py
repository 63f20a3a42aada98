"""Weighted loss on the components of every label: per-atom energies, forces, stress, dipoles."""

from __future__ import annotations

import torch
from torch import nn

from equipot import keys
from equipot.data.graph import label_mask, per_atom, per_item

PENALTIES = ("mse", "huber")



def weight_options() -> dict[str, str]:
    """The loss weight option of every label, as configs spell it: {"energy_weight": "energy",
    …}."""
    return {f"{name}_weight": name for name in keys.labels()}


class WeightedLoss(nn.Module):
    """L = Σ_label w_label ρ̄(Δ), over the labels (``keys.labels()``: energy, forces, stress,
    dipole …), ρ squared error or Huber (per component), ρ̄ its mean over the labelled
    components, each scaled by its structure's loss weight (``keys.WEIGHT``, 1 without one).

    Errors of a ``per_atom`` label (energy) are divided by the number of atoms, so structures
    of any size weigh alike. A structure lacking a label (its ``has`` flag: stress counts on
    periodic structures only, dipoles on non-periodic ones) adds nothing to that term, nor to
    the count it is averaged over; a batch without any such label gives the term 0.
    """

    def __init__(self, kind: str, huber_delta: float, **weights: float):
        """``kind``: one of PENALTIES; ``huber_delta``: the Huber threshold; ``weights``:
        ``<label>_weight=w`` (``weight_options()``), a label not given is not trained on."""
        super().__init__()
        if kind not in PENALTIES:
            raise ValueError(f"unknown loss '{kind}'; available: {sorted(PENALTIES)}")
        self.weights = dict.fromkeys(keys.labels(), 0.0) | label_weights(weights)
        self.kind, self.huber_delta = kind, huber_delta

    def needs(self, name: str) -> bool:
        return self.weights[name] > 0

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
        for name in keys.labels():
            if self.needs(name) and name in batch and name in predicted:
                prediction, reference = predicted[name], batch[name]
                if keys.label(name).per_atom:
                    prediction, reference = per_atom(batch, prediction), per_atom(batch, reference)
                terms[name] = masked_mean(self._penalty(prediction, reference),
                                          *label_mask_and_weights(batch, name))
        weighted = {name: self.weights[name] * value for name, value in terms.items()}
        weighted["total"] = sum(weighted.values())
        return weighted


def label_weights(options: dict[str, float | None]) -> dict[str, float]:
    """``{"energy_weight": 10.0, …}`` (``weight_options()``) → ``{"energy": 10.0, …}``; None
    entries are left out."""
    known = weight_options()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown loss weights {unknown}; available: {list(known)}")
    return {known[option]: float(weight) for option, weight in options.items()
            if weight is not None}


def label_mask_and_weights(batch, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per item of label ``name`` (structures; atoms of a per-atom label): whether it has the
    label (bool) and its structure's loss weight (float64, 1 without ``keys.WEIGHT``)."""
    has_label = label_mask(batch, name)
    if keys.WEIGHT not in batch:
        return has_label, torch.ones(has_label.shape, dtype=torch.float64,
                                     device=has_label.device)
    return has_label, per_item(batch, name, batch[keys.WEIGHT])


def masked_mean(penalty: torch.Tensor, has_label: torch.Tensor, weights: torch.Tensor
                ) -> torch.Tensor:
    """Σ w ρ over the labelled components / their number (0 when there are none).

    ``penalty`` ρ [items, …], ``has_label`` [items] bool, ``weights`` w [items]."""
    components = penalty[0].numel() if penalty.shape[0] else 1
    shape = (-1,) + (1,) * (penalty.dim() - 1)
    weights = torch.where(has_label, weights, 0.0).to(penalty.dtype).view(shape)
    count = has_label.sum() * components
    return (weights * penalty).sum() / count.clamp(min=1)
