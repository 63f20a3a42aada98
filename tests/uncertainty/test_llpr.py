"""Last-layer prediction rigidity (equipot/model/llpr.py, equipot/uncertainty/fitting.py):
the closed form, checked against features found independently (the gradient of the energy
with respect to the last-layer weights), and the properties any uncertainty must have."""

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from equipot import EquipotCalculator, keys, load, save_model
from equipot.data.dataset import GraphDataset
from equipot.data.graph import atoms_to_graph
from equipot.datasets.emt import emt_copper, label_with_emt
from equipot.uncertainty.fitting import fit_llpr

from conftest import (
    MODEL_CONFIG,
    assert_uncertainty_invariant_and_finite,
    make_cu_cell,
    make_ethanol,
)

COPPER = {**MODEL_CONFIG, "species": [29], "reference_energies": [-4.0]}


def last_layer_parameters(model):
    """Every readout's last linear layer's weight and bias, in the order of the features."""
    parameters = []
    for readout in model.readouts.values():
        parameters.append(readout.last_layer.weight)
        if readout.last_layer.bias is not None:
            parameters.append(readout.last_layer.bias)
    return parameters


def gradient_features(model, atoms, per_atom=False):
    """f = ∂E/∂w (or φ_i = ∂e_i/∂w per atom): the energy is linear in the last-layer weights
    w, so its gradient is the vector the LLPR formula reads, found without the model's own
    feature code."""
    batch = Batch.from_data_list([atoms_to_graph(atoms, model.cutoff)])
    parameters = last_layer_parameters(model)
    out = model(batch, compute_forces=False)
    targets = out[keys.ATOMIC_ENERGIES] if per_atom else out[keys.ENERGY]
    rows = []
    for target in targets:
        gradients = torch.autograd.grad(target, parameters, retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in gradients]).double())
    return torch.stack(rows)


@pytest.fixture(scope="module")
def copper_sets():
    return (GraphDataset.from_atoms(emt_copper(12, seed=0), COPPER["cutoff"]),
            GraphDataset.from_atoms(emt_copper(6, seed=1), COPPER["cutoff"]))


@pytest.fixture(scope="module", params=["schnet", "mace"])
def fitted(request, copper_sets):
    """A float64 model with LLPR fitted on 12 Cu cells and calibrated on 6 (SchNet: an MLP
    readout with a bias; MACE: a linear readout after block 1 and an MLP after block 2)."""
    from conftest import make_model

    model = make_model({**COPPER, "block": request.param, "num_blocks": 2})
    return model, fit_llpr(model, *copper_sets)


def last_readout_inputs(model, atoms):
    """x_i: what the first linear layer of the last readout's MLP reads, caught by a hook."""
    caught = []
    first_layer = list(model.readouts.values())[-1].network[0]
    handle = first_layer.register_forward_pre_hook(lambda _, args: caught.append(args[0]))
    model(Batch.from_data_list([atoms_to_graph(atoms, model.cutoff)]), compute_forces=False)
    handle.remove()
    return caught[0].detach().double()


def regularized_inverse(rows, relative, per_feature=False):
    """(XᵀX + r c I)⁻¹, c the mean diagonal of XᵀX per row; ``per_feature``: (XᵀX + r D)⁻¹,
    D the diagonal of XᵀX per row."""
    diagonal = rows.square().sum(0) / len(rows)
    ridge = torch.diag(diagonal if per_feature else diagonal.mean().expand_as(diagonal))
    return torch.linalg.pinv(rows.T @ rows + relative * ridge, hermitian=True)


def quadratic(x, inverse):
    return torch.sqrt(torch.einsum("nh,hk,nk->n", x, inverse, x)).numpy()


def environments(model, atoms):
    """ψ_i = [φ_i, x_i]: an atom's gradient features and the last readout's inputs."""
    return torch.cat([gradient_features(model, atoms, per_atom=True),
                      last_readout_inputs(model, atoms)], dim=1)


def assert_closed_form(model, with_llpr, training, structures):
    """σ_E = α √(fᵀ (FᵀF + ς²)⁻¹ f), σ(e_i) = α √(φ_iᵀ (FᵀF + ς²)⁻¹ φ_i) from gradient
    features, and σ(F_i) = β_s √(ψ_iᵀ (Ψ_sᵀΨ_s + λ² D_s)⁻¹ ψ_i), ψ_i = [φ_i, x_i]."""
    options = with_llpr.uncertainty.options
    F = torch.cat([gradient_features(model, atoms) for atoms in training])
    inverse = regularized_inverse(F, options.regularizer)
    Psi = torch.cat([environments(model, atoms) for atoms in training])
    numbers = np.concatenate([atoms.numbers for atoms in training])
    atom_inverse = {z: regularized_inverse(Psi[numbers == z], options.atom_regularizer,
                                           per_feature=True) for z in np.unique(numbers)}
    calculator = EquipotCalculator(with_llpr)
    for atoms in structures:
        f = gradient_features(model, atoms)
        phi = gradient_features(model, atoms, per_atom=True)
        psi = environments(model, atoms)
        atoms = atoms.copy()
        atoms.calc = calculator
        atoms.get_potential_energy()
        results = calculator.results
        np.testing.assert_allclose(results["energy_uncertainty"],
                                   options.energy_scale * quadratic(f, inverse)[0], rtol=1e-8)
        np.testing.assert_allclose(results["energies_uncertainty"],
                                   options.energy_scale * quadratic(phi, inverse), rtol=1e-8)
        expected = [quadratic(psi[k:k + 1], atom_inverse[z])[0]
                    for k, z in enumerate(atoms.numbers)]
        scales = np.broadcast_to(options.forces_scale, len(model.species))
        np.testing.assert_allclose(results["forces_uncertainty"], np.array(expected) * scales[
            model.species_of_z[torch.as_tensor(atoms.numbers)].numpy()], rtol=1e-8)


def test_llpr_is_the_closed_form_of_the_gradient_features(fitted):
    model, with_llpr = fitted
    assert_closed_form(model, with_llpr, emt_copper(12, seed=0),
                       [emt_copper(1, seed=7)[0], make_cu_cell()])


def test_llpr_leaves_the_predictions_unchanged(fitted):
    model, with_llpr = fitted
    batch = Batch.from_data_list([atoms_to_graph(make_cu_cell(), model.cutoff)])
    plain, uncertain = model(batch, compute_stress=True), with_llpr(batch, compute_stress=True)
    for name in (keys.ENERGY, keys.FORCES, keys.STRESS):
        assert torch.equal(plain[name], uncertain[name]), name


def test_llpr_calibration_makes_the_validation_sigma_the_rmse(fitted, copper_sets):
    """α² = ⟨ΔE²⟩/⟨σ̃_E²⟩ and β² = ⟨ΔF²⟩/⟨σ̃_F²⟩: on the validation set the RMS of the
    calibrated σ is the RMSE, for energies and for force components."""
    _, with_llpr = fitted
    batch = Batch.from_data_list([copper_sets[1][k] for k in range(len(copper_sets[1]))])
    out = with_llpr(batch)
    for name, sigma in ((keys.ENERGY, keys.ENERGY_UNCERTAINTY),
                        (keys.FORCES, keys.FORCES_UNCERTAINTY)):
        rmse = (out[name] - batch[name]).square().mean().sqrt()
        assert float(out[sigma].square().mean().sqrt()) == pytest.approx(float(rmse), rel=1e-9)


def test_llpr_is_rotation_invariant_and_finite_without_edges(fitted):
    assert_uncertainty_invariant_and_finite(fitted[1], rotation_seed=4, rtol=1e-9)


def test_a_model_with_llpr_saves_and_loads(fitted, tmp_path):
    _, with_llpr = fitted
    save_model(tmp_path / "model.pt", with_llpr)
    loaded = load(tmp_path / "model.pt", dtype=torch.float64)
    assert loaded.config["uncertainty"]["method"] == "llpr"
    batch = Batch.from_data_list([atoms_to_graph(make_cu_cell(), loaded.cutoff)])
    for name, value in with_llpr(batch).items():
        assert torch.equal(loaded(batch)[name], value), name


def test_llpr_of_a_molecule_model(build_model):
    """Any family with atom features, and forces' rigidity per element: H, C and O of
    ethanol."""
    model = build_model({**MODEL_CONFIG, "block": "painn"})
    molecules = [make_ethanol(seed) for seed in range(8)]
    for atoms in molecules:
        atoms.info["energy"] = 0.0
        atoms.arrays["forces"] = np.zeros((len(atoms), 3))
    data = GraphDataset.from_atoms(molecules, model.cutoff)
    with_llpr = fit_llpr(model, data, data)
    assert_closed_form(model, with_llpr, molecules, [make_ethanol(9)])


def emt_copper_gold(count: int, seed: int) -> list:
    """EMT Cu cells with half of each cell's atoms, chosen at random, turned into Au and the
    cell labelled by EMT again."""
    rng = np.random.default_rng(seed)
    structures = []
    for atoms in emt_copper(count, seed=seed):
        numbers = atoms.numbers.copy()
        numbers[rng.permutation(len(atoms))[: len(atoms) // 2]] = 79
        atoms.numbers = numbers
        structures.append(label_with_emt(atoms))
    return structures


COPPER_GOLD = {**MODEL_CONFIG, "species": [29, 79], "reference_energies": [-4.0, -4.0]}


@pytest.fixture(scope="module")
def copper_gold_model():
    from conftest import make_model

    return make_model(COPPER_GOLD)


def test_llpr_calibrates_each_element_to_its_own_force_rmse(copper_gold_model, tmp_path):
    """An element's force leverage is measured among its own training atoms, so its size
    (about H / N_s in distribution) says nothing of that element's error level: β is fitted
    per element, and on the validation set each element's RMS σ_F is its force RMSE, also
    after the model file is saved and loaded."""
    train, valid = (GraphDataset.from_atoms(emt_copper_gold(count, seed), COPPER_GOLD["cutoff"])
                    for count, seed in ((12, 0), (6, 1)))
    fitted = fit_llpr(copper_gold_model, train, valid)
    batch = Batch.from_data_list([valid[k] for k in range(len(valid))])
    out = fitted(batch)
    for z in (29, 79):
        atoms = batch[keys.ATOMIC_NUMBERS] == z
        rmse = (out[keys.FORCES][atoms] - batch[keys.FORCES][atoms]).square().mean().sqrt()
        rms_sigma = out[keys.FORCES_UNCERTAINTY][atoms].square().mean().sqrt()
        assert float(rms_sigma) == pytest.approx(float(rmse), rel=1e-9), z
    save_model(tmp_path / "model.pt", fitted)
    loaded = load(tmp_path / "model.pt", dtype=torch.float64)
    torch.testing.assert_close(loaded(batch)[keys.FORCES_UNCERTAINTY],
                               out[keys.FORCES_UNCERTAINTY], rtol=1e-12, atol=0)


def test_an_element_absent_from_validation_takes_the_scale_of_all_atoms(copper_gold_model):
    train = GraphDataset.from_atoms(emt_copper_gold(12, 0), COPPER_GOLD["cutoff"])
    copper_only = GraphDataset.from_atoms(emt_copper(6, seed=1), COPPER_GOLD["cutoff"])
    copper, gold = fit_llpr(copper_gold_model, train, copper_only).uncertainty.options.forces_scale
    assert gold == copper != 1.0
