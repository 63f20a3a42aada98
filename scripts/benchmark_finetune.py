"""Fine-tuning against training from scratch on acetylacetone at 600 K, with and without replay.

From a model trained on the bundled 300 K data (``--source``, or one trained here with
``experiment=acac_mace``), on ``--count`` structures of the bundled 600 K file (the last
``--valid`` of them validate), tested on ``--test-count`` others of that file, each run under
the same wall-clock training budget (``trainer.max_time``):

- from scratch: ``experiment=acac_mace`` on the 600 K structures;
- fine-tuned: ``finetune.source=…`` (recipe ``finetune``), no replay;
- fine-tuned with replay: the same with ``finetune.replay.per_batch``.

Prints a table of force and energy errors on the 600 K test structures and on the 300 K test
set (how much of the source's domain each keeps), and writes it to ``<out>/results.json``.
Run from the repository root, one run at a time on an idle machine:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_finetune.py --source runs/x/model.pt
"""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np

import equipot
from equipot.analysis.evaluation import evaluate
from equipot.data.dataset import GraphDataset
from equipot.datasets import bundled
from equipot.finetune.source import load_source

BIN = Path(sys.executable).parent
QUIET = ["trainer.enable_progress_bar=false"]


def train(out: Path, name: str, overrides: list[str]) -> Path:
    """One equipot-train run in ``out/name`` (skipped when its model exists); its model."""
    run_dir = out / name
    if not (run_dir / "model.pt").is_file():
        command = [str(BIN / "equipot-train"), *overrides, *QUIET, f"hydra.run.dir={run_dir}",
                   "overwrite=true"]
        print(" ".join(command), flush=True)
        with open(out / f"{name}.log", "w") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT,
                           env={**os.environ, "EQUIPOT_CACHE": str(out / "cache")})
    return run_dir / "model.pt"


def training_seconds(out: Path, name: str) -> tuple[int, float] | None:
    """(epochs, seconds) of a run, from its log."""
    found = re.findall(r"training ended after (\d+) epochs \(\d+ steps\) in (\d+) s",
                       (out / f"{name}.log").read_text()) if (out / f"{name}.log").is_file() else []
    return (int(found[-1][0]), float(found[-1][1])) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, help="a model trained on the 300 K data")
    parser.add_argument("--out", type=Path, default=Path("runs/finetune_benchmark"))
    parser.add_argument("--budget", default="00:00:03:00", help="trainer.max_time of each run")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--valid", type=int, default=5)
    parser.add_argument("--test-count", type=int, default=200)
    parser.add_argument("--replay-per-batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra", nargs="*", default=[],
                        help="overrides for the fine-tuning runs (e.g. optimizer.lr=1e-3)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    hot = ase.io.read(bundled("acac/train_600K.xyz"), ":")
    order = np.random.default_rng(args.seed).permutation(len(hot))
    train_file, test_file = args.out / "train_600K_subset.xyz", args.out / "test_600K_subset.xyz"
    ase.io.write(train_file, [hot[i] for i in order[:args.count]])
    ase.io.write(test_file, [hot[i] for i in order[args.count:args.count + args.test_count]])
    data = [f"data.train={train_file}", f"data.test={test_file}",
            f"data.valid_count={args.valid}", "data.valid_fraction=null",
            f"trainer.max_time={args.budget}", "trainer.max_epochs=100000"]
    source = args.source or train(args.out, "source", ["experiment=acac_mace"])
    models = {
        "source (300 K)": source,
        "from scratch": train(args.out, "scratch", ["experiment=acac_mace", *data]),
        "fine-tuned": train(args.out, "finetuned", [f"finetune.source={source}", *data,
                                                    *args.extra]),
        "fine-tuned + replay": train(args.out, "replay", [
            f"finetune.source={source}", *data, *args.extra,
            f"finetune.replay.per_batch={args.replay_per_batch}"]),
    }
    tests = {"600 K": test_file, "300 K": bundled("acac/test_MD_300K.xyz")}
    results = {}
    for name, path in models.items():
        model = load_source(path, "float32") if name.startswith("source") else equipot.load(path)
        results[name] = {"training": training_seconds(args.out, Path(path).parent.name)}
        for label, file in tests.items():
            dataset = GraphDataset.from_file(file, model.cutoff, cache_dir=args.out / "cache")
            metrics = evaluate(model, dataset, batch_size=16).metrics
            results[name][label] = {key: 1000 * value for key, value in metrics.items()}
    print("| model | epochs, s | 600 K F MAE | 600 K F RMSE | 600 K E MAE | 300 K F MAE "
          "| 300 K F RMSE | 300 K E MAE |\n|---|---|---:|---:|---:|---:|---:|---:|")
    for name, result in results.items():
        epochs = "–" if not result["training"] else "{}, {:.0f}".format(*result["training"])
        print(f"| {name} | {epochs} | " + " | ".join(
            f"{result[label][key]:.1f}" for label in tests
            for key in ("forces_mae", "forces_rmse", "energy_mae")) + " |")
    (args.out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
