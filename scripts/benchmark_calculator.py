"""What a calculator call costs: MD-like calls (every atom moved ~0.003 Å, as in a 0.5 fs
step) through ``EquipotCalculator`` with its default Verlet skin, eager and with
``compile=True``, with ``skin=0`` (a neighbour search every call), the way it was before the
skin list (a search, then ``atoms_to_graph`` and ``Batch.from_data_list``), and the eager
model alone on a batch built beforehand. Energy and forces (and stress on the cell), eval mode,
random weights of the config's model; milliseconds, median of ``--repeats`` calls per
variant, the variants alternating call by call, or every ``--block`` calls as in an MD loop
(the compiled one compiles in its warm-up). ``--exported`` adds the model exported by
``equipot-export`` (ahead-of-time compiled; exporting takes minutes).
Run from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_calculator.py [--rows model=schnet ...]
"""

import argparse
import tempfile
import time
from pathlib import Path

import ase.build
import numpy as np
import torch
from benchmark_models import STATISTICS, model_configs, periodic_cell  # scripts/
from torch_geometric.data import Batch

from equipot import EquipotCalculator
from equipot.data.graph import atoms_to_graph
from equipot.model.build import build_potential
from equipot.model.exported import export_model


def old_path(model, atoms):
    """The calculator's work before the skin list: a fresh graph and a collated batch."""
    periodic = bool(atoms.pbc.any())
    batch = Batch.from_data_list([atoms_to_graph(atoms, model.cutoff)])
    out = model(batch, compute_forces=True, compute_stress=periodic)
    return out["forces"].detach().numpy()


def timings(model, atoms, repeats: int, block: int, exported=None) -> dict[str, float]:
    """Median ms per call of each variant, alternating every ``block`` calls; with the
    package ``exported`` of the model, its calls too."""
    start = atoms.positions.copy()
    calculators = {"compiled": EquipotCalculator(model, compile=True),
                   "eager": EquipotCalculator(model),
                   "eager, skin 0": EquipotCalculator(model, skin=0.0)}
    if exported is not None:
        calculators["exported"] = EquipotCalculator(exported)
    prebuilt = Batch.from_data_list([atoms_to_graph(atoms, model.cutoff)])
    periodic = bool(atoms.pbc.any())
    variants = {
        **{name: (lambda c=c, a=atoms: (setattr(a, "calc", c), a.get_forces()))
           for name, c in calculators.items()},
        "before (search + collate)": lambda: old_path(model, atoms),
        "model alone": lambda: model(prebuilt, compute_forces=True, compute_stress=periodic),
    }
    times = {name: [] for name in variants}
    for first in range(0, repeats + 3, block):
        for name, call in variants.items():
            for step in range(first, min(first + block, repeats + 3)):
                atoms.positions = start + 0.003 * np.sin(step + np.arange(start.size)).reshape(
                    start.shape)
                began = time.perf_counter()
                call()
                if step >= 3:
                    times[name].append(time.perf_counter() - began)
    return {name: 1e3 * float(np.median(values)) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=["model=schnet", "model=painn",
                                                      "experiment=ethanol_mace"])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--cell-repeats", type=int, default=5)
    parser.add_argument("--block", type=int, default=1, help="calls of a variant in a row")
    parser.add_argument("--structures", nargs="+", default=["ethanol", "1000-atom cell"])
    parser.add_argument("--exported", action="store_true",
                        help="also time the model exported by equipot-export (compiles first)")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    configs = model_configs()
    ethanol = ase.build.molecule("CH3CH2OH")
    print("| config | structure | compiled | eager | eager, skin 0 | "
          + ("exported | " if arguments.exported else "")
          + "before (search + collate) | model alone |")
    print("|---|---|---:|---:|---:|---:|---:|" + ("---:|" if arguments.exported else ""))
    directory = tempfile.TemporaryDirectory()
    for row in arguments.rows:
        torch.manual_seed(0)
        model = build_potential({**configs[row], **STATISTICS}).eval()
        exported = (export_model(model, Path(directory.name) / f"{row}.pt2")
                    if arguments.exported else None)
        for label, atoms, repeats in (("ethanol", ethanol, arguments.repeats),
                                      ("1000-atom cell", periodic_cell(),
                                       arguments.cell_repeats)):
            if label not in arguments.structures:
                continue
            ms = timings(model, atoms.copy(), repeats, arguments.block, exported)
            print(f"| `{row}` | {label} | " + " | ".join(f"{value:.2f}" for value in ms.values())
                  + " |", flush=True)


if __name__ == "__main__":
    main()
