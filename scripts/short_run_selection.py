"""Short runs: is the saved model.pt as good as the weights training ended with?

Issue 12, observation 3: after 5 epochs (80 steps) on 32-atom Cu cells the EMA of the weights
still held half of its first steps, and model.pt (the EMA) was 1.6–6× worse than the raw
weights. For each family this script trains ``equipot-train model=<block>`` for 5 epochs
on EMT-labelled 32-atom Cu cells (256 for training and validation, 32 for testing), then
scores model.pt and the raw weights of the last checkpoint on the test set. Run from the
repository root (a few minutes per family; MACE at its default size takes much longer,
``--mace-override`` makes it smaller):

    OMP_NUM_THREADS=1 .venv/bin/python scripts/short_run_selection.py [--blocks schnet ...]
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import ase.io

import equipot
from equipot.analysis.evaluation import evaluate
from equipot.blocks.registry import FAMILIES
from equipot.data.dataset import GraphDataset
from equipot.datasets.emt import emt_copper
from equipot.train.lightning_checkpoint import model_from_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", nargs="+", default=sorted(FAMILIES))
    parser.add_argument("--mace-override", nargs="*", default=[],
                        help="extra overrides for MACE, e.g. model.num_features=32")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="short_run_"))
    ase.io.write(work / "train.xyz", emt_copper(256, seed=0, repeat=2, rattle=0.1))
    ase.io.write(work / "test.xyz", emt_copper(32, seed=1, repeat=2, rattle=0.1))
    test_set = GraphDataset.from_file(work / "test.xyz", 5.0, cache_dir=False)
    print("block | model.pt weights | test F MAE model.pt | raw weights (meV/Å)")
    for block in args.blocks:
        run_dir = work / block
        subprocess.run([str(Path(sys.executable).parent / "equipot-train"),
                        f"data.train={work / 'train.xyz'}", f"model={block}",
                        "trainer.max_epochs=5", "trainer.enable_progress_bar=false",
                        "short_range.fail_on_error=false", f"hydra.run.dir={run_dir}",
                        *(args.mace_override if block == "mace" else [])],
                       check=True, capture_output=True)
        saved = equipot.load(run_dir / "model.pt")
        raw = model_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", "raw")
        errors = [1000 * evaluate(model, test_set).metrics["forces_mae"] for model in (saved,
                                                                                     raw)]
        print(f"{block} | {saved.metadata['weights']} | {errors[0]:.1f} | {errors[1]:.1f}",
              flush=True)


if __name__ == "__main__":
    main()
