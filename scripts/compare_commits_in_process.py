"""Two commits' models in one process, timed call for call in alternation.

``compare_commits.py`` runs each commit's benchmark in processes of its own; on this machine
one process differs from the next by up to ±20 % (memory layout, which modules were imported),
which can hide or fake a 5 % change. Here both commits' packages are imported into one process
(the first one's modules removed from ``sys.modules`` before the second is imported), each
builds the same config from the same seed (the energies are printed: they must agree), and the
calls alternate A, B, B, A, …, so both see the same machine at the same moments. Timed:
energy + forces of one ethanol, or with ``--cell`` of ``benchmark_models.periodic_cell`` (1 000
atoms; eval mode), and a training step on 8 ethanols (forces MSE,
double backward, AdamW; written here, so that both commits run the same step). Ratios B / A
of medians and of 10th percentiles (above 1: B slower). Run from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/compare_commits_in_process.py A B \\
        [--calls 1000] [--steps 200] [--cell] [--rows model=schnet experiment=ethanol_mace …]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

STATISTICS = {"species": [1, 6, 8, 29], "reference_energies": [0.0] * 4, "shift": 0.0,
              "scale": 1.0, "avg_num_neighbors": 20.0}


def import_commit(worktree: Path, rows: list[str], cell: bool) -> dict:
    """Row → (model, one-ethanol (or ``cell``: 1 000-atom cell) batch, 8-ethanol batch with
    forces), built by ``worktree``'s equipot (configs composed by its own
    scripts/benchmark_models.py)."""
    for name in [m for m in sys.modules if m.split(".")[0] in ("equipot", "benchmark_models",
                                                                "timing")]:
        del sys.modules[name]
    sys.path[:0] = [str(worktree), str(worktree / "scripts")]
    import benchmark_models
    from torch_geometric.data import Batch

    from equipot import keys
    from equipot.data.graph import atoms_to_graph
    from equipot.data.reading import read_structures
    from equipot.datasets import bundled
    from equipot.model.build import build_potential
    configs = benchmark_models.model_configs()
    ethanol = read_structures(bundled("rmd17_ethanol/test.xyz"))[:8]
    built = {}
    for row in rows:
        torch.manual_seed(0)
        model = build_potential({**configs[row], **STATISTICS})
        called = benchmark_models.periodic_cell() if cell else ethanol[0]
        one = Batch.from_data_list([atoms_to_graph(called, model.cutoff)])
        eight = Batch.from_data_list([atoms_to_graph(a, model.cutoff, {
            keys.ENERGY: np.array(a.get_potential_energy()), keys.FORCES: a.get_forces()})
            for a in ethanol])
        built[row] = (model, one, eight, keys.FORCES)
    del sys.path[:2]
    return built


def alternate(functions: dict, calls: int) -> dict:
    """Seconds of each call of each function, called in alternation (A B, B A, …)."""
    times = {name: [] for name in functions}
    for _ in range(5):
        for function in functions.values():
            function()
    for call in range(calls):
        for name in (list(functions) if call % 2 == 0 else list(functions)[::-1]):
            start = time.perf_counter()
            functions[name]()
            times[name].append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> tuple[float, float]:
    """(median, 10th percentile) in milliseconds."""
    ordered = sorted(times)
    return 1e3 * statistics.median(ordered), 1e3 * ordered[len(ordered) // 10]


def training_step(model, batch, forces_key):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step():
        optimizer.zero_grad()
        predicted = model(batch, compute_forces=True)
        (predicted[forces_key] - batch[forces_key]).square().mean().backward()
        optimizer.step()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--cell", action="store_true",
                        help="time calls on the 1 000-atom periodic cell, not one ethanol")
    parser.add_argument("--rows", nargs="*", default=[
        "model=schnet", "model=painn", "model=nequip", "model=dimenet",
        "experiment=ethanol_mace"])
    arguments = parser.parse_args()
    repository = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as directory:
        built = {}
        try:
            for commit in (arguments.a, arguments.b):
                worktree = Path(directory) / commit
                subprocess.run(["git", "-C", str(repository), "worktree", "add", "--detach",
                                "-q", str(worktree), commit], check=True)
                built[commit] = import_commit(worktree, arguments.rows, arguments.cell)
        finally:
            for commit in (arguments.a, arguments.b):
                subprocess.run(["git", "-C", str(repository), "worktree", "remove", "--force",
                                str(Path(directory) / commit)], check=False)
    print(f"| row | E+F ms, median ({arguments.a} → {arguments.b}) | E+F 10th pct | "
          f"train step ms, median | train step 10th pct |")
    print("|---|---|---|---|---|")
    for row in arguments.rows:
        models = {commit: built[commit][row] for commit in built}
        energies = {commit: float(model.eval()(one)["energy"][0])
                    for commit, (model, one, _, _) in models.items()}
        if len(set(energies.values())) != 1:
            print(f"{row}: the commits' energies differ: {energies}", file=sys.stderr)
        evaluation = alternate({c: (lambda m=m, one=one: m(one))
                                for c, (m, one, _, _) in models.items()}, arguments.calls)
        for model, *_ in models.values():
            model.train()
        training = alternate({c: training_step(m, eight, f)
                              for c, (m, _, eight, f) in models.items()}, arguments.steps)
        cells = []
        for times in (evaluation, training):
            (median_a, low_a), (median_b, low_b) = (summary(times[c]) for c in models)
            cells += [f"{median_a:.2f} → {median_b:.2f} ({median_b / median_a:.3f})",
                      f"{low_a:.2f} → {low_b:.2f} ({low_b / low_a:.3f})"]
        print(f"| `{row}` | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
