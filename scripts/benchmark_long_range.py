"""Long-range benchmark: model errors by fragment separation, and energy curves beyond the cutoff.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_long_range.py \\
        runs/local/model.pt runs/ewald/model.pt --labels local ewald --output-dir long_range

For every model, on the test sets of ``equipot/datasets/long_range`` (molecular pairs and the
periodic ion pair): energy MAE (meV, whole structure) and force MAE (meV/Å) per system, below
and beyond the cutoff, and over all systems in finer separation bins. Written to
``errors.md``. Along the rigid scans: E(s) − E(s_max) of GFN2-xTB and of each model against the
separation s, one panel per system, in ``scan.png`` and ``scan.csv`` (absolute energies, eV).
"""

from __future__ import annotations

import argparse
import csv
import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import equipot  # noqa: E402
from equipot import keys  # noqa: E402
from equipot.analysis.evaluation import evaluate  # noqa: E402
from equipot.data.dataset import GraphDataset  # noqa: E402
from equipot.data.reading import read_structures  # noqa: E402
from equipot.datasets import bundled  # noqa: E402
from equipot.io import atomic_path, atomic_write_text  # noqa: E402

TEST_FILES = ("test.xyz", "periodic_test.xyz")
SCAN_FILES = ("scan.xyz", "periodic_scan.xyz")
FINE_BINS = (0.0, 3.0, 5.0, 8.0, np.inf)  # Å, separation bin edges of the all-systems table


@dataclass
class Predictions:
    """Reference and predicted labels of one set of structures, with their metadata."""

    system: np.ndarray  # [G] system names, "(periodic)" appended in a cell
    separation: np.ndarray  # [G] Å, shortest distance between the two fragments
    energy: tuple[np.ndarray, np.ndarray]  # ([G], [G]) eV: reference, predicted
    force_errors: list[np.ndarray]  # G arrays [3 N_g], eV/Å


def predict(model, files: list[Path], batch_size: int) -> Predictions:
    """Run ``model`` over every structure of ``files``."""
    systems, separations, references, predictions, force_errors = [], [], [], [], []
    for path in files:
        structures = read_structures(path)
        dataset = GraphDataset.from_atoms(structures, model.cutoff, source=str(path))
        model.check_species(dataset.tensors[keys.ATOMIC_NUMBERS].numpy(), source=str(path))
        result = evaluate(model, dataset, batch_size=batch_size)
        num_atoms = np.array([len(atoms) for atoms in structures])
        reference, predicted = result.pairs[keys.ENERGY]  # eV/atom
        references.append(reference * num_atoms)
        predictions.append(predicted * num_atoms)
        force_reference, force_predicted = result.pairs[keys.FORCES]
        force_errors += np.split(force_predicted - force_reference, 3 * np.cumsum(num_atoms)[:-1])
        systems += [atoms.info["system"] + (" (periodic)" if atoms.pbc.any() else "")
                    for atoms in structures]
        separations += [atoms.info["separation"] for atoms in structures]
    return Predictions(np.array(systems), np.array(separations),
                       (np.concatenate(references), np.concatenate(predictions)), force_errors)


def mae_cells(result: Predictions, selected: np.ndarray) -> str:
    """Energy MAE (meV) and force MAE (meV/Å) of the ``selected`` structures as two cells."""
    if not selected.any():
        return " – | – |"
    reference, predicted = result.energy
    energy = 1e3 * np.abs(predicted - reference)[selected].mean()
    forces = 1e3 * np.abs(np.concatenate([result.force_errors[index]
                                          for index in np.nonzero(selected)[0]])).mean()
    return f" {energy:.1f} | {forces:.1f} |"


def error_tables(results: dict[str, Predictions], cutoff: float) -> str:
    """Markdown tables: by system below/beyond ``cutoff``, then all systems by finer bins."""
    first = next(iter(results.values()))
    header = "| n |" + "".join(f" {label} E | {label} F |" for label in results)
    rule = "|---|---|---:|" + "---:|---:|" * len(results)
    lines = ["Energy MAE in meV (whole structure), force MAE in meV/Å; separation s is the "
             "shortest distance between the two fragments.", "",
             "| system | s (Å) " + header, rule]
    for system in sorted(set(first.system)):
        for name, beyond in ((f"< {cutoff:g}", False), (f"> {cutoff:g}", True)):
            selected = (first.system == system) & ((first.separation > cutoff) == beyond)
            lines.append(f"| {system} | {name} | {selected.sum()} |" + "".join(
                mae_cells(result, selected) for result in results.values()))
    lines += ["", "| all systems | s (Å) " + header, rule]
    bins = list(zip(FINE_BINS[:-1], FINE_BINS[1:])) + [(0.0, cutoff), (cutoff, np.inf)]
    for low, high in bins:
        selected = (first.separation >= low) & (first.separation < high)
        name = f"{low:g}–{high:g}" if np.isfinite(high) else f"> {low:g}"
        lines.append(f"| all | {name} | {selected.sum()} |" + "".join(
            mae_cells(result, selected) for result in results.values()))
    beyond = first.separation > cutoff
    mae = {label: np.abs(result.energy[1] - result.energy[0])[beyond].mean()
           for label, result in results.items()}
    baseline = next(iter(mae))
    lines += ["", f"Energy MAE beyond {cutoff:g} Å, {baseline} ÷ model: " + ", ".join(
        f"{label} {mae[baseline] / value:.2f}×" for label, value in mae.items())]
    return "\n".join(lines) + "\n"


def write_scans(scans: dict[str, Predictions], output_dir: Path, cutoff: float) -> None:
    """``scan.csv`` (absolute energies) and ``scan.png`` (relative to the farthest point)."""
    first = next(iter(scans.values()))
    systems = list(dict.fromkeys(first.system))
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["system", "separation_angstrom", "xtb_energy_ev",
                     *(f"{label}_energy_ev" for label in scans)])
    for index in range(len(first.system)):
        writer.writerow([first.system[index], f"{first.separation[index]:.4f}",
                         f"{first.energy[0][index]:.6f}",
                         *(f"{scan.energy[1][index]:.6f}" for scan in scans.values())])
    atomic_write_text(table.getvalue(), output_dir / "scan.csv")

    columns = 3
    rows = -(-len(systems) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows),
                                squeeze=False)
    for axis, system in zip(axes.flat, systems):
        selected = first.system == system
        separation = first.separation[selected]
        farthest = np.argmax(separation)
        curves = {"GFN2-xTB": first.energy[0][selected],
                  **{label: scan.energy[1][selected] for label, scan in scans.items()}}
        for label, energy in curves.items():
            axis.plot(separation, energy - energy[farthest], label=label,
                      color="black" if label == "GFN2-xTB" else None,
                      linewidth=2.0 if label == "GFN2-xTB" else 1.2)
        tail = curves["GFN2-xTB"][separation >= cutoff - 1.0]
        tail = tail - curves["GFN2-xTB"][farthest]
        margin = 0.3 * max(np.ptp(tail), 1e-3)
        axis.set_ylim(tail.min() - margin, tail.max() + margin)
        axis.axvline(cutoff, color="grey", linestyle="--", linewidth=0.8)
        axis.set(title=system, xlabel="separation s (Å)", ylabel="E(s) − E(s_max) (eV)")
    for axis in axes.flat[len(systems):]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(output_dir / "scan.png") as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", type=Path, nargs="+", help="model files (model.pt)")
    parser.add_argument("--labels", nargs="+", help="a name per model (default: its folder)")
    parser.add_argument("--data-dir", type=Path, default=Path(bundled("long_range")))
    parser.add_argument("--output-dir", type=Path, default=Path("long_range_benchmark"))
    parser.add_argument("--cutoff", type=float, default=5.0,
                        help="separation (Å) that splits the bins; the models' cutoff")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    labels = args.labels or [path.parent.name for path in args.models]
    if len(labels) != len(args.models) or len(set(labels)) != len(labels):
        parser.error("give one distinct label per model")
    tests, scans = {}, {}
    for label, path in zip(labels, args.models):
        model = equipot.load(path)
        tests[label] = predict(model, [args.data_dir / name for name in TEST_FILES],
                               args.batch_size)
        scans[label] = predict(model, [args.data_dir / name for name in SCAN_FILES],
                               args.batch_size)
    tables = error_tables(tests, args.cutoff)
    print(tables)
    atomic_write_text(tables, args.output_dir / "errors.md")
    write_scans(scans, args.output_dir, args.cutoff)
    print(f"wrote {args.output_dir / 'errors.md'}, scan.csv and scan.png")


if __name__ == "__main__":
    main()
