"""The user's contract end to end: equipot-train, equipot-evaluate, equipot-md, equipot.load."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk

import equipot
from equipot.analysis.evaluation import evaluate
from equipot.cli import md
from equipot.data.dataset import GraphDataset
from equipot.data.reading import read_structures

from conftest import write_copper_splits

BIN = Path(sys.executable).parent
FAST = ["trainer.max_epochs=2", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
        "model.num_features=16", "model.num_blocks=1", "model.block_options.num_filters=16",
        "model.cutoff=4.0", "data.batch_size=4"]


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EQUIPOT_CACHE": str(cwd / "cache")}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return write_copper_splits(tmp_path_factory.mktemp("cli"))


@pytest.fixture(scope="module")
def trained(workdir) -> Path:
    run([str(BIN / "equipot-train"), "data.train=train.xyz", "data.valid=valid.xyz",
         "data.test=test.xyz", "loss.stress_weight=10", "hydra.run.dir=runs/x", *FAST], workdir)
    return workdir / "runs" / "x"


def test_run_directory_holds_config_logs_checkpoints_and_model(trained):
    for name in ("config.yaml", "model.pt", "test_metrics.json", "checkpoints/last.ckpt",
                 "checkpoints/best.ckpt", "logs/metrics.csv", "short_range/summary.json"):
        assert (trained / name).is_file(), name
    assert any((trained / "tensorboard").iterdir())
    config = (trained / "config.yaml").read_text()
    assert "stress_weight: 10" in config and "${" not in config  # resolved
    metrics = json.loads((trained / "test_metrics.json").read_text())
    assert {"energy_mae", "forces_mae", "stress_mae"} <= set(metrics)


def test_load_and_calculator_reproduce_training_test_metrics(trained, workdir):
    model = equipot.load(trained / "model.pt")
    expected = json.loads((trained / "test_metrics.json").read_text())
    # Through the calculator, one structure at a time, as a user would.
    calculator = equipot.EquipotCalculator(trained / "model.pt")
    energy_errors, force_errors = [], []
    for atoms in read_structures(workdir / "test.xyz"):
        reference_energy, reference_forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = calculator
        energy_errors.append(atoms.get_potential_energy() - reference_energy)
        force_errors.append(atoms.get_forces() - reference_forces)
    force_errors = np.concatenate(force_errors)
    # Same numbers up to the order of summing the errors (the predictions are bitwise equal).
    assert np.mean(np.abs(energy_errors)) == pytest.approx(expected["energy_mae"], rel=1e-12)
    assert np.mean(np.abs(force_errors)) == pytest.approx(expected["forces_mae"], rel=1e-12)
    # Batched through the Potential, float32 rounding differs slightly.
    dataset = GraphDataset.from_file(workdir / "test.xyz", model.cutoff, cache_dir=False)
    assert evaluate(model, dataset, batch_size=4).metrics == pytest.approx(expected, rel=1e-5)


def test_evaluate_prints_table_and_writes_metrics_and_plots(trained, workdir):
    result = run([str(BIN / "equipot-evaluate"), str(trained / "model.pt"), "test.xyz",
                  "--output-dir", "eval"], workdir)
    assert "forces" in result.stdout and "MAE" in result.stdout
    report = json.loads((workdir / "eval" / "metrics.json").read_text())
    expected = json.loads((trained / "test_metrics.json").read_text())
    assert report["metrics"] == pytest.approx(expected, rel=1e-12)
    for name in ("parity_energy.png", "parity_forces.png"):
        assert (workdir / "eval" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_energy_only_float64_training_and_multirun_sweep(workdir):
    run([str(BIN / "equipot-train"), "--multirun", "data.train=train.xyz",
         "data.valid=valid.xyz", "data.forces_key=null", "data.stress_key=null",
         "optimizer.lr=0.001,0.002", "dtype=float64", "hydra.sweep.dir=sweep", *FAST], workdir)
    for job in ("0", "1"):
        model = equipot.load(workdir / "sweep" / job / "model.pt")
        assert model.metadata["data"]["train"] == "train.xyz"
        assert model.dtype == torch.float64  # loads in the dtype it was trained in
    csv = (workdir / "sweep/0/logs/metrics.csv").read_text()
    assert "val/energy_mae" in csv and "forces_mae" not in csv
    assert ("lr: 0.002" in (workdir / "sweep/1/config.yaml").read_text())


@pytest.mark.parametrize("ensemble", ["nve", "nvt", "npt"])
def test_md_runs_each_ensemble(trained, workdir, ensemble):
    ase.io.write(workdir / "start.xyz", bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2))
    result = run([str(BIN / "equipot-md"), str(trained / "model.pt"), "start.xyz",
                  "--ensemble", ensemble, "--steps", "20", "--interval", "5",
                  "--trajectory", f"{ensemble}.traj", "--log", f"{ensemble}.log",
                  "--no-progress"], workdir)
    frames = ase.io.read(workdir / f"{ensemble}.traj", ":")
    assert len(frames) == 5  # steps 0, 5, 10, 15, 20
    assert not np.allclose(frames[0].positions, frames[-1].positions)
    log = (workdir / f"{ensemble}.log").read_text().splitlines()
    assert "Etot" in log[0] and "Epot" in log[0] and "T[K]" in log[0] and len(log) == 6
    assert "spread of E_tot" in result.stdout


def test_md_npt_refuses_slab(trained, workdir):
    slab = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
    slab.pbc = [True, True, False]
    ase.io.write(workdir / "slab.xyz", slab)
    result = subprocess.run([str(BIN / "equipot-md"), str(trained / "model.pt"), "slab.xyz",
                             "--ensemble", "npt", "--steps", "2", "--no-progress"],
                            cwd=workdir, capture_output=True, text=True)
    assert result.returncode != 0 and "slab.xyz" in result.stderr and "pbc" in result.stderr


def test_evaluate_rejects_a_file_that_is_not_a_model(workdir):
    (workdir / "fake.pt").write_bytes(b"not a model")
    result = subprocess.run([str(BIN / "equipot-evaluate"), "fake.pt", "test.xyz"],
                            cwd=workdir, capture_output=True, text=True)
    assert result.returncode != 0 and "fake.pt" in result.stderr
    assert "not an equipot model file" in result.stderr


@pytest.mark.parametrize("problem, field", [("overlap", "positions"), ("element", "z")])
def test_md_names_file_and_index_of_a_bad_structure_and_writes_nothing(trained, workdir,
                                                                         problem, field):
    good = bulk("Cu", "fcc", a=3.6, cubic=True)
    bad = good.copy()
    if problem == "overlap":
        bad.positions[1] = bad.positions[0] + 0.05
    else:
        bad.numbers[1] = 79  # Au: unknown to the Cu model
    ase.io.write(workdir / f"bad_{problem}.xyz", [good, bad])
    result = subprocess.run([str(BIN / "equipot-md"), str(trained / "model.pt"),
                             f"bad_{problem}.xyz", "--index", "1", "--steps", "5",
                             "--trajectory", f"{problem}.traj", "--log", f"{problem}.log",
                             "--no-progress"], cwd=workdir, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"bad_{problem}.xyz: structure 1: field '{field}'" in result.stderr
    assert not (workdir / f"{problem}.traj").exists() and not (workdir / f"{problem}.log").exists()


def test_md_progress_bar_counts_the_steps_asked_for(trained, workdir):
    ase.io.write(workdir / "start.xyz", bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2))
    result = run([str(BIN / "equipot-md"), str(trained / "model.pt"), "start.xyz",
                  "--steps", "20", "--trajectory", "bar.traj", "--log", "bar.log"], workdir)
    counts = {int(count) for count in re.findall(r"(\d+)/20 ", result.stderr)}
    assert max(counts) == 20, result.stderr


def test_npt_calls_the_model_once_per_step(trained, workdir, monkeypatch):
    calls = []
    calculate = equipot.EquipotCalculator.calculate
    monkeypatch.setattr(equipot.EquipotCalculator, "calculate",
                        lambda self, *args, **kwargs: calls.append(1) or calculate(
                            self, *args, **kwargs))
    ase.io.write(workdir / "start.xyz", bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2))
    md.run(md.parse_arguments([str(trained / "model.pt"), str(workdir / "start.xyz"),
                               "--ensemble", "npt", "--steps", "10", "--no-progress",
                               "--trajectory", str(workdir / "npt_calls.traj"),
                               "--log", str(workdir / "npt_calls.log")]))
    assert len(calls) <= 10 + 2, len(calls)  # the start check, the integrator's first forces
