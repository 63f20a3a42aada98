"""Choose the structures to label next: the most uncertain, but not near-copies of each other.

Each candidate A gets its predicted uncertainty u_A (by default the largest σ of an atom's force
components, eV/Å: where the model is least sure of any force; or σ of the energy per atom) and a
fingerprint x_A, the mean over its atoms of the model's last-layer features (the learned
description of their environments; an ensemble's members' side by side). The selection is
greedy: the first pick is the most uncertain; each next one maximises

    u_A · min(1, d_A / d₀),   d_A = min over picked P of |x_A − x_P|,

d₀ the median distance from each candidate to its nearest other candidate. A candidate that
nearly repeats a picked one (d_A ≪ d₀) scores close to zero however uncertain it is, so n picks
spread over the distinct uncertain regions instead of one MD stretch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from equipot import keys
from equipot.model.ensemble import Ensemble
from equipot.model.potential import Potential
from equipot.nn.scatter import scatter_max, scatter_mean

MEASURES = ("forces", "energy")


def fingerprints(model: Potential | Ensemble, batch) -> torch.Tensor:
    """[G, H]: the mean over each structure's atoms of the last-layer features."""
    return scatter_mean(model.last_layer_features(batch), batch[keys.BATCH], batch.num_graphs)


def score(model: Potential | Ensemble, graphs: Sequence[Data], measure: str = "forces",
          batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(uncertainty [S], fingerprints [S, H]) of each structure's graph
    (``equipot.data.graph.atoms_to_graph`` at the model's cutoff), as the module docstring
    says."""
    if measure not in MEASURES:
        raise ValueError(f"measure {measure!r} is not one of {MEASURES}")
    uncertainties, prints = [], []
    device = next(model.parameters()).device
    for start in range(0, len(graphs), batch_size):
        batch = Batch.from_data_list(list(graphs[start:start + batch_size])).to(device)
        out = model(batch, compute_forces=True)
        if keys.FORCES_UNCERTAINTY not in out:
            raise ValueError("the model predicts no uncertainty (fit LLPR, or train an "
                             "ensemble: equipot-train ensemble.size=K)")
        if measure == "forces":
            values = scatter_max(out[keys.FORCES_UNCERTAINTY], batch[keys.BATCH],
                                 batch.num_graphs)
        else:
            values = out[keys.ENERGY_UNCERTAINTY] / torch.bincount(batch[keys.BATCH])
        uncertainties.append(values.detach().double().cpu().numpy())
        prints.append(fingerprints(model, batch).cpu().numpy())
    return np.concatenate(uncertainties), np.concatenate(prints)


def select_diverse(uncertainties: np.ndarray, prints: np.ndarray, count: int) -> list[int]:
    """Indices of ``count`` candidates by the greedy rule of the module docstring."""
    count = min(count, len(uncertainties))
    if count == 0:
        return []
    distances = np.linalg.norm(prints[:, None, :] - prints[None, :, :], axis=-1)
    nearest = np.where(np.eye(len(prints), dtype=bool), np.inf, distances).min(axis=1)
    typical = float(np.median(nearest[np.isfinite(nearest)])) if len(prints) > 1 else 1.0
    typical = typical if typical > 0 else 1.0
    picked = [int(np.argmax(uncertainties))]
    closest = distances[picked[0]].copy()
    while len(picked) < count:
        scores = uncertainties * np.minimum(1.0, closest / typical)
        scores[picked] = -np.inf
        best = int(np.argmax(scores))
        picked.append(best)
        closest = np.minimum(closest, distances[best])
    return picked
