"""What an uncertainty costs at inference: energy + forces of a plain model, the same model
with its last-layer prediction rigidity, and a K-member ensemble, for one ethanol (9 atoms) and
a 1 000-atom periodic CuO cell (the models of scripts/benchmark_models.py). Eval mode, best of
``--repeats`` calls after warm-up; the three variants of a row alternate call by call. The
LLPR's covariance is a random positive matrix: its cost does not depend on the values. Run
from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_uncertainty_cost.py [--members 4]
"""

import argparse
import time

import torch
from benchmark_models import STATISTICS, model_configs, periodic_cell  # scripts/
from torch_geometric.data import Batch

from equipot.data.graph import atoms_to_graph
from equipot.data.reading import read_structures
from equipot.datasets import bundled
from equipot.model.build import build_potential


def variants(config: dict, members: int) -> dict:
    torch.manual_seed(0)
    plain = build_potential({**config, **STATISTICS})
    llpr = build_potential({**config, **STATISTICS, "uncertainty": {"method": "llpr"}})
    llpr.load_state_dict(plain.state_dict(), strict=False)
    size = llpr.num_last_layer_features
    random = torch.randn(size, size, dtype=torch.float64)
    llpr.uncertainty.inverse_covariance.copy_(random @ random.T / size)
    ensemble = build_potential({**config, **STATISTICS,
                                "uncertainty": {"method": "ensemble", "size": members}})
    return {"plain": plain.eval(), "LLPR": llpr.eval(), f"ensemble of {members}": ensemble.eval()}


def best_alternating(models: dict, batch, repeats: int) -> dict[str, float]:
    """Best milliseconds of each model, calls alternating between them."""
    for model in models.values():
        model(batch)
    best = dict.fromkeys(models, float("inf"))
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model(batch)
            best[name] = min(best[name], 1e3 * (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--rows", nargs="*", default=["model=schnet", "model=painn",
                                                      "experiment=ethanol_mace"])
    parser.add_argument("--repeats", type=int, default=30)
    arguments = parser.parse_args()
    configs = model_configs()
    ethanol = read_structures(bundled("rmd17_ethanol/test.xyz"))[0]
    names = ["plain", "LLPR", f"ensemble of {arguments.members}"]
    print("| config | structure | " + " | ".join(f"{name} ms" for name in names)
          + " | LLPR / plain | ensemble / plain |")
    print("|---|---|" + "---:|" * (len(names) + 2))
    for row in arguments.rows:
        models = variants(configs[row], arguments.members)
        cutoff = next(iter(models.values())).cutoff
        for structure, atoms, repeats in (("ethanol", ethanol, arguments.repeats),
                                          ("1000-atom cell", periodic_cell(), 3)):
            batch = Batch.from_data_list([atoms_to_graph(atoms, cutoff)])
            times = best_alternating(models, batch, repeats)
            print(f"| `{row}` | {structure} | " + " | ".join(f"{times[n]:.2f}" for n in names)
                  + f" | {times['LLPR'] / times['plain']:.3f} | "
                  f"{times[names[2]] / times['plain']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
