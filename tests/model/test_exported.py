"""Exported models (``equipot-export``, ``equipot.model.exported``): the package, loaded by
``equipot.load`` and the calculator, gives the eager model's energy, forces and stress within
float32 roundoff; what it cannot take is refused with a clear error."""

import copy

import numpy as np
import pytest
import torch

from equipot import EquipotCalculator, load
from equipot.cli.export import main
from equipot.errors import EquipotInputError
from equipot.model.checkpoint import save_model
from equipot.model.exported import ExportedPotential

from conftest import MODEL_CONFIG, make_cu_cell, make_cu_slab, make_ethanol, make_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(float32 model with ZBL, its exported package): one export (about a minute)."""
    directory = tmp_path_factory.mktemp("exported")
    model = make_model({**MODEL_CONFIG, "energy_terms": [{"name": "zbl"}]}, dtype=torch.float32)
    save_model(directory / "model.pt", model, {"dtype": "float32"})
    main([str(directory / "model.pt"), str(directory / "model.pt2")])
    return model, directory / "model.pt2"


@pytest.mark.parametrize("structure", [make_ethanol, make_cu_cell, make_cu_slab],
                         ids=["molecule", "triclinic cell", "slab"])
def test_the_package_gives_the_eager_results(exported, structure):
    """Within 1e-5 of the largest value, or within float32's own roundoff (3× the eager
    float32 model's distance from the same weights in float64), where that is larger: the
    two-atom cell's forces of 0.17 eV/Å are sums of terms ten times larger."""
    model, package = exported
    atoms = structure()
    calculators = {"float64": EquipotCalculator(copy.deepcopy(model).double()),
                   "eager": EquipotCalculator(model), "exported": EquipotCalculator(package)}
    results = {}
    for name, calculator in calculators.items():
        atoms.calc = calculator
        results[name] = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if atoms.pbc.any():
            results[name]["stress"] = atoms.get_stress()
    for name, value in results["eager"].items():
        scale = np.abs(value).max()
        assert scale > 1e-3, name
        roundoff = np.abs(value - results["float64"][name]).max()
        np.testing.assert_allclose(results["exported"][name], value, rtol=0,
                                   atol=max(1e-5 * scale, 3 * roundoff), err_msg=name)


def test_load_gives_the_models_config(exported):
    model, package = exported
    loaded = load(package)
    assert isinstance(loaded, ExportedPotential)
    assert loaded.cutoff == model.cutoff and loaded.species == model.species
    assert loaded.config == model.config and loaded.dtype == torch.float32
    with pytest.raises(EquipotInputError, match="unknown to the model"):
        loaded.check_species([79])


def test_one_atom_is_refused_naming_the_package(exported):
    _, package = exported
    atoms = make_ethanol()[:1]
    atoms.calc = EquipotCalculator(package)
    with pytest.raises(EquipotInputError, match="model.pt2.*at least\\s+two atoms"):
        atoms.get_potential_energy()


def test_a_model_that_cannot_be_traced_is_refused_and_nothing_written(tmp_path):
    save_model(tmp_path / "dimenet.pt", make_model({**MODEL_CONFIG, "block": "dimenet"},
                                                   dtype=torch.float32), {"dtype": "float32"})
    with pytest.raises(SystemExit, match="cannot be exported"):
        main([str(tmp_path / "dimenet.pt"), str(tmp_path / "dimenet.pt2")])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dimenet.pt"]


def test_batch_prediction_refuses_the_package_and_names_it(exported):
    from equipot import predict

    with pytest.raises(EquipotInputError, match="model.pt2.*one structure per call"):
        predict(load(exported[1]), [make_ethanol()])
