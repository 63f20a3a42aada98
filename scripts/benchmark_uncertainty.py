"""Uncertainty of an ensemble run and of its members' LLPR, in and out of distribution.

Scores ``<run>/model.pt`` (the ensemble) and ``<run>/members/<k>/model.pt`` (one member, with
the last-layer prediction rigidity fitted at the end of its training; ``--members``, by default
0) on an in-distribution test set and on held-out structures further away (by default
acetylacetone's 300 K test set and the 500 structures of its 600 K file, which no bundled
experiment trains on), and on both pooled. Columns: force MAE (meV/Å); mean predicted σ of a
force component (meV/Å); Spearman's rank correlation of σ and error per structure (force RMSE
against RMS σ), per atom, and for energies; miscalibration area of force components and
energies; NLL of force components. Run from the repository root after e.g. ``equipot-train
experiment=acac_mace ensemble.size=4 hydra.run.dir=runs/acac_ensemble``:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_uncertainty.py runs/acac_ensemble
"""

import argparse
import json
from pathlib import Path

import numpy as np
import yaml
from torch_geometric.loader import DataLoader

import equipot
from equipot.analysis.evaluation import UncertaintyPairs
from equipot.data.dataset import GraphDataset
from equipot.datasets import bundled
from equipot.finetune.source import load_source
from equipot.uncertainty.fitting import fit_llpr
from equipot.uncertainty.scores import uncertainty_report


def collect(model, dataset) -> dict[str, np.ndarray]:
    """Errors and σ of energies and forces over ``dataset`` (arrays of UncertaintyPairs)."""
    pairs, first = UncertaintyPairs(), 0
    for batch in DataLoader(dataset, batch_size=16, shuffle=False):
        pairs.add(model(batch, compute_forces=True), batch, first)
        first += batch.num_graphs
    return {name: np.concatenate(values) for name, values in pairs.parts.items()}


def pooled(a: dict, b: dict) -> dict:
    offset = a["force_structures"].max() + 1
    return {name: np.concatenate([a[name], b[name] + (offset if name == "force_structures"
                                                       else 0)]) for name in a}


def row(method: str, name: str, arrays: dict) -> str:
    report = uncertainty_report(**arrays)
    forces, energy = report["forces"], report["energy"]
    return (f"| {method} | {name} | {1000 * np.abs(arrays['force_errors']).mean():.1f} | "
            f"{1000 * arrays['force_sigmas'].mean():.1f} | "
            f"{report['forces_per_structure']['spearman']:.2f} | {forces['spearman']:.2f} | "
            f"{energy['spearman']:.2f} | {forces['miscalibration_area']:.3f} | "
            f"{energy['miscalibration_area']:.3f} | {forces['nll']:.2f} |")


def refit_llpr(path: Path, run: Path):
    """The model of ``path`` (its network: any uncertainty it has is dropped) with its LLPR
    fitted on the split of ``run`` (config.yaml, split_indices.json)."""
    model = load_source(path)
    settings = yaml.safe_load((run / "config.yaml").read_text())
    split = json.loads((run / "split_indices.json").read_text())
    everything = GraphDataset.from_file(settings["data"]["train"], model.cutoff)
    train, valid = (GraphDataset.subset(everything, split[name]) for name in ("train", "valid"))
    return fit_llpr(model, train, valid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="an ensemble run directory")
    parser.add_argument("--near", type=Path, default=Path(bundled("acac/test_MD_300K.xyz")))
    parser.add_argument("--far", type=Path, default=Path(bundled("acac/train_600K.xyz")))
    parser.add_argument("--refit-llpr", action="store_true",
                        help="fit the members' LLPR again, on the run's own training and "
                             "validation split (for a run written by an older equipot)")
    parser.add_argument("--members", type=int, nargs="+", default=[0],
                        help="the members whose LLPR is scored")
    arguments = parser.parse_args()
    models = {"ensemble": equipot.load(arguments.run / "model.pt")}
    for k in arguments.members:
        path = arguments.run / "members" / str(k) / "model.pt"
        models[f"LLPR (member {k})"] = (refit_llpr(path, arguments.run) if arguments.refit_llpr
                                        else equipot.load(path))
    print("| method | structures | F MAE | mean σ_F | Spearman F/structure | F/atom | E | "
          "miscal. F | miscal. E | NLL F |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for method, model in models.items():
        sets = {path.stem: collect(model, GraphDataset.from_file(path, model.cutoff))
                for path in (arguments.near, arguments.far)}
        near, far = sets.values()
        for name, arrays in [*sets.items(), ("pooled", pooled(near, far))]:
            print(row(method, name, arrays), flush=True)
        ratio = far["force_sigmas"].mean() / near["force_sigmas"].mean()
        print(f"| {method} | mean σ_F far / near | {ratio:.2f} | | | | | | | |", flush=True)
        fitted = {name: value for name, value in model.config["uncertainty"].items()
                  if name != "method"}
        print(f"<!-- {method}: {fitted} -->", flush=True)


if __name__ == "__main__":
    main()
