"""The short-range report (equipot/analysis/short_range.py), equipot-check-model and the
training hook.

Models are the small float64 test model of conftest.py, on H, O and Cu (6 pairs, to keep the
plots few), made well-behaved or broken on purpose: a flat network (no repulsion at all), the
ZBL prior on top of it or of random weights, and a term of −2 × ZBL that collapses any dimer.
"""

import json
import os
import subprocess
import sys
from copy import deepcopy

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.data import covalent_radii

from equipot import EquipotCalculator, keys, save_model
from equipot.analysis.short_range import check_pair, check_short_range, dimer_grid
from equipot.cli import train as train_cli
from equipot.cli.check_model import main as check_model
from equipot.physics.elements import repulsion_thresholds
from equipot.physics.registry import register_energy_term
from equipot.physics.zbl import ZBLRepulsion

from conftest import MODEL_CONFIG

ZBL = {"name": "zbl"}
SPECIES = [1, 8, 29]
CONFIG = {**MODEL_CONFIG, "species": SPECIES, "reference_energies": [-1.0, -3.0, -4.0]}
NUM_PAIRS = 6
INNER_RADII = [[0.5 * (covalent_radii[a] + covalent_radii[b]) for b in SPECIES] for a in SPECIES]


@register_energy_term
class CollapsingPair(ZBLRepulsion):
    """−2 × ZBL: added to the ZBL prior it leaves −ZBL, an attraction that fuses any pair."""

    name = "test_short_range_collapse"

    def forward(self, geometry, features=None):
        return {keys.ATOMIC_ENERGIES: -2.0 * super().forward(geometry)[keys.ATOMIC_ENERGIES]}


def flat(model):
    """The network's output made constant (last readout layer zeroed): no repulsion at all."""
    with torch.no_grad():
        for name, parameter in model.readouts.named_parameters():
            if name.endswith("weight"):
                parameter.zero_()
    return model


@pytest.fixture(scope="module")
def models(build_model):
    terms = {"plain": [], "zbl": [ZBL], "collapse": [ZBL, {"name": "test_short_range_collapse"}]}
    return {name: build_model({**CONFIG, "energy_terms": energy_terms})
            for name, energy_terms in terms.items()}


def test_random_network_with_zbl_passes_and_a_collapsing_one_fails(models, tmp_path):
    # Checked below the inner radii, where ZBL is at full strength over the random network.
    report = check_short_range(models["zbl"], INNER_RADII, tmp_path / "zbl")
    assert report.passed, [check.verdict for check in report.pairs]
    assert all(check.rise > 1.0 for check in report.pairs)  # eV: a real wall, not noise
    broken = check_short_range(models["collapse"], INNER_RADII, tmp_path / "collapse")
    assert not broken.passed
    assert all(not check.passed and "the atoms attract" in check.verdict
               for check in broken.pairs)


def test_flat_network_fails_without_the_prior_and_passes_with_it(build_model, tmp_path):
    """The same flat network: no rise toward 0.1 Å without ZBL, a monotonic wall with it."""
    shortest = [[1.0] * len(SPECIES)] * len(SPECIES)  # Å; every pair checked below 1 Å
    without = check_short_range(flat(build_model(CONFIG)), shortest, tmp_path / "a")
    assert not without.passed
    assert all("no repulsion" in check.verdict for check in without.pairs)
    with_zbl = flat(build_model({**CONFIG, "energy_terms": [ZBL]}))
    assert check_short_range(with_zbl, shortest, tmp_path / "b").passed


def test_criterion_tolerates_a_flat_microvolt_plateau_but_not_a_millivolt_dip():
    r = dimer_grid(1.0)
    wall = 1.0 / r  # eV, rises toward 0.1 Å
    plateau = np.where(r > 0.5, 1e-5 * np.sin(50 * r), wall - 2.0)  # ±10 µeV below r_min
    assert check_pair("A-B", (1, 1), r, wall, 1.0, "test").passed
    assert check_pair("A-B", (1, 1), r, plateau, 1.0, "test").passed
    dip = wall - 0.01 * np.exp(-((r - 0.6) / 0.05) ** 2) * 100  # a 1 eV well at 0.6 Å
    check = check_pair("A-B", (1, 1), r, dip, 1.0, "test")
    assert not check.passed and check.dip > 0.5
    assert 0.55 < check.dip_span[0] < 0.65  # the bottom of the well
    not_finite = check_pair("A-B", (1, 1), r, np.where(r < 0.3, np.nan, wall), 1.0, "test")
    assert not not_finite.passed and "non-finite" in not_finite.verdict


def test_curves_are_the_calculators_energies_and_pairs_without_data_use_the_bound(models,
                                                                                 tmp_path):
    model = models["zbl"]
    shortest = [[None if {a, b} == {8, 29} else 1.2 for b in SPECIES] for a in SPECIES]
    report = check_short_range(model, shortest, tmp_path)
    curve = np.loadtxt(tmp_path / "dimer_O-Cu.csv", delimiter=",", skiprows=1)
    assert curve[0, 0] == pytest.approx(0.1) and curve[-1, 0] == pytest.approx(model.cutoff)
    for row in curve[[0, 57, 200, -1]]:  # one structure at a time, through ASE
        atoms = Atoms("OCu", positions=[[0, 0, 0], [0, 0, row[0]]])
        atoms.calc = EquipotCalculator(model)
        assert row[1] == pytest.approx(atoms.get_potential_energy(), abs=1e-7)
    assert curve[-1, 2] == pytest.approx(0.0, abs=1e-7)  # at the cutoff: separated atoms
    by_pair = {check.pair: check for check in report.pairs}
    assert by_pair["O-Cu"].r_min == pytest.approx(0.6 * (covalent_radii[8] + covalent_radii[29]))
    assert by_pair["O-Cu"].r_min_source.startswith("no training data")
    assert "no training data, harmless" in by_pair["O-Cu"].verdict
    assert by_pair["H-O"].r_min == 1.2
    isolated = {atom.element: atom for atom in report.atoms}
    assert isolated["O"].reference_energy == CONFIG["reference_energies"][1]
    atom = Atoms("O")
    atom.calc = EquipotCalculator(model)
    assert isolated["O"].model_energy == pytest.approx(atom.get_potential_energy(), abs=1e-9)


def test_a_pair_without_training_data_may_bind_near_its_bond_length():
    """Observation 8 of issue 12: pairs never seen in training raised false alarms for dips
    where such dimers really bind. A Morse well (depth 1 eV) at 0.9 of the covalent-radius sum
    R, as a multiple bond has it: harmless below the bound 0.6 R, a false alarm below R."""
    species = [6, 7]
    shortest = [[1.4, None], [None, 1.1]]  # C–N never within the cutoff in training
    r_min, source = repulsion_thresholds(species, shortest)[0, 1]
    radius_sum = covalent_radii[6] + covalent_radii[7]
    assert r_min == pytest.approx(0.6 * radius_sum) and source.startswith("no training data")
    distances = dimer_grid(5.0)
    bond = 0.9 * radius_sum
    energies = np.exp(-2 * 2.0 * (distances - bond)) - 2 * np.exp(-2.0 * (distances - bond))
    check = check_pair("C-N", (6, 7), distances, energies, r_min, source)
    assert check.passed and check.verdict.startswith("C-N: no training data, harmless")
    assert not check_pair("C-N", (6, 7), distances, energies, radius_sum, "sum").passed
    # Attraction below the bound is a failure, training data or not.
    assert not check_pair("C-N", (6, 7), distances, -energies, r_min, source).passed


# ---------------------------------------------------------------- equipot-check-model

def with_config(model, config):
    """A copy of ``model`` that carries ``config`` (the same architecture, other statistics)."""
    copy = deepcopy(model)
    copy.config = dict(config)
    return copy


def save(model, config, path):
    save_model(path, with_config(model, config), {"dtype": "float64"})
    return path


def run_check(arguments, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        check_model([str(argument) for argument in arguments])
    return exit_info.value.code, capsys.readouterr().out


def test_cli_writes_curves_plots_and_summary_and_exits_by_the_verdict(models, tmp_path, capsys):
    config = {**CONFIG, "energy_terms": [ZBL], "shortest_distances": INNER_RADII}
    good = save(models["zbl"], config, tmp_path / "good" / "model.pt")
    code, out = run_check([good], capsys)
    assert code == 0 and "short-range check passed" in out
    report = good.parent / "short_range"  # the default: beside the model
    assert len(list(report.glob("dimer_*.csv"))) == NUM_PAIRS
    pngs = list(report.glob("dimer_*.png"))
    assert len(pngs) == NUM_PAIRS and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    summary = json.loads((report / "summary.json").read_text())
    assert summary["passed"] and len(summary["pairs"]) == NUM_PAIRS and "criterion" in summary
    assert summary["pairs"][0]["r_min_source"] == "shortest training distance"

    broken_config = {**config, "energy_terms": [ZBL, {"name": "test_short_range_collapse"}]}
    broken = save(models["collapse"], broken_config, tmp_path / "broken.pt")
    code, out = run_check([broken, "--output", tmp_path / "out"], capsys)
    assert code == 1 and "SHORT-RANGE CHECK FAILED for 6 of 6" in out and "!!!!!" in out
    assert not json.loads((tmp_path / "out" / "summary.json").read_text())["passed"]


def test_cli_reports_on_an_old_model_file_without_prior_or_shortest_distances(models, tmp_path):
    """A model file from before ZBL and shortest distances: it loads and is checked below the
    covalent radii; a flat network there fails, in a process of its own, with status 1."""
    path = save(flat(models["plain"]), CONFIG, tmp_path / "old.pt")
    result = subprocess.run([sys.executable, "-m", "equipot.cli.check_model", str(path),
                             "--output", str(tmp_path / "report")],
                            capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 1, result.stderr
    assert "model file has no shortest training distances" in result.stdout
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    h_h = summary["pairs"][0]
    assert h_h["pair"] == "H-H" and h_h["r_min"] == pytest.approx(2 * covalent_radii[1])


def test_cli_names_a_missing_model_file(tmp_path, capsys):
    with pytest.raises(SystemExit, match="equipot-check-model: error: .*no such model file"):
        check_model([str(tmp_path / "missing.pt")])


# ---------------------------------------------------------------- the training hook

def test_training_hook_prints_a_banner_and_never_raises(models, tmp_path, capsys, monkeypatch):
    config = {**CONFIG, "shortest_distances": INNER_RADII}
    train_cli.report_short_range(with_config(models["collapse"], config), tmp_path / "a")
    out = capsys.readouterr().out
    assert out.startswith("!" * 100) and "SHORT-RANGE CHECK FAILED" in out
    assert (tmp_path / "a" / "summary.json").is_file()

    def fail(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(train_cli, "check_short_range", fail)
    train_cli.report_short_range(with_config(models["zbl"], config), tmp_path / "b")
    out = capsys.readouterr().out
    assert "the short-range report failed: RuntimeError: disk full" in out and "!!!!" in out
