"""Batch prediction against the calculator in a loop: the 1 000 bundled ethanols (train then
test set), energy and forces of each, through ``equipot.predict`` (default batch of 4096
atoms) and through ``EquipotCalculator`` called structure after structure (its default skin;
each structure is a new one to it). Random weights of the config's model, float32; seconds
for all 1 000, best of ``--repeats``, the two alternating, and the largest differences per
structure (energy relative, forces absolute). Run from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_predict.py [--rows model=schnet ...]
"""

import argparse
import time

import numpy as np
import torch
from benchmark_models import STATISTICS, model_configs  # scripts/

from equipot import EquipotCalculator, predict
from equipot.data.reading import read_structures
from equipot.datasets import bundled
from equipot.model.build import build_potential


def calculator_loop(model, structures) -> list[dict]:
    calculator = EquipotCalculator(model)
    results = []
    for atoms in structures:
        calculator.calculate(atoms, ["energy", "forces"])
        results.append(dict(calculator.results))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=["model=schnet", "model=painn",
                                                      "experiment=ethanol_mace"])
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    structures = (read_structures(bundled("rmd17_ethanol/train.xyz"))
                  + read_structures(bundled("rmd17_ethanol/test.xyz")))
    for structure in structures:
        structure.calc = None
    configs = model_configs()
    print(f"| config | calculator loop, s | equipot.predict, s | speed-up | max ΔE/E "
          f"| max ΔF, eV/Å |  ({len(structures)} ethanols)")
    print("|---|---:|---:|---:|---:|---:|")
    for row in arguments.rows:
        torch.manual_seed(0)
        model = build_potential({**configs[row], **STATISTICS}).eval()
        runs = {"loop": lambda: calculator_loop(model, structures),
                "predict": lambda: predict(model, structures)}
        seconds = {name: [] for name in runs}
        results = {}
        for _ in range(arguments.repeats):
            for name, run in runs.items():
                began = time.perf_counter()
                results[name] = run()
                seconds[name].append(time.perf_counter() - began)
        energy = max(abs(a["energy"] - b["energy"]) / abs(a["energy"])
                     for a, b in zip(results["loop"], results["predict"]))
        forces = max(float(np.abs(a["forces"] - b["forces"]).max())
                     for a, b in zip(results["loop"], results["predict"]))
        loop, batched = min(seconds["loop"]), min(seconds["predict"])
        print(f"| `{row}` | {loop:.2f} | {batched:.2f} | {loop / batched:.1f}× | {energy:.1e} "
              f"| {forces:.1e} |", flush=True)


if __name__ == "__main__":
    main()
