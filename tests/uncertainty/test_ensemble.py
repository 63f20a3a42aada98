"""Deep ensembles (equipot/model/ensemble.py): the mean of the members, their spread as σ,
calibrated on validation data, and one model file for all members."""

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from equipot import keys, load, save_model
from equipot.data.dataset import GraphDataset
from equipot.data.graph import atoms_to_graph
from equipot.datasets.emt import emt_copper
from equipot.model.build import build_potential
from equipot.uncertainty.fitting import calibrate_ensemble

from conftest import MODEL_CONFIG, assert_uncertainty_invariant_and_finite, make_cu_cell

COPPER = {**MODEL_CONFIG, "species": [29], "reference_energies": [-4.0], "block": "painn"}
SIZE = 3


@pytest.fixture(scope="module")
def ensemble():
    torch.manual_seed(0)
    model = build_potential({**COPPER, "uncertainty": {"method": "ensemble", "size": SIZE}},
                            dtype=torch.float64)
    with torch.no_grad():  # members that disagree visibly
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


def cell_batch(model, atoms=None):
    return Batch.from_data_list([atoms_to_graph(atoms or make_cu_cell(), model.cutoff)])


def test_the_ensemble_predicts_the_members_mean_and_their_spread(ensemble):
    batch = cell_batch(ensemble)
    members = [member(batch, compute_stress=True) for member in ensemble.members]
    out = ensemble(batch, compute_stress=True)
    for name in (keys.ENERGY, keys.FORCES, keys.STRESS, keys.ATOMIC_ENERGIES):
        expected = sum(m[name] for m in members) / SIZE
        torch.testing.assert_close(out[name], expected, rtol=1e-12, atol=1e-12)
    energies = np.array([float(m[keys.ENERGY][0]) for m in members])
    assert float(out[keys.ENERGY_UNCERTAINTY][0]) == pytest.approx(np.std(energies, ddof=1))
    forces = np.stack([m[keys.FORCES].numpy() for m in members])  # [K, N, 3]
    expected = np.sqrt(np.var(forces, axis=0, ddof=1).mean(axis=1))
    np.testing.assert_allclose(out[keys.FORCES_UNCERTAINTY].numpy(), expected, rtol=1e-10)
    assert (out[keys.FORCES_UNCERTAINTY] > 0).all()


def test_members_differ_and_the_file_holds_them_all(ensemble, tmp_path):
    first, second = (dict(m.named_parameters()) for m in ensemble.members[:2])
    assert any(not torch.equal(first[name], second[name]) for name in first)
    save_model(tmp_path / "ensemble.pt", ensemble)
    loaded = load(tmp_path / "ensemble.pt", dtype=torch.float64)
    assert len(loaded.members) == SIZE
    batch = cell_batch(ensemble)
    for name, value in ensemble(batch).items():
        assert torch.equal(loaded(batch)[name], value), name


def test_ensemble_uncertainty_is_rotation_invariant_and_finite_without_edges(ensemble):
    assert_uncertainty_invariant_and_finite(ensemble, rotation_seed=5, rtol=1e-8)


def test_calibration_makes_the_validation_sigma_the_rmse(ensemble):
    valid = GraphDataset.from_atoms(emt_copper(6, seed=1), COPPER["cutoff"])
    calibrated = calibrate_ensemble(ensemble, valid)
    assert calibrated.options.energy_scale != 1.0
    batch = Batch.from_data_list([valid[k] for k in range(len(valid))])
    out = calibrated(batch)
    for name, sigma in ((keys.ENERGY, keys.ENERGY_UNCERTAINTY),
                        (keys.FORCES, keys.FORCES_UNCERTAINTY)):
        rmse = (out[name] - batch[name]).square().mean().sqrt()
        assert float(out[sigma].square().mean().sqrt()) == pytest.approx(float(rmse), rel=1e-9)
