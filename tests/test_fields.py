"""The field registry (equipot/keys.py): every field of graphs, datasets and model outputs is
declared there with what it belongs to, its shape and its symmetry; and a label declared there
alone is read, batched, trained on, scored, tabulated and plotted."""

import ase.io
import numpy as np
import pytest
from ase.build import bulk, molecule
from torch_geometric.data import Batch

from equipot import keys
from equipot.analysis.evaluation import evaluate, format_table
from equipot.analysis.plots import write_parity_plots
from equipot.cli.evaluate import parse_arguments
from equipot.data.dataset import GraphDataset
from equipot.data.graph import atoms_to_graph
from equipot.data.reading import LabelKeys
from equipot.train.config import check_config, composed, register_config_sources
from equipot.train.loss import WeightedLoss
from equipot.train.metrics import ErrorMetrics

from conftest import MODEL_CONFIG, random_rotation, run_defaults

CHARGED = {**MODEL_CONFIG, "energy_terms": [{"name": "electrostatics", "accuracy": 1e-12}]}


def labelled_structures():
    """Two water molecules and a copper cell with every label the registry knows."""
    frames = [molecule("H2O"), molecule("H2O"), bulk("Cu", "fcc", a=3.6).repeat(2)]
    for k, atoms in enumerate(frames):
        atoms.rattle(0.05, seed=k)
        atoms.info["energy"] = -1.0 - k
        atoms.arrays["forces"] = np.full((len(atoms), 3), 0.1 * k)
        atoms.info["dipole"] = [0.1, 0.2, 0.3 * k]
        atoms.info["stress"] = np.arange(6) * 0.01
    return frames


def assert_declared(name, tensor, counts):
    field = keys.FIELDS[name]
    shape = list(tensor.shape)
    assert shape.pop(field.item_dim) == counts[field.per], name
    assert tuple(shape) == field.shape, name


def test_dataset_graph_and_output_fields_have_their_declared_items_and_shapes(build_model):
    frames = labelled_structures()
    dataset = GraphDataset.from_atoms(frames, MODEL_CONFIG["cutoff"])
    counts = {keys.ATOM: sum(map(len, frames)), keys.STRUCTURE: len(frames),
              keys.EDGE: int(dataset.tensors[keys.NUM_EDGES].sum())}
    for name, tensor in dataset.tensors.items():
        assert_declared(name, tensor, counts)
    batch = Batch.from_data_list([dataset[k] for k in range(len(dataset))])
    for name in batch.keys():
        if name != "ptr":  # torch_geometric's own
            assert_declared(name, batch[name], counts)
    out = build_model(CHARGED)(batch, compute_forces=True, compute_stress=True)
    assert set(out) == {keys.ENERGY, keys.ATOMIC_ENERGIES, keys.FORCES, keys.STRESS,
                        keys.CHARGES, keys.DIPOLE}
    for name, value in out.items():
        assert_declared(name, value, counts)


def transformed(value, symmetry, rotation):
    """``value`` [items, …] after rotating its structure by ``rotation``, as ``symmetry`` says."""
    if symmetry == keys.VECTOR:
        return value @ rotation.T
    if symmetry == keys.TENSOR:
        return rotation @ value @ rotation.T
    assert symmetry == keys.INVARIANT
    return value


def test_every_output_transforms_under_rotation_as_its_declared_symmetry(build_model):
    model = build_model(CHARGED)
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=0)
    rotation = random_rotation(3)
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rotation.T
    before, after = (model(Batch.from_data_list([atoms_to_graph(a, model.cutoff)]))
                     for a in (atoms, rotated))
    assert set(before) == {keys.ENERGY, keys.ATOMIC_ENERGIES, keys.FORCES, keys.CHARGES,
                           keys.DIPOLE}
    for name, value in before.items():
        expected = transformed(value.double().numpy(), keys.FIELDS[name].symmetry, rotation)
        np.testing.assert_allclose(after[name].double().numpy(), expected, atol=1e-9,
                                   err_msg=name)


@pytest.fixture
def charge_label(monkeypatch):
    """Partial charges made a label the way a developer would: one Label in the registry."""
    monkeypatch.setattr(keys, "FIELDS", {name: field for name, field in keys.FIELDS.items()
                                         if name != keys.CHARGES})
    keys.register(keys.Label(keys.CHARGES, keys.ATOM, (), "e", keys.INVARIANT,
                             "reference partial charges", noun="charge"))
    yield keys.label(keys.CHARGES)
    monkeypatch.undo()
    register_config_sources()  # the config groups of the registry as it was


def charge_labelled_water(path):
    """Three water molecules; the first two with reference charges under arrays["q_ref"]."""
    frames = []
    for k in range(3):
        atoms = molecule("H2O")
        atoms.rattle(0.05, seed=k)
        atoms.info["energy"] = -1.0 - k
        if k < 2:
            atoms.arrays["q_ref"] = np.array([-0.8, 0.4, 0.4]) + 0.05 * k
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")
    return frames


def test_a_label_added_to_the_registry_alone_is_read_trained_scored_and_plotted(
        charge_label, build_model, tmp_path):
    frames = charge_labelled_water(tmp_path / "water.xyz")
    dataset = GraphDataset.from_file(tmp_path / "water.xyz", MODEL_CONFIG["cutoff"],
                                     cache_dir=False,
                                     label_keys=LabelKeys(charges="q_ref"))
    assert dataset.label_counts() == {keys.ENERGY: 3, keys.CHARGES: 2}
    assert dataset.tensors[charge_label.has].tolist() == [True, True, False]

    batch = Batch.from_data_list([dataset[k] for k in range(len(dataset))])
    model = build_model(CHARGED)
    predicted = model(batch, compute_forces=False)
    labelled = np.r_[np.ones(6, bool), np.zeros(3, bool)]  # atoms of the first two molecules
    reference = np.concatenate([a.arrays["q_ref"] for a in frames[:2]])
    error = predicted[keys.CHARGES].detach().double().numpy()[labelled] - reference

    loss = WeightedLoss(**run_defaults("loss", energy_weight=0.0, charges_weight=2.0))
    np.testing.assert_allclose(float(loss(predicted, batch)["charges"].detach()),
                               2.0 * np.mean(error ** 2), rtol=1e-10)
    metrics = ErrorMetrics()
    metrics.update(predicted, batch)
    np.testing.assert_allclose(float(metrics.compute()["charges_mae"]), np.abs(error).mean(),
                               rtol=1e-10)

    result = evaluate(model, dataset)
    np.testing.assert_allclose(result.pairs[keys.CHARGES][0], reference)
    np.testing.assert_allclose(result.metrics["charges_rmse"], np.sqrt(np.mean(error ** 2)),
                               rtol=1e-6)
    assert any(line.startswith("charges") and line.endswith("me")
               for line in format_table(result.metrics).splitlines())
    written = write_parity_plots(result.pairs, tmp_path)
    assert tmp_path / "parity_charges.png" in written

    run = composed("data.train=water.xyz", "data.charges_key=q_ref", "loss.charges_weight=2.0")
    check_config(run)  # the label is a config option, set without "+", with no YAML line
    assert run["data"]["charges_key"] == "q_ref" and run["loss"]["charges_weight"] == 2.0
    assert composed("data.train=water.xyz")["loss"]["charges_weight"] == 0.0
    assert parse_arguments(["model.pt", "water.xyz", "--charges-key", "q_ref"]).charges_key \
        == "q_ref"


def test_a_field_is_declared_once_with_a_known_kind_and_symmetry():
    with pytest.raises(ValueError, match="registered twice"):
        keys.register(keys.Field(keys.ENERGY, keys.STRUCTURE, (), "eV", keys.INVARIANT, ""))
    with pytest.raises(ValueError, match="symmetry"):
        keys.register(keys.Field("spin", keys.ATOM, (), "", "pseudovector", ""))
    with pytest.raises(KeyError, match="not a label"):
        keys.label(keys.POSITIONS)
