"""Inference and training-step cost of each interaction block, on this machine.

For every block in ``equipot.model.build.BLOCKS`` with its ``configs/model/<block>.yaml``:
parameters; milliseconds per energy+forces call (eval mode) on ethanol (9 atoms) and on a
1 000-atom periodic copper-oxygen cell (the model's cutoff); milliseconds per training step
(forces loss, double backward, AdamW) on a batch of 8 ethanol configurations. Best of 20
calls after 3 warm-up calls (best of 5 after 1 for the 1 000-atom cell). Run from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_models.py
"""

from pathlib import Path

import ase.build
import numpy as np
import torch
import yaml
from torch_geometric.data import Batch

from equipot import keys
from equipot.data.graph import atoms_to_graph
from equipot.data.reading import read_structures
from equipot.datasets import bundled
from equipot.model.build import BLOCKS, build_potential
from equipot.train.loss import WeightedLoss
from timing import best_ms  # scripts/timing.py

CONFIGS = Path(__file__).parents[1] / "configs" / "model"
STATISTICS = {"species": [1, 6, 8, 29], "reference_energies": [0.0] * 4, "shift": 0.0,
              "scale": 1.0, "avg_num_neighbors": 20.0}


def periodic_cell() -> ase.Atoms:
    """1 000 atoms: fcc Cu 5×5×5 (500) with O on octahedral sites (500), rattled."""
    atoms = ase.build.bulk("CuO", "rocksalt", a=4.2, cubic=True).repeat(5)
    atoms.rattle(0.05, seed=0)
    return atoms


def main() -> None:
    ethanol = read_structures(bundled("rmd17_ethanol/test.xyz"))[:8]
    print("| block | parameters | ethanol E+F ms | 1000-atom cell E+F ms | train step ms (8 ethanol) |")
    print("|---|---:|---:|---:|---:|")
    for name in BLOCKS:
        config = {**yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()), **STATISTICS}
        torch.manual_seed(0)
        model = build_potential(config)
        parameters = sum(p.numel() for p in model.parameters())
        molecule = Batch.from_data_list([atoms_to_graph(ethanol[0], model.cutoff)])
        cell = Batch.from_data_list([atoms_to_graph(periodic_cell(), model.cutoff)])
        training = Batch.from_data_list([atoms_to_graph(a, model.cutoff, {
            keys.ENERGY: np.array(a.get_potential_energy()), keys.FORCES: a.get_forces()})
            for a in ethanol])

        model.eval()
        molecule_ms = best_ms(lambda: model(molecule), repeats=20, warmup=3)
        cell_ms = best_ms(lambda: model(cell))

        model.train()
        loss = WeightedLoss(energy_weight=0.0, forces_weight=1.0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            optimizer.zero_grad()
            loss(model(training), training)["total"].backward()
            optimizer.step()

        step_ms = best_ms(step, repeats=20, warmup=3)
        print(f"| {name} | {parameters} | {molecule_ms:.2f} | {cell_ms:.1f} | {step_ms:.2f} |")


if __name__ == "__main__":
    main()
