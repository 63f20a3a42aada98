"""``equipot-select``: pick the structures to label next, by predicted uncertainty.

    equipot-select runs/x/model.pt candidates.xyz -n 50 -o picked.xyz

The model must predict uncertainties (LLPR, fitted by equipot-train, or an ensemble). Picks
the most uncertain candidates, skipping near-copies of those already picked
(``equipot.uncertainty.selection``), and writes them, in the order picked, with
``info["uncertainty"]`` and ``info["candidate_index"]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ase.io

from equipot.cli import exit_on_error
from equipot.data.graph import atoms_to_graph
from equipot.data.reading import read_structures
from equipot.errors import EquipotInputError
from equipot.io import atomic_path
from equipot.model.checkpoint import load
from equipot.uncertainty.selection import MEASURES, score, select_diverse


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="equipot-select", description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="model file (model.pt) with an uncertainty")
    parser.add_argument("candidates", type=Path, help="structures to choose from (any ASE format)")
    parser.add_argument("-n", "--count", type=int, required=True, help="how many to pick")
    parser.add_argument("-o", "--output", type=Path, required=True, help="where to write them")
    parser.add_argument("--by", choices=MEASURES, default="forces",
                        help="forces: the largest σ of an atom's force components (eV/Å); "
                             "energy: σ of the energy per atom (eV/atom)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> list[int]:
    if args.count < 1:
        raise EquipotInputError(f"-n must be at least 1, got {args.count}", field="count")
    model = load(args.model, device=args.device)
    if "uncertainty" not in model.config:
        raise EquipotInputError("the model predicts no uncertainty (train it with "
                                "uncertainty.llpr=true, the default, or ensemble.size=K)",
                                source=args.model)
    candidates = read_structures(args.candidates)
    graphs = []  # checked and built once, each error naming the file and the structure
    for index, atoms in enumerate(candidates):
        model.check_species(atoms.numbers, source=str(args.candidates), index=index)
        graphs.append(atoms_to_graph(atoms, model.cutoff, source=str(args.candidates),
                                     index=index))
    uncertainties, prints = score(model, graphs, args.by, args.batch_size)
    picked = select_diverse(uncertainties, prints, args.count)
    chosen = []
    for index in picked:
        atoms = candidates[index].copy()
        atoms.info.update(uncertainty=float(uncertainties[index]), candidate_index=index)
        chosen.append(atoms)
    with atomic_path(args.output) as temporary:
        ase.io.write(temporary, chosen, format="extxyz")
    unit = "eV/Å" if args.by == "forces" else "eV/atom"
    print(f"picked {len(picked)} of {len(candidates)} candidates into {args.output}; "
          f"uncertainty ({args.by}) of the picked {uncertainties[picked].min():.4g}–"
          f"{uncertainties[picked].max():.4g} {unit}, of all {uncertainties.min():.4g}–"
          f"{uncertainties.max():.4g} {unit}")
    return picked


def main(argv=None) -> None:
    exit_on_error("equipot-select", lambda: run(parse_arguments(argv)))


if __name__ == "__main__":
    main()
