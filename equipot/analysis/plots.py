"""Parity plots (prediction against reference) written as PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from equipot import keys
from equipot.io import atomic_path


def axis_name(name: str) -> tuple[str, str]:
    """What the parity plot of label ``name`` shows, and its unit: "energy per atom" (eV/atom)
    for a ``per_atom`` label, "force components" (eV/Å) for one with components."""
    label = keys.label(name)
    if label.per_atom:
        return f"{label.noun} per atom", f"{label.unit}/atom"
    return (f"{label.noun} components" if label.shape else label.noun), label.unit


def write_parity_plots(pairs: dict[str, tuple[np.ndarray, np.ndarray]], directory: Path
                       ) -> list[Path]:
    """One ``parity_<label>.png`` per label in ``pairs``; returns the paths written."""
    from matplotlib.figure import Figure  # imported where used: no backend is switched

    written = []
    for field, (reference, predicted) in pairs.items():
        name, unit = axis_name(field)
        figure = Figure(figsize=(4.5, 4.5))
        axis = figure.subplots()
        axis.scatter(reference, predicted, s=3, alpha=0.5)
        low, high = min(reference.min(), predicted.min()), max(reference.max(), predicted.max())
        axis.plot([low, high], [low, high], color="black", linewidth=0.8)
        mae = np.abs(predicted - reference).mean()
        axis.set(xlabel=f"reference {name} ({unit})", ylabel=f"predicted {name} ({unit})",
                 title=f"{name}: MAE {1000 * mae:.2f} m{unit}")
        figure.tight_layout()
        path = Path(directory) / f"parity_{field}.png"
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=120, format="png")
        written.append(path)
    return written
