"""Inference and training-step cost of each interaction block, on this machine.

Rows: every family in ``equipot.blocks.registry.FAMILIES`` with its default ``model=<block>``
config, and the model of every ``experiment=ethanol_<block>`` config (what the equal-budget
comparison in docs/benchmarks.md trains). Columns: parameters; milliseconds per energy+forces
call (eval mode) on ethanol (9 atoms), best of 20 after 3 warm-up calls, and on a 1 000-atom
periodic CuO cell (the model's cutoff), best of 3 after 1; milliseconds per training step
(forces loss, double backward, AdamW) on 8 ethanol configurations, best of 20 after 3, without
and with the dimers of the default dimer-repulsion penalty (``equipot.train.dimer_repulsion``:
4 per element pair, here floored at the covalent radii' sum, the check's fallback) appended.
Run from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_models.py [--no-cell OVERRIDE ...]

``--no-cell model=mace`` leaves out the 1 000-atom cell for that row (printed as "–"): MACE at
the paper's size needs about 20 GiB and 90 s per call there.
"""

import argparse

import ase.build
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from timing import best_ms  # scripts/timing.py
from torch_geometric.data import Batch

from equipot import keys
from equipot.blocks.registry import FAMILIES
from equipot.cli.train import CONFIG_DIR
from equipot.data.graph import atoms_to_graph
from equipot.data.reading import read_structures
from equipot.datasets import bundled
from equipot.model.build import build_potential
from equipot.train.dimer_repulsion import DimerRepulsion
from equipot.train.loss import WeightedLoss

STATISTICS = {"species": [1, 6, 8, 29], "reference_energies": [0.0] * 4, "shift": 0.0,
              "scale": 1.0, "avg_num_neighbors": 20.0}


def periodic_cell() -> ase.Atoms:
    """1 000 atoms: fcc Cu 5×5×5 (500) with O on octahedral sites (500), rattled."""
    atoms = ase.build.bulk("CuO", "rocksalt", a=4.2, cubic=True).repeat(5)
    atoms.rattle(0.05, seed=0)
    return atoms


def model_configs() -> dict[str, dict]:
    """Model section of each benchmarked config, by the override that selects it."""
    configs = {}
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for override in [f"model={name}" for name in FAMILIES] + [
                f"experiment=ethanol_{name}" for name in FAMILIES]:
            config = compose("train", overrides=[override, "data.train=unused.xyz"])
            configs[override] = OmegaConf.to_container(config.model, resolve=True)
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-cell", nargs="*", default=[], metavar="OVERRIDE",
                        help="rows whose 1 000-atom cell call is not timed")
    parser.add_argument("--only", nargs="*", default=None, metavar="OVERRIDE",
                        help="time these rows alone (e.g. experiment=ethanol_nequip)")
    arguments = parser.parse_args()
    no_cell = set(arguments.no_cell)
    ethanol = read_structures(bundled("rmd17_ethanol/test.xyz"))[:8]
    print("| config | parameters | ethanol E+F ms | 1000-atom cell E+F ms "
          "| train step ms (8 ethanol) | with dimer repulsion |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, model_config in model_configs().items():
        if arguments.only is not None and name not in arguments.only:
            continue
        torch.manual_seed(0)
        model = build_potential({**model_config, **STATISTICS})
        parameters = sum(p.numel() for p in model.parameters())
        molecule = Batch.from_data_list([atoms_to_graph(ethanol[0], model.cutoff)])
        cell = Batch.from_data_list([atoms_to_graph(periodic_cell(), model.cutoff)])
        training = Batch.from_data_list([atoms_to_graph(a, model.cutoff, {
            keys.ENERGY: np.array(a.get_potential_energy()), keys.FORCES: a.get_forces()})
            for a in ethanol])

        model.eval()
        molecule_ms = best_ms(lambda: model(molecule), repeats=20, warmup=3)
        cell_ms = "–" if name in no_cell else f"{best_ms(lambda: model(cell), repeats=3):.1f}"

        model.train()
        loss = WeightedLoss(kind="mse", huber_delta=0.01, energy_weight=0.0, forces_weight=1.0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        penalty = DimerRepulsion(model.species, None, getattr(model.distance_floor, "floor", None),
                                 weight=1.0, margin=0.05, samples_per_pair=4)

        def step(dimers: bool):
            optimizer.zero_grad()
            if dimers:
                predicted, repulsion = penalty(model(penalty.append_to(training)), training)
            else:
                predicted, repulsion = model(training), 0.0
            (loss(predicted, training)["total"] + repulsion).backward()
            optimizer.step()

        step_ms, dimers_ms = (best_ms(lambda: step(dimers), repeats=20, warmup=3)
                              for dimers in (False, True))
        print(f"| `{name}` | {parameters} | {molecule_ms:.2f} | {cell_ms} | {step_ms:.2f} "
              f"| {dimers_ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()
