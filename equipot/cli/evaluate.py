"""``equipot-evaluate``: error metrics of a model on any data file.

    equipot-evaluate runs/x/model.pt test.xyz [--output-dir DIR]
    equipot-evaluate runs/tuned/model.pt test.xyz --against source   # beside its source

Prints a table of MAE and RMSE, writes ``metrics.json`` and parity plots (PNG) of per-atom
energies and force components to DIR (default: ``evaluation/<data file stem>`` beside the model).
For a model that predicts uncertainties (LLPR, an ensemble), also how well they rank and match
the errors (Spearman, miscalibration area, NLL; ``equipot.uncertainty.scores``) and
``calibration.png``, observed RMSE against predicted σ. ``--against MODEL`` scores a second
model on the same structures and prints both side by side (``source``: the model a fine-tuned
one started from, as its file records): on the structures made of elements both models know,
when the second lacks some; ``metrics.json`` then holds its metrics too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from equipot import keys
from equipot.analysis.calibration_plot import write_calibration_plot
from equipot.analysis.evaluation import evaluate, format_comparison, format_table
from equipot.analysis.plots import write_parity_plots
from equipot.cli import exit_on_error
from equipot.data.dataset import GraphDataset
from equipot.data.reading import LabelKeys
from equipot.errors import EquipotInputError
from equipot.io import atomic_write_text
from equipot.model.checkpoint import load
from equipot.train.metrics import units_by_quantity
from equipot.train.statistics import element_counts
from equipot.uncertainty.scores import format_uncertainty_table


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="equipot-evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="model file (model.pt)")
    parser.add_argument("data", type=Path, help="structures with reference labels")
    parser.add_argument("--output-dir", type=Path, default=None)
    parser.add_argument("--batch-size", type=int, default=1,
                        help="structures per batch; 1 reproduces the calculator bit for bit, "
                             "more is faster (float32 rounding then differs, ~1e-7 relative)")
    parser.add_argument("--device", default="cpu")
    for option in LabelKeys.options():  # --energy-key, --forces-key, …
        parser.add_argument(f"--{option.replace('_', '-')}", metavar="KEY",
                            help=f"where structures keep the {option.removesuffix('_key')} "
                                 f"label; 'none' ignores it")
    parser.add_argument("--no-cache", action="store_true", help="do not cache the graphs")
    parser.add_argument("--against", metavar="MODEL",
                        help="a second model file to score side by side; 'source': the model "
                             "this one was fine-tuned from")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    model = load(args.model, device=args.device)
    label_keys = LabelKeys.from_options(
        {option: None if getattr(args, option).lower() == "none" else getattr(args, option)
         for option in LabelKeys.options() if getattr(args, option) is not None})
    dataset = GraphDataset.from_file(args.data, model.cutoff, label_keys,
                                     cache_dir=False if args.no_cache else None)
    model.check_species(dataset.tensors[keys.ATOMIC_NUMBERS].numpy(), source=str(args.data))
    result = evaluate(model, dataset, batch_size=args.batch_size)
    output_dir = args.output_dir or args.model.parent / "evaluation" / args.data.stem
    report = {"model": str(args.model), "data": str(args.data),
              "num_structures": result.num_structures, "labelled": dataset.label_counts(),
              "metrics": result.metrics,
              "units": units_by_quantity()}
    print(f"{dataset.describe()}\n{format_table(result.metrics)}")
    if args.against is not None:
        other_path = compared_model(args.against, model, args.model)
        other = load(other_path, device=args.device)
        known = structures_made_of(dataset, other.species)
        if not len(known):
            raise EquipotInputError(f"no structure is made of the elements {other_path} knows "
                                    f"({other.species}): nothing to compare", str(args.data))
        shared = dataset if len(known) == len(dataset) else GraphDataset.subset(dataset, known)
        mine = (result.metrics if shared is dataset
                else evaluate(model, shared, batch_size=args.batch_size).metrics)
        against = evaluate(other, shared, batch_size=args.batch_size).metrics
        if shared is not dataset:
            print(f"side by side on the {len(known)} structures made of the elements "
                  f"{other_path} knows ({other.species}):")
        print(format_comparison({str(args.model): mine, str(other_path): against}))
        report["against"] = {"model": str(other_path), "num_structures": len(known),
                             "metrics": against, "metrics_of_model": mine}
    if result.uncertainty:
        print(format_uncertainty_table(result.uncertainty))
        report["uncertainty"] = result.uncertainty
    atomic_write_text(json.dumps(report, indent=2), output_dir / "metrics.json")
    plots = write_parity_plots(result.pairs, output_dir)
    if result.uncertainty_pairs:
        plots.append(write_calibration_plot(result.uncertainty_pairs,
                                            output_dir / "calibration.png"))
    print(f"wrote {output_dir / 'metrics.json'} and {', '.join(p.name for p in plots)}")
    return result.metrics


def structures_made_of(dataset: GraphDataset, species: list[int]) -> torch.Tensor:
    """Indices of the structures of ``dataset`` whose elements are all among ``species``."""
    present = sorted(int(z) for z in dataset.tensors[keys.ATOMIC_NUMBERS].unique())
    unknown = [column for column, z in enumerate(present) if z not in species]
    counts = torch.from_numpy(element_counts(dataset, present))
    return torch.nonzero(counts[:, unknown].sum(1) == 0).flatten()


def compared_model(against: str, model, path: Path) -> Path:
    """The model file ``--against`` names: a path, or ``source``, the file ``model`` (read
    from ``path``) was fine-tuned from."""
    if against != "source":
        return Path(against)
    source = (model.metadata.get("finetune") or {}).get("source")
    if source is None:
        raise EquipotInputError("--against source: this model was not fine-tuned (its file "
                                "records no source)", source=str(path))
    return Path(source["path"])


def main(argv=None) -> None:
    exit_on_error("equipot-evaluate", lambda: run(parse_arguments(argv)))


if __name__ == "__main__":
    main()
