"""Predictions and error metrics of a Potential over a dataset (used after training and by
``equipot-evaluate``, so both report the same numbers)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch_geometric.loader import DataLoader

from equipot import keys
from equipot.data.graph import label_mask, per_atom
from equipot.errors import EquipotInputError
from equipot.model.ensemble import Ensemble
from equipot.model.potential import Potential
from equipot.train.metrics import ErrorMetrics, units_by_quantity
from equipot.uncertainty.fitting import error, labelled
from equipot.uncertainty.scores import uncertainty_report


@dataclass
class Evaluation:
    """Metrics (in the labels' units, ``equipot.train.metrics.units_by_quantity``) and, per
    label, paired (reference, predicted) components for parity plots (per atom for a
    ``per_atom`` label). For a model predicting uncertainties: their scores
    (``equipot.uncertainty.scores.uncertainty_report``) and, for "energy" and "forces",
    (errors [items, components], σ [items]) for the calibration plot."""

    metrics: dict[str, float]
    num_structures: int
    pairs: dict[str, tuple[np.ndarray, np.ndarray]]
    uncertainty: dict[str, dict[str, float]] = field(default_factory=dict)
    uncertainty_pairs: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def evaluate(model: Potential | Ensemble, dataset, batch_size: int = 1) -> Evaluation:
    """Run ``model`` on every structure of ``dataset`` and score it against the labels.

    With the default of one structure per batch, every prediction is computed exactly as
    EquipotCalculator computes it, bit for bit; larger batches are faster but round float32
    differently (relative differences of order 1e-7). The metrics are this process's own, also
    under DDP. A non-finite prediction is an error naming the file and the structure.
    """
    device = next(model.parameters()).device
    metrics = ErrorMetrics(sync_on_compute=False).to(device)
    fields = dataset[0].keys()
    pairs = {name: ([], []) for name in keys.labels() if name in fields}
    uncertain = UncertaintyPairs()
    first = 0  # index in ``dataset`` of the batch's first structure
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        batch = batch.to(device)
        predicted = model(batch, compute_forces=True,
                          compute_stress=keys.STRESS in fields and bool(batch[keys.PBC].any()))
        check_finite(predicted, batch, dataset.source, first)
        metrics.update(predicted, batch)
        for name, (reference, prediction) in pairs.items():
            if name not in predicted:  # e.g. dipoles of a model without charges
                continue
            values = batch[name], predicted[name].double()
            if keys.label(name).per_atom:
                values = tuple(per_atom(batch, value) for value in values)
            has_label = label_mask(batch, name)
            for paired, value in zip((reference, prediction), values):
                paired.append(value[has_label].detach().cpu().numpy().ravel())
        if keys.ENERGY_UNCERTAINTY in predicted:
            uncertain.add(predicted, batch, first)
        first += batch.num_graphs
    pairs = {name: (np.concatenate(ref), np.concatenate(pred))
             for name, (ref, pred) in pairs.items() if ref}
    return Evaluation(
        metrics={name: float(value) for name, value in metrics.compute().items()},
        num_structures=len(dataset),
        pairs={name: pair for name, pair in pairs.items() if pair[0].size},
        **uncertain.results())


class UncertaintyPairs:
    """Errors and predicted σ of energies (per structure) and forces (per atom), over the
    labelled structures of the batches added."""

    def __init__(self):
        self.parts: dict[str, list[np.ndarray]] = {name: [] for name in (
            "energy_errors", "energy_sigmas", "force_errors", "force_sigmas",
            "force_structures")}

    def add(self, predicted: dict, batch, first: int) -> None:
        has_energy, has_forces = (labelled(batch, name) for name in (keys.ENERGY, keys.FORCES))
        values = {
            "energy_errors": error(predicted, batch, keys.ENERGY)[has_energy],
            "energy_sigmas": predicted[keys.ENERGY_UNCERTAINTY][has_energy],
            "force_errors": error(predicted, batch, keys.FORCES)[has_forces],
            "force_sigmas": predicted[keys.FORCES_UNCERTAINTY][has_forces],
            "force_structures": (first + batch[keys.BATCH])[has_forces]}
        for name, value in values.items():
            self.parts[name].append(value.detach().double().cpu().numpy())

    def results(self) -> dict:
        """``uncertainty`` and ``uncertainty_pairs`` of an ``Evaluation`` (empty without data)."""
        if not self.parts["energy_errors"]:
            return {}
        arrays = {name: np.concatenate(values) for name, values in self.parts.items()}
        pairs = {"energy": (arrays["energy_errors"], arrays["energy_sigmas"]),
                 "forces": (arrays["force_errors"], arrays["force_sigmas"])}
        return {"uncertainty": uncertainty_report(**arrays),
                "uncertainty_pairs": {name: pair for name, pair in pairs.items()
                                      if len(pair[0])}}


def check_finite(predicted: dict, batch, source: str, first: int) -> None:
    """Raise an error naming ``source`` and the structure (``first`` + its place in the
    batch) whose prediction of any field is NaN or infinite."""
    for name, values in predicted.items():
        bad = ~torch.isfinite(values.reshape(len(values), -1)).all(1)  # per item
        if bool(bad.any()):
            item = int(bad.nonzero()[0])
            on_atoms = keys.FIELDS[name].per == keys.ATOM
            index = first + (int(batch[keys.BATCH][item]) if on_atoms else item)
            raise EquipotInputError("the model predicts NaN or inf", source, index, name)


def format_table(metrics: dict[str, float]) -> str:
    """Metrics as a text table in milli-units (meV, meV/Å …)."""
    lines = [f"{'quantity':<17}{'MAE':>12}{'RMSE':>12}  unit"]
    for quantity, unit in units_by_quantity().items():
        if f"{quantity}_mae" in metrics:
            lines.append(f"{quantity:<17}{1000 * metrics[f'{quantity}_mae']:>12.3f}"
                         f"{1000 * metrics[f'{quantity}_rmse']:>12.3f}  m{unit}")
    return "\n".join(lines)


def format_comparison(metrics: dict[str, dict[str, float]]) -> str:
    """Several models' metrics (``{name: metrics}``) side by side, in milli-units: MAE and
    RMSE of each quantity, a pair of columns per model."""
    names = list(metrics)
    width = max(24, *(len(name) + 2 for name in names))
    lines = [f"{'':<17}" + "".join(f"{name:>{width}}" for name in names),
             f"{'quantity':<17}" + f"{'MAE':>{width // 2}}{'RMSE':>{width - width // 2}}"
             * len(names) + "  unit"]
    for quantity, unit in units_by_quantity().items():
        if all(f"{quantity}_mae" in values for values in metrics.values()):
            lines.append(f"{quantity:<17}" + "".join(
                f"{1000 * values[f'{quantity}_mae']:>{width // 2}.3f}"
                f"{1000 * values[f'{quantity}_rmse']:>{width - width // 2}.3f}"
                for values in metrics.values()) + f"  m{unit}")
    return "\n".join(lines)
