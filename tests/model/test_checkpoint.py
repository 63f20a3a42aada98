"""Tests of the model file (equipot.model.checkpoint): round trip, validation, migrations and
atomic writes."""

import os

import numpy as np
import pytest
import torch
from ase.build import molecule
from torch_geometric.data import Batch

import equipot.io
import equipot.model.checkpoint as checkpoint_module
from equipot import keys
from equipot.data.graph import atoms_to_graph
from equipot.errors import EquipotInputError
from equipot.model.build import build_potential
from equipot.model.checkpoint import FORMAT_VERSION, load, read_checkpoint, save_model
from equipot.nn.convolution import edge_tensor_product
from equipot.version import __version__

from conftest import MODEL_CONFIG

CONFIG = dict(block="schnet", cutoff=4.0, num_features=16, num_blocks=2, num_radial=8,
              species=[1, 6, 8], reference_energies=[-1.0, -2.0, -3.0], shift=0.0, scale=1.0,
              avg_num_neighbors=8.0)
CHECKPOINT_KEYS = {"format_version", "equipot_version", "model_config", "state_dict", "metadata"}


def make_model(seed=0, dtype=torch.float64):
    """A model whose every parameter is randomly perturbed, so that all of them matter."""
    torch.manual_seed(seed)
    model = build_potential(dict(CONFIG), dtype=dtype)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model.eval()


def make_batch():
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.05, seed=1)
    water = molecule("H2O")
    water.cell = np.diag([5.0, 5.5, 6.0])
    water.pbc = True
    water.rattle(0.05, seed=2)
    return Batch.from_data_list([atoms_to_graph(atoms, CONFIG["cutoff"])
                                 for atoms in (ethanol, water)])


def predict(model, batch):
    return model(batch, compute_forces=True, compute_stress=True)


@pytest.fixture
def saved(tmp_path):
    """(path, model) of a model saved with metadata."""
    model = make_model()
    path = tmp_path / "model.pt"
    save_model(path, model, metadata={"epoch": 3})
    return path, model


# ---------------------------------------------------------------------------------------------
# Round trip
# ---------------------------------------------------------------------------------------------

def test_round_trip_gives_the_same_predictions(saved):
    path, model = saved
    batch = make_batch()
    expected = predict(model, batch)
    loaded = load(path, dtype=torch.float64)
    actual = predict(loaded, batch)
    for name in (keys.ENERGY, keys.FORCES, keys.STRESS, keys.ATOMIC_ENERGIES):
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-12, msg=name)
    # The prediction depends on the weights: another model predicts otherwise.
    other = predict(make_model(seed=1), batch)
    assert not torch.allclose(other[keys.ENERGY], expected[keys.ENERGY], atol=1e-3)
    assert expected[keys.FORCES].abs().max() > 1e-3
    assert not loaded.training
    assert loaded.species == CONFIG["species"] and loaded.cutoff == CONFIG["cutoff"]


def test_load_dtype(saved):
    path, model = saved
    loaded64 = load(path, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in loaded64.parameters())
    for (name, original), (_, restored) in zip(model.named_parameters(),
                                               loaded64.named_parameters()):
        assert torch.equal(original, restored), name
    loaded32 = load(path)
    assert all(p.dtype == torch.float32 for p in loaded32.parameters())
    batch = make_batch()
    torch.testing.assert_close(predict(loaded32, batch)[keys.ENERGY],
                               predict(model, batch)[keys.ENERGY], rtol=1e-5, atol=1e-4)


def test_file_is_a_plain_versioned_dict(saved):
    path, model = saved
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw, dict)
    assert set(raw) == CHECKPOINT_KEYS
    assert raw["format_version"] == FORMAT_VERSION
    assert raw["equipot_version"] == __version__
    assert raw["model_config"] == CONFIG
    assert raw["metadata"] == {"epoch": 3}
    state = model.state_dict()
    assert set(raw["state_dict"]) == set(state)
    for name, tensor in raw["state_dict"].items():
        assert torch.equal(tensor, state[name]), name
        assert tensor.device.type == "cpu" and not tensor.requires_grad


def test_metadata_and_config_round_trip(tmp_path):
    metadata = {"epoch": 12, "note": "trained on water", "losses": [0.5, 0.25],
                "nested": {"splits": (1, 2, 3), "seed": np.int64(7), "rmse": np.float64(0.125)},
                "flag": True, "nothing": None}
    path = tmp_path / "sub" / "dir" / "model.pt"  # missing directories are created
    save_model(path, make_model(), metadata)
    expected = {"epoch": 12, "note": "trained on water", "losses": [0.5, 0.25],
                "nested": {"splits": [1, 2, 3], "seed": 7, "rmse": 0.125},
                "flag": True, "nothing": None}
    checkpoint = read_checkpoint(path)
    assert checkpoint["metadata"] == expected
    assert type(checkpoint["metadata"]["nested"]["seed"]) is int
    loaded = load(path)
    assert loaded.metadata == expected
    assert loaded.config == CONFIG

    save_model(tmp_path / "bare.pt", make_model())
    assert read_checkpoint(tmp_path / "bare.pt")["metadata"] == {}


def test_metadata_with_numpy_array(tmp_path):
    path = tmp_path / "model.pt"
    save_model(path, make_model(), {"per_element_rmse": np.array([0.1, 0.2, 0.3])})
    assert read_checkpoint(path)["metadata"]["per_element_rmse"] in (
        [0.1, 0.2, 0.3], pytest.approx([0.1, 0.2, 0.3]))


# ---------------------------------------------------------------------------------------------
# Files that are not (readable) checkpoints
# ---------------------------------------------------------------------------------------------

def expect_error(path, match=None):
    with pytest.raises(EquipotInputError) as info:
        load(path)
    assert str(path) in str(info.value)
    if match is not None:
        assert match in str(info.value)
    with pytest.raises(EquipotInputError):
        read_checkpoint(path)
    return info.value


def test_random_bytes(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(np.random.default_rng(0).bytes(1000))
    expect_error(path, "not an equipot model file")


def test_saved_list(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    expect_error(path, "not an equipot model file")


def test_dict_without_format_version(tmp_path):
    path = tmp_path / "state_dict.pt"
    torch.save(make_model().state_dict(), path)
    expect_error(path, "format_version")


def test_missing_and_empty_files(tmp_path):
    expect_error(tmp_path / "nothing_here.pt", "no such model file")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    expect_error(empty)


def test_pickled_module_is_refused(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"format_version": FORMAT_VERSION, "model": make_model()}, path)
    expect_error(path, "not an equipot model file")


def test_newer_format_version(saved):
    path, _ = saved
    raw = torch.load(path, weights_only=True)
    raw["format_version"] = FORMAT_VERSION + 1
    torch.save(raw, path)
    error = expect_error(path, "newer")
    assert str(FORMAT_VERSION + 1) in str(error)


@pytest.mark.parametrize("version", [0, "1"])
def test_invalid_format_version(saved, version):
    path, _ = saved
    raw = torch.load(path, weights_only=True)
    raw["format_version"] = version
    torch.save(raw, path)
    expect_error(path, "format")


# ---------------------------------------------------------------------------------------------
# Migrations
# ---------------------------------------------------------------------------------------------

def test_migration_is_applied(tmp_path, monkeypatch):
    model = make_model()
    # A format-2 file that (in this pretend history) called the model config "config".
    old = {"format_version": 2, "equipot_version": "0.0.1", "config": dict(CONFIG),
           "state_dict": {name: tensor.detach() for name, tensor in model.state_dict().items()},
           "metadata": {"epoch": 1}}
    path = tmp_path / "old.pt"
    torch.save(old, path)
    calls = []

    def rename_config(checkpoint):
        calls.append(checkpoint["format_version"])
        checkpoint = dict(checkpoint)
        checkpoint["model_config"] = checkpoint.pop("config")
        checkpoint["format_version"] = 3
        return checkpoint

    monkeypatch.setattr(checkpoint_module, "FORMAT_VERSION", 3)
    monkeypatch.setitem(checkpoint_module.MIGRATIONS, 2, rename_config)

    checkpoint = read_checkpoint(path)
    assert calls == [2]
    assert checkpoint["format_version"] == 3
    assert "config" not in checkpoint and checkpoint["model_config"] == CONFIG

    loaded = load(path, dtype=torch.float64)
    assert calls == [2, 2]
    batch = make_batch()
    torch.testing.assert_close(predict(loaded, batch)[keys.ENERGY],
                               predict(model, batch)[keys.ENERGY], rtol=0, atol=1e-12)
    assert loaded.metadata == {"epoch": 1}

    # New files are written in the current format and need no migration.
    save_model(tmp_path / "new.pt", model)
    assert torch.load(tmp_path / "new.pt", weights_only=True)["format_version"] == 3
    read_checkpoint(tmp_path / "new.pt")
    assert calls == [2, 2]


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------

def failing_save(obj, f, *args, **kwargs):
    with open(f, "wb") as handle:
        handle.write(b"PK\x03\x04 half a checkpoint")
    raise OSError("disk full (simulated)")


def test_failed_save_leaves_previous_file(saved, monkeypatch):
    path, model = saved
    before = path.read_bytes()
    monkeypatch.setattr(equipot.io.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(path, make_model(seed=5), {"epoch": 99})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]
    assert load(path).metadata == {"epoch": 3}


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(equipot.io.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(tmp_path / "model.pt", make_model())
    assert os.listdir(tmp_path) == []


def test_successful_save_replaces_file_and_leaves_no_temporary(saved):
    path, _ = saved
    save_model(path, make_model(seed=4), {"epoch": 4})
    assert os.listdir(path.parent) == [path.name]
    assert read_checkpoint(path)["metadata"] == {"epoch": 4}


def test_format_1_files_with_one_readout_still_load(tmp_path):
    """Format 1 stored the readout after the last block as ``readout.*``."""
    model = make_model()
    stage = CONFIG["num_blocks"]
    state_dict = {name.replace(f"readouts.{stage}.", "readout."): tensor.detach()
                  for name, tensor in model.state_dict().items()}
    assert any(name.startswith("readout.") for name in state_dict)
    torch.save({"format_version": 1, "equipot_version": "0.1.0", "model_config": dict(CONFIG),
                "state_dict": state_dict, "metadata": {}}, tmp_path / "old.pt")
    batch = make_batch()
    torch.testing.assert_close(predict(load(tmp_path / "old.pt", dtype=torch.float64), batch),
                               predict(model, batch), rtol=0, atol=1e-12)


@pytest.mark.parametrize("block", ["nequip", "mace"])
def test_format_2_files_with_e3nn_tensor_product_constants_still_load(tmp_path, block):
    """Format 2 NequIP and MACE files hold the constants of e3nn's o3.TensorProduct (an empty
    weight, output_mask, Wigner 3j buffers) under blocks.<k>.convolution."""
    config = {**CONFIG, "block": block, "block_options": {"l_max": 2}}
    torch.manual_seed(0)
    model = build_potential(config, dtype=torch.float64).eval()
    state_dict = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    for k, convolution in enumerate(block.convolution for block in model.blocks):
        e3nn_module = edge_tensor_product(convolution.irreps_in, convolution.irreps_sh,
                                          {ir for _, ir in convolution.irreps_out})
        state_dict.update({f"blocks.{k}.convolution.{name}": tensor
                           for name, tensor in e3nn_module.state_dict().items()})
    assert any(name.endswith("convolution.output_mask") for name in state_dict)
    torch.save({"format_version": 2, "equipot_version": "0.1.0", "model_config": config,
                "state_dict": state_dict, "metadata": {}}, tmp_path / "old.pt")
    batch = make_batch()
    torch.testing.assert_close(predict(load(tmp_path / "old.pt", dtype=torch.float64), batch),
                               predict(model, batch), rtol=0, atol=1e-12)


def test_a_config_key_the_builder_does_not_read_is_refused():
    """A key an older equipot wrote (format 3's network_floor_factor), or a typo, is never
    ignored silently: the model it names would be another."""
    with pytest.raises(ValueError, match=r"unknown keys \['network_floor_factor'\]"):
        build_potential({**MODEL_CONFIG, "network_floor_factor": 0.5})


def test_a_first_form_llpr_file_loads_and_predicts_its_force_sigma_as_written(tmp_path):
    """Files written before the atom-level LLPR (format 4, no ``atom_covariance``) gave each
    force component the structure-level rigidity of its atom: σ_F,i = β √(φ_iᵀ (FᵀF + ς² I)⁻¹
    φ_i), i.e. β/α times σ(e_i). They still load, and predict exactly that."""
    torch.manual_seed(0)
    config = {**MODEL_CONFIG, "uncertainty": {"method": "llpr", "regularizer": 1e-3,
                                              "energy_scale": 0.5, "forces_scale": 0.2}}
    model = build_potential(config, dtype=torch.float64)
    size = model.num_last_layer_features
    features = torch.randn(40, size, dtype=torch.float64)
    covariance = features.T @ features
    state = {name: value for name, value in model.state_dict().items()
             if "atom_covariance" not in name}
    state["uncertainty.covariance"] = covariance
    state["uncertainty.inverse_covariance"] = torch.linalg.inv(
        covariance + 1e-3 * torch.eye(size, dtype=torch.float64))
    torch.save({"format_version": 4, "equipot_version": "0.1.0", "model_config": config,
                "state_dict": state, "metadata": {"dtype": "float64"}}, tmp_path / "first.pt")
    loaded = load(tmp_path / "first.pt")
    batch = Batch.from_data_list([atoms_to_graph(molecule("CH3CH2OH"), 4.0)])
    out = loaded(batch)
    torch.testing.assert_close(out[keys.FORCES_UNCERTAINTY],
                               0.2 / 0.5 * out[keys.ATOMIC_ENERGIES_UNCERTAINTY],
                               rtol=1e-12, atol=0)
    assert read_checkpoint(tmp_path / "first.pt")["format_version"] == FORMAT_VERSION


def test_a_last_layer_llpr_file_loads_and_predicts_its_force_sigma_as_written(tmp_path):
    """Files of format 5 read each atom's last-layer features φ_i alone for its force σ,
    σ_F,i = β √(φ_iᵀ (Φ_sᵀΦ_s + λ²)⁻¹ φ_i), with [S, H, H] atom covariances. They still load,
    and predict exactly that."""
    torch.manual_seed(0)
    uncertainty = {"method": "llpr", "energy_scale": 0.5, "forces_scale": 0.2}
    written = build_potential({**MODEL_CONFIG, "uncertainty": {
        **uncertainty, "force_features": "last_layer"}}, dtype=torch.float64)
    size, count = written.num_last_layer_features, len(MODEL_CONFIG["species"])
    features = torch.randn(count, 40, size, dtype=torch.float64)
    inverse = torch.linalg.inv(features.transpose(1, 2) @ features)
    state = {**written.state_dict(), "uncertainty.inverse_atom_covariance": inverse}
    torch.save({"format_version": 5, "equipot_version": "0.1.0",
                "model_config": {**MODEL_CONFIG, "uncertainty": uncertainty},
                "state_dict": state, "metadata": {"dtype": "float64"}}, tmp_path / "old.pt")
    loaded = load(tmp_path / "old.pt")
    assert loaded.config["uncertainty"]["force_features"] == "last_layer"
    batch = Batch.from_data_list([atoms_to_graph(molecule("CH3CH2OH"), 4.0)])
    phi = loaded.last_layer_features(batch)
    species = loaded.species_of_z[batch[keys.ATOMIC_NUMBERS]]
    expected = 0.2 * torch.einsum("nh,nhk,nk->n", phi, inverse[species], phi).sqrt()
    torch.testing.assert_close(loaded(batch)[keys.FORCES_UNCERTAINTY], expected,
                               rtol=1e-10, atol=0)
