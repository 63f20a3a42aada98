"""``equipot-predict``: a model's predictions for every structure of a file, no labels needed.

    equipot-predict runs/x/model.pt structures.xyz -o predicted.xyz [--batch-size ATOMS]

Reads any file ASE reads and writes extended XYZ: each structure as it was read (its own
labels kept), plus the model's ``equipot_energy`` (eV), ``equipot_stress`` (eV/Å³, Voigt
order, periodic cells), ``equipot_energy_uncertainty`` and ``equipot_dipole`` in ``info``, and
``equipot_forces`` (eV/Å), ``equipot_energies`` (eV) and, where the model gives them,
``equipot_charges``, ``equipot_forces_uncertainty`` and ``equipot_energies_uncertainty`` in
``arrays`` (``--prefix`` changes ``equipot_``). The values are ``EquipotCalculator``'s,
computed in batches (``equipot.predict``). Nothing is written if a structure is bad: the error
names the file, the structure and the field.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ase.io
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator

from equipot.cli import exit_on_error
from equipot.data.reading import read_structures
from equipot.io import atomic_path
from equipot.model.build import DTYPES
from equipot.model.checkpoint import load
from equipot.predict import BATCH_ATOMS, predict

PER_STRUCTURE = ("energy", "stress", "dipole", "energy_uncertainty")
PER_ATOM = ("forces", "energies", "charges", "forces_uncertainty", "energies_uncertainty")


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="equipot-predict", description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="model file (model.pt)")
    parser.add_argument("structures", type=Path, help="structures (any format ASE reads)")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="extended XYZ file to write")
    parser.add_argument("--batch-size", type=int, default=BATCH_ATOMS,
                        help="atoms per batch (a larger structure runs alone)")
    parser.add_argument("--prefix", default="equipot_", help="of the keys written")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="default: the dtype the model was trained in")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def annotated(atoms: ase.Atoms, results: dict, prefix: str) -> ase.Atoms:
    """A copy of ``atoms`` (with the labels ASE read into its calculator) holding ``results``
    under ``prefix``ed keys."""
    labels = atoms.calc.results if atoms.calc is not None else {}
    atoms = atoms.copy()
    if labels:
        atoms.calc = SinglePointCalculator(atoms, **labels)
    for name in PER_STRUCTURE:
        if name in results:
            atoms.info[prefix + name] = results[name]
    for name in PER_ATOM:
        if name in results:
            atoms.arrays[prefix + name] = np.asarray(results[name], dtype=np.float64)
    return atoms


def run(args: argparse.Namespace) -> list[dict]:
    model = load(args.model, device=args.device, dtype=DTYPES.get(args.dtype))
    structures = read_structures(args.structures)
    results = predict(model, structures, args.batch_size, source=str(args.structures),
                      progress=not args.no_progress)
    with atomic_path(args.output) as temporary:
        ase.io.write(temporary, [annotated(atoms, result, args.prefix)
                                 for atoms, result in zip(structures, results)], format="extxyz")
    print(f"wrote the predictions for {len(structures)} structures to {args.output}")
    return results


def main(argv=None) -> None:
    exit_on_error("equipot-predict", lambda: run(parse_arguments(argv)))


if __name__ == "__main__":
    main()
