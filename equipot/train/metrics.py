"""MAE and RMSE of energies (total and per atom), forces, stress and dipoles, accumulated over
batches.

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


def errors_by_quantity(predicted: dict, batch) -> dict[str, torch.Tensor]:
    """Prediction − reference, flattened, for each quantity the batch has labels for."""
    errors = {}
    if keys.ENERGY in batch and keys.ENERGY in predicted:
        num_atoms = atoms_per_structure(batch)
        difference = predicted[keys.ENERGY].double() - batch[keys.ENERGY].double()
        errors["energy"] = difference
        errors["energy_per_atom"] = difference / num_atoms
    if keys.FORCES in batch and keys.FORCES in predicted:
        errors["forces"] = (predicted[keys.FORCES].double() - batch[keys.FORCES]).flatten()
    if keys.STRESS in batch and keys.STRESS in predicted:
        periodic = batch[keys.PBC].any(dim=1)
        errors["stress"] = (predicted[keys.STRESS].double() - batch[keys.STRESS])[periodic].flatten()
    if keys.DIPOLE in batch and keys.DIPOLE in predicted:  # components, molecules only
        molecule = ~batch[keys.PBC].any(dim=1)
        difference = predicted[keys.DIPOLE].double() - batch[keys.DIPOLE]
        errors["dipole"] = difference[molecule].flatten()
    return errors


class ErrorMetrics(Metric):
    """Running sums of |error|, error² and counts per quantity; ``compute()`` gives MAE/RMSE."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        for quantity in QUANTITIES:
            for statistic in ("abs", "squared", "count"):
                self.add_state(f"{quantity}_{statistic}",
                               default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predicted: dict, batch) -> None:
        for quantity, error in errors_by_quantity(predicted, batch).items():
            error = error.detach()
            setattr(self, f"{quantity}_abs", getattr(self, f"{quantity}_abs") + error.abs().sum())
            setattr(self, f"{quantity}_squared",
                    getattr(self, f"{quantity}_squared") + error.square().sum())
            setattr(self, f"{quantity}_count", getattr(self, f"{quantity}_count") + error.numel())

    def compute(self) -> dict[str, float]:
        results = {}
        for quantity in QUANTITIES:
            count = getattr(self, f"{quantity}_count")
            if count > 0:
                results[f"{quantity}_mae"] = getattr(self, f"{quantity}_abs") / count
                results[f"{quantity}_rmse"] = (getattr(self, f"{quantity}_squared") / count).sqrt()
        return results
