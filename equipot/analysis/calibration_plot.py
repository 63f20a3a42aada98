"""The calibration plot: observed RMSE against predicted σ in bins, with the diagonal."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from equipot.io import atomic_path
from equipot.uncertainty.scores import binned_rmse

TITLES = {"energy": ("energy", "eV"), "forces": ("force components", "eV/Å")}


def write_calibration_plot(pairs: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """``pairs``: quantity ("energy", "forces") → (errors [items, components], σ [items]);
    one panel each, log–log, RMSE of each σ bin against its RMS σ."""
    from matplotlib.figure import Figure  # imported where used: no backend is switched
    from matplotlib.ticker import NullFormatter

    figure = Figure(figsize=(4.5 * len(pairs), 4.3))
    axes = np.atleast_1d(figure.subplots(1, len(pairs)))
    for axis, (quantity, (errors, sigmas)) in zip(axes, pairs.items()):
        name, unit = TITLES[quantity]
        errors = np.asarray(errors).reshape(len(sigmas), -1)
        components = np.repeat(np.asarray(sigmas)[:, None], errors.shape[1], axis=1)
        sigma, rmse = binned_rmse(errors, components)
        axis.loglog(sigma, rmse, "o-", label="observed, bins of equal count")
        low, high = min(sigma.min(), rmse.min()), max(sigma.max(), rmse.max())
        axis.plot([low, high], [low, high], color="black", linewidth=0.8, label="RMSE = σ")
        axis.set(xlabel=f"predicted σ ({unit})", ylabel=f"observed RMSE ({unit})", title=name)
        for ticks in (axis.xaxis, axis.yaxis):  # minor labels of a log axis overlap
            ticks.set_minor_formatter(NullFormatter())
        axis.legend()
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    return Path(path)
