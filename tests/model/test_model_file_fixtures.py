"""Model files written by earlier equipot versions (formats 1, 2 and 3) still load and predict
what the version that wrote them predicted: energy, forces and stress to 1e-12 in float64.

The files, the structures and the recorded predictions are in tests/fixtures/model_files (see
its README for the commits that wrote them and the script that did). Only the public API is
used: ``equipot.load`` and ``equipot.EquipotCalculator``.
"""

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch

import equipot
from equipot.model.build import build_potential
from equipot.model.checkpoint import FORMAT_VERSION, read_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "model_files"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
TOLERANCE = dict(rtol=1e-12, atol=1e-12)
@pytest.fixture(scope="module")
def structures():
    return {atoms.info["name"]: atoms
            for atoms in ase.io.read(FIXTURES / "structures.extxyz", ":", format="extxyz")}


def test_every_fixture_file_has_expected_predictions():
    assert sorted(path.name for path in FIXTURES.glob("*.pt")) == sorted(EXPECTED)
    assert {entry["format_version"] for entry in EXPECTED.values()} == {1, 2, 3}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_old_model_file_predicts_as_when_written(name, structures):
    expected = EXPECTED[name]
    raw = torch.load(FIXTURES / name, map_location="cpu", weights_only=True)
    assert raw["format_version"] == expected["format_version"]

    model = equipot.load(FIXTURES / name, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    calculator = equipot.EquipotCalculator(model)
    for label, reference in expected["structures"].items():
        atoms = structures[label].copy()
        atoms.calc = calculator
        np.testing.assert_allclose(atoms.get_potential_energy(), reference["energy"],
                                   **TOLERANCE, err_msg=f"{name} {label} energy")
        np.testing.assert_allclose(atoms.get_forces(), np.array(reference["forces"]),
                                   **TOLERANCE, err_msg=f"{name} {label} forces")
        if "stress" in reference:
            np.testing.assert_allclose(atoms.get_stress(), np.array(reference["stress"]),
                                       **TOLERANCE, err_msg=f"{name} {label} stress")
        else:
            assert not atoms.pbc.any()


@pytest.mark.parametrize("name", ["format3_painn_covalent_floor.pt",
                                  "format3_schnet_training_floor.pt"])
def test_format_3_floors_migrate_to_the_one_floor_option(name, structures):
    """The floored fixtures need their floor: built without it, they predict otherwise (so the
    migration of network_floor_factor / distance_floor_width is what the test above checks)."""
    checkpoint = read_checkpoint(FIXTURES / name)
    assert checkpoint["format_version"] == FORMAT_VERSION
    assert set(checkpoint["model_config"]["distance_floor"]) >= {"at", "width"}
    unfloored = build_potential({**checkpoint["model_config"], "distance_floor": None},
                                dtype=torch.float64)
    unfloored.load_state_dict(checkpoint["state_dict"])
    shifts = []
    for label, reference in EXPECTED[name]["structures"].items():
        atoms = structures[label].copy()
        atoms.calc = equipot.EquipotCalculator(unfloored.eval())
        shifts.append(abs(atoms.get_potential_energy() - reference["energy"]))
    assert max(shifts) > 1e-3
