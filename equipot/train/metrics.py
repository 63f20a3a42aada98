"""MAE and RMSE of every label (``keys.labels()``), and per atom of the ``per_atom`` ones (energy),
accumulated over batches, over the structures that have each label.

One implementation serves training (validation and test in Lightning, synchronised across
DDP ranks by torchmetrics) and ``equipot-evaluate``. Values are in the labels' units (eV,
eV/Å, eV/Å³, e·Å; eV/atom per atom).
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from equipot import keys
from equipot.data.graph import label_mask, per_atom


def units_by_quantity() -> dict[str, str]:
    """Every label, and "<label>_per_atom" after each ``per_atom`` one, with its unit."""
    units = {}
    for name in keys.labels():
        units[name] = keys.label(name).unit
        if keys.label(name).per_atom:
            units[f"{name}_per_atom"] = f"{keys.label(name).unit}/atom"
    return units



def errors_by_quantity(predicted: dict, batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per quantity the batch has labels for: prediction − reference [items, components]
    (float64) and whether each item has the label [items] (bool)."""
    errors = {}
    for name in keys.labels():
        if name in batch and name in predicted:
            difference = predicted[name].double() - batch[name].double()
            has_label = label_mask(batch, name)
            errors[name] = (difference.reshape(len(difference), -1), has_label)
            if keys.label(name).per_atom:
                errors[f"{name}_per_atom"] = (per_atom(batch, errors[name][0]), has_label)
    return errors


class ErrorMetrics(Metric):
    """Running sums of |error|, error² and counts per quantity; ``compute()`` gives MAE/RMSE."""

    full_state_update = False

    def __init__(self, **kwargs):
        """``kwargs``: torchmetrics' options (``sync_on_compute=False`` for one process's
        numbers under DDP)."""
        super().__init__(**kwargs)
        self.quantities = tuple(units_by_quantity())  # energy, energy_per_atom, forces, …
        for quantity in self.quantities:
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
        for quantity in self.quantities:
            count = getattr(self, f"{quantity}_count")
            if count > 0:
                results[f"{quantity}_mae"] = getattr(self, f"{quantity}_abs") / count
                results[f"{quantity}_rmse"] = (getattr(self, f"{quantity}_squared") / count).sqrt()
        return results
