"""Predictions and error metrics of a Potential over a dataset (used after training and by
``equipot-evaluate``, so both report the same numbers)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.loader import DataLoader

from equipot import keys
from equipot.data.graph import atoms_per_structure
from equipot.errors import EquipotInputError
from equipot.model.potential import Potential
from equipot.train.metrics import ErrorMetrics


@dataclass
class Evaluation:
    """Metrics (eV, eV/Å, eV/Å³) and paired (reference, predicted) arrays for plots."""

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
    pairs = {field: ([], []) for field in (keys.ENERGY, keys.FORCES) if field in fields}
    first = 0  # index in ``dataset`` of the batch's first structure
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        batch = batch.to(device)
        predicted = model(batch, compute_forces=True,
                          compute_stress=keys.STRESS in fields and bool(batch[keys.PBC].any()))
        check_finite(predicted, batch, dataset.source, first)
        metrics.update(predicted, batch)
        num_atoms = atoms_per_structure(batch)
        for field, (reference, prediction) in pairs.items():
            scale = num_atoms if field == keys.ENERGY else 1  # energies per atom
            has_label = batch[keys.HAS_LABEL[field]]
            if field == keys.FORCES:
                has_label = has_label[batch[keys.BATCH]]
            reference.append((batch[field] / scale)[has_label].detach().cpu().numpy().ravel())
            prediction.append((predicted[field].double() / scale)[has_label]
                              .detach().cpu().numpy().ravel())
        first += batch.num_graphs
    return Evaluation(
        metrics={name: float(value) for name, value in metrics.compute().items()},
        num_structures=len(dataset),
        pairs={field: (np.concatenate(ref), np.concatenate(pred))
               for field, (ref, pred) in pairs.items()})


def check_finite(predicted: dict, batch, source: str, first: int) -> None:
    """Raise an error naming ``source`` and the structure (``first`` + its place in the
    batch) whose energy, forces or stress are NaN or infinite."""
    for field in (keys.ENERGY, keys.FORCES, keys.STRESS):
        if field not in predicted:
            continue
        values = predicted[field]
        bad = ~torch.isfinite(values.reshape(len(values), -1)).all(1)  # per structure, or atom
        if bool(bad.any()):
            item = int(bad.nonzero()[0])
            index = first + (int(batch[keys.BATCH][item]) if field == keys.FORCES else item)
            raise EquipotInputError("the model predicts NaN or inf", source, index, field)


def format_table(metrics: dict[str, float]) -> str:
    """Metrics as a text table in meV units."""
    rows = [("energy", "meV"), ("energy_per_atom", "meV/atom"), ("forces", "meV/Å"),
            ("stress", "meV/Å³"), ("dipole", "me·Å")]
    lines = [f"{'quantity':<17}{'MAE':>12}{'RMSE':>12}  unit"]
    for quantity, unit in rows:
        if f"{quantity}_mae" in metrics:
            lines.append(f"{quantity:<17}{1000 * metrics[f'{quantity}_mae']:>12.3f}"
                         f"{1000 * metrics[f'{quantity}_rmse']:>12.3f}  {unit}")
    return "\n".join(lines)
