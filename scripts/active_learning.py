"""Active learning with EMT as the reference: train → MD → select → label → retrain.

Two arms start from the same labelled structures (``--start`` rattled 32-atom fcc Cu cells,
near 0 K) and add the same number of structures per round. Each round, each arm trains a model
(equipot-train's defaults but for a small SchNet and a fixed number of epochs; LLPR fitted and
calibrated as every run does), runs Langevin MD *with that model* at 300 … 1200 K
(``--exploration-temperatures``, up to the test temperature) from the perfect cell to collect
candidates, picks ``--per-round`` of them, labels them with EMT and adds them to its training
set:

- ``uncertainty``: the pick of ``equipot-select`` (largest predicted force σ, no near-copies:
  ``equipot.uncertainty.selection``);
- ``random``: uniformly at random from its candidates.

Every model is scored on a test set the arms never see: EMT MD at ``--test-temperature``
(1200 K), force RMSE (meV/Å). One training per arm and round is noisy, so the loop runs once
per seed of ``--seeds`` (start structures, random picks, trainings and MD) and the summary
gives, per round, the mean force RMSE of each arm over the seeds and their ratio. Writes
``<out>/seed<k>/rounds.json`` and prints markdown tables.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/active_learning.py --out runs/al --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ase.io
import numpy as np
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from hydra import compose, initialize_config_dir

import equipot
from equipot.analysis.evaluation import evaluate
from equipot.cli import train as train_cli
from equipot.data.dataset import GraphDataset
from equipot.data.graph import atoms_to_graph
from equipot.datasets.emt import emt_copper, label_with_emt
from equipot.uncertainty.selection import score, select_diverse

EXPLORATION_TEMPERATURES = (300, 600, 900, 1200)  # K, the default: up to the test's
MODEL = ["model=schnet", "model.num_features=32", "model.num_blocks=2", "model.cutoff=4.5",
         "trainer.enable_progress_bar=false", "data.valid_fraction=0.2", "data.batch_size=4",
         "short_range.fail_on_error=false"]


def perfect_cell():
    return bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)


def langevin_frames(atoms, calculator, temperature: float, steps: int, every: int,
                    seed: int) -> list:
    """Frames of Langevin MD (2 fs, friction 0.02/fs) at ``temperature`` K, every ``every``
    steps after the first ``every``."""
    atoms = atoms.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    dynamics = Langevin(atoms, 2 * units.fs, temperature_K=temperature,
                        friction=0.02 / units.fs, rng=rng)
    frames = []
    dynamics.attach(lambda: frames.append(atoms.copy()), interval=every)
    dynamics.run(steps)
    return frames[1:]


def test_set(temperature: float, count: int) -> list:
    """EMT MD at ``temperature``: ``count`` frames 20 steps apart, after 200 steps."""
    frames = langevin_frames(perfect_cell(), EMT(), temperature, 200 + 20 * count, 20, seed=99)
    return [label_with_emt(frame) for frame in frames[-count:]]


def train(structures: list, run_dir: Path, epochs: int, seed: int):
    """equipot-train on ``structures``, the model it saves."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ase.io.write(run_dir / "train.xyz", structures)
    overrides = [*MODEL, f"data.train={run_dir / 'train.xyz'}", f"trainer.max_epochs={epochs}",
                 f"seed={seed}", "overwrite=true"]
    with initialize_config_dir(config_dir=train_cli.CONFIG_DIR, version_base="1.3"):
        config = compose("train", overrides=overrides)
    train_cli.train(config, run_dir / "run", overrides)
    return equipot.load(run_dir / "run" / "model.pt")


def candidates(model, round_index: int, steps: int, temperatures: tuple[float, ...]) -> list:
    """MD with ``model`` from the perfect cell at each of ``temperatures`` (K)."""
    calculator = equipot.EquipotCalculator(model)
    pool = []
    for k, temperature in enumerate(temperatures):
        pool += langevin_frames(perfect_cell(), calculator, temperature, steps, 10,
                                seed=1000 * round_index + k)
    return pool


def force_rmse(model, test: GraphDataset) -> float:
    return 1000 * evaluate(model, test, batch_size=16).metrics["forces_rmse"]


def run_loop(arguments, seed: int, test: GraphDataset) -> list[dict]:
    """The two arms' rounds for one ``seed``: per round the labelled count, each arm's force
    RMSE on ``test`` and the mean temperature of its picks."""
    start = emt_copper(arguments.start, seed=seed, repeat=2, rattle=0.05)
    labelled = {"uncertainty": list(start), "random": list(start)}
    rng = np.random.default_rng(seed)
    temperatures = tuple(arguments.exploration_temperatures)
    rows = []
    for round_index in range(arguments.rounds + 1):
        row = {"round": round_index, "labelled": len(labelled["random"])}
        for arm, structures in labelled.items():
            model = train(structures, arguments.out / f"seed{seed}" / arm
                          / f"round{round_index}", arguments.epochs, seed=seed)
            row[arm] = force_rmse(model, test)
            if round_index == arguments.rounds:
                continue
            pool = candidates(model, 100 * seed + round_index, arguments.md_steps, temperatures)
            if arm == "uncertainty":
                graphs = [atoms_to_graph(atoms, model.cutoff) for atoms in pool]
                picked = select_diverse(*score(model, graphs), arguments.per_round)
            else:
                picked = rng.choice(len(pool), arguments.per_round, replace=False).tolist()
            row[f"{arm}_picked_mean_temperature"] = float(np.mean(
                [temperatures[i // (len(pool) // len(temperatures))] for i in picked]))
            structures += [label_with_emt(pool[i]) for i in picked]
        row["ratio"] = row["random"] / row["uncertainty"]
        rows.append(row)
        print(json.dumps({"seed": seed, **row}), flush=True)
    (arguments.out / f"seed{seed}" / "rounds.json").write_text(json.dumps(rows, indent=1))
    return rows


def seed_table(rows: list[dict]) -> str:
    lines = ["| round | labelled | random | uncertainty | random / uncertainty "
             "| mean T of picks (random, uncertainty) |", "|---|---:|---:|---:|---:|---|"]
    for row in rows:
        temperatures = (f"{row['random_picked_mean_temperature']:.0f}, "
                        f"{row['uncertainty_picked_mean_temperature']:.0f} K"
                        if "random_picked_mean_temperature" in row else "–")
        lines.append(f"| {row['round']} | {row['labelled']} | {row['random']:.1f} | "
                     f"{row['uncertainty']:.1f} | {row['ratio']:.2f} | {temperatures} |")
    return "\n".join(lines)


def summary_table(runs: dict[int, list[dict]]) -> str:
    """Per round: each arm's mean force RMSE over the seeds, the ratio of the means, and the
    ratio of each seed."""
    lines = ["| round | labelled | random, mean | uncertainty, mean | ratio of means "
             "| ratio per seed |", "|---|---:|---:|---:|---:|---|"]
    for index, row in enumerate(next(iter(runs.values()))):
        arms = {arm: float(np.mean([rows[index][arm] for rows in runs.values()]))
                for arm in ("random", "uncertainty")}
        per_seed = ", ".join(f"{rows[index]['ratio']:.2f}" for rows in runs.values())
        lines.append(f"| {row['round']} | {row['labelled']} | {arms['random']:.1f} | "
                     f"{arms['uncertainty']:.1f} | {arms['random'] / arms['uncertainty']:.2f} "
                     f"| {per_seed} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--start", type=int, default=8, help="labelled structures at first")
    parser.add_argument("--per-round", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--md-steps", type=int, default=200, help="per temperature")
    parser.add_argument("--test-temperature", type=float, default=1200.0)
    parser.add_argument("--exploration-temperatures", type=float, nargs="+",
                        default=EXPLORATION_TEMPERATURES, help="K, one MD run each per round")
    parser.add_argument("--test-count", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="one loop per seed (start structures, random picks, trainings "
                             "and MD)")
    arguments = parser.parse_args()
    started = time.monotonic()
    test = GraphDataset.from_atoms(test_set(arguments.test_temperature, arguments.test_count),
                                   4.5)
    runs = {seed: run_loop(arguments, seed, test) for seed in arguments.seeds}
    print(f"\n{time.monotonic() - started:.0f} s; force RMSE (meV/Å) on {arguments.test_count} "
          f"EMT MD frames at {arguments.test_temperature:.0f} K")
    for seed, rows in runs.items():
        print(f"\nseed {seed}\n\n{seed_table(rows)}")
    print(f"\nover seeds {list(runs)}\n\n{summary_table(runs)}")


if __name__ == "__main__":
    main()
