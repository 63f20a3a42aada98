"""Predictions and error metrics of a Potential over a dataset (used after training and by
``equipot-evaluate``, so both report the same numbers)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.loader import DataLoader

from equipot import keys
from equipot.data.graph import label_mask, per_atom
from equipot.errors import EquipotInputError
from equipot.model.potential import Potential
from equipot.train.metrics import ErrorMetrics, units_by_quantity


@dataclass
class Evaluation:
    """Metrics (in the labels' units, ``equipot.train.metrics.units_by_quantity``) and, per
    label, paired (reference, predicted) components for parity plots (per atom for a
    ``per_atom`` label)."""

    metrics: dict[str, float]
    num_structures: int
    pairs: dict[str, tuple[np.ndarray, np.ndarray]]


def evaluate(model: Potential, dataset, batch_size: int = 1) -> Evaluation:
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
        first += batch.num_graphs
    pairs = {name: (np.concatenate(ref), np.concatenate(pred))
             for name, (ref, pred) in pairs.items() if ref}
    return Evaluation(
        metrics={name: float(value) for name, value in metrics.compute().items()},
        num_structures=len(dataset),
        pairs={name: pair for name, pair in pairs.items() if pair[0].size})


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
