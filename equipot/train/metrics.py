"""MAE and RMSE of energies (total and per atom), forces, stress and dipoles, accumulated over
batches, over the structures that have each label (``keys.HAS_LABEL``).

One implementation serves training (validation and test in Lightning, synchronised across
DDP ranks by torchmetrics) and ``equipot-evaluate``. Values are in eV, eV/Å, eV/Å³ and e·Å.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from equipot import keys
from equipot.data.graph import atoms_per_structure

QUANTITIES = ("energy", "energy_per_atom", "forces", "stress", "dipole")
UNITS = {"energy": "eV", "energy_per_atom": "eV/atom", "forces": "eV/Å", "stress": "eV/Å³",
         "dipole": "e·Å"}


def errors_by_quantity(predicted: dict, batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per quantity the batch has labels for: prediction − reference [items, components]
    (float64) and whether each item has the label [items] (bool; ``keys.HAS_LABEL``)."""
    errors = {}
    for field in keys.LABELS:
        if field in batch and field in predicted:
            difference = predicted[field].double() - batch[field].double()
            has_label = batch[keys.HAS_LABEL[field]]
            if field == keys.ENERGY:
                errors["energy"] = (difference[:, None], has_label)
                errors["energy_per_atom"] = ((difference / atoms_per_structure(batch))[:, None],
                                             has_label)
            else:
                if field == keys.FORCES:
                    has_label = has_label[batch[keys.BATCH]]
                errors[field] = (difference.flatten(1), has_label)
    return errors


class ErrorMetrics(Metric):
    """Running sums of |error|, error² and counts per quantity; ``compute()`` gives MAE/RMSE."""

    full_state_update = False

    def __init__(self, **kwargs):
        """``kwargs``: torchmetrics' options (``sync_on_compute=False`` for one process's
        numbers under DDP)."""
        super().__init__(**kwargs)
        for quantity in QUANTITIES:
            for statistic in ("abs", "squared", "count"):
                self.add_state(f"{quantity}_{statistic}",
                               default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predicted: dict, batch) -> None:
        for quantity, (error, has_label) in errors_by_quantity(predicted, batch).items():
            error = torch.where(has_label[:, None], error.detach(), 0.0)
            setattr(self, f"{quantity}_abs", getattr(self, f"{quantity}_abs") + error.abs().sum())
            setattr(self, f"{quantity}_squared",
                    getattr(self, f"{quantity}_squared") + error.square().sum())
            setattr(self, f"{quantity}_count",
                    getattr(self, f"{quantity}_count") + has_label.sum() * error.shape[1])

    def compute(self) -> dict[str, float]:
        results = {}
        for quantity in QUANTITIES:
            count = getattr(self, f"{quantity}_count")
            if count > 0:
                results[f"{quantity}_mae"] = getattr(self, f"{quantity}_abs") / count
                results[f"{quantity}_rmse"] = (getattr(self, f"{quantity}_squared") / count).sqrt()
        return results
