"""The demo's promises, at full length (slow: about 8 minutes; run with ``pytest -m slow``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent
ETHANOL = Path(__file__).parents[1] / "equipot" / "datasets" / "rmd17_ethanol"


@pytest.mark.slow
def test_demo_accuracy_and_nve_energy_conservation(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EQUIPOT_CACHE": str(tmp_path / "cache")}
    subprocess.run([str(BIN / "equipot-train"), "experiment=ethanol_schnet",
                    "trainer.enable_progress_bar=false", "hydra.run.dir=run"],
                   cwd=tmp_path, env=env, check=True)
    metrics = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert metrics["forces_mae"] < 0.040  # eV/Å, on the 100 held-out configurations

    subprocess.run([str(BIN / "equipot-md"), "run/model.pt", str(ETHANOL / "test.xyz"),
                    "--ensemble", "nve", "--temperature", "300", "--steps", "4000",
                    "--timestep", "0.5", "--interval", "10", "--no-progress"],
                   cwd=tmp_path, env=env, check=True)
    log = np.loadtxt(tmp_path / "md.log", skiprows=1)
    assert log[-1, 0] == pytest.approx(2.0)  # ps
    total_energy = log[:, 1]
    assert (total_energy.max() - total_energy.min()) / 9 < 0.005  # eV per atom over 2 ps
