"""Tests of equipot.data: reading and validating labels, graphs, the disk cache, statistics
and the Lightning data module. Test data are small ASE structures written to tmp_path."""

import ase
import ase.db
import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list as ase_neighbor_list

import equipot.data.dataset as dataset_module
from equipot import keys
from equipot.data.datamodule import AtomisticDataModule
from equipot.data.dataset import GraphDataset
from equipot.data.graph import atoms_to_graph
from equipot.data.reading import (
    LabelKeys,
    WeightKeys,
    isolated_atom_energies,
    read_labels,
    read_structures,
)
from equipot.errors import EquipotInputError
from equipot.train.statistics import compute_statistics, element_counts

from conftest import run_defaults

CUTOFF = 3.0


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def labelled(atoms, energy, forces=None, stress=None):
    """``atoms`` with a SinglePointCalculator holding the given labels (ASE's plain keys)."""
    results = {"energy": energy}
    if forces is not None:
        results["forces"] = forces
    if stress is not None:
        results["stress"] = stress
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def molecules(count, seed=0, names=("H2O", "CH4")):
    """``count`` rattled molecules in a 10 Å vacuum box (pbc False), with energy and forces."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(count):
        atoms = molecule(names[k % len(names)])
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.center(vacuum=5.0)
        labelled(atoms, float(rng.normal(-10.0, 1.0)), rng.normal(size=(len(atoms), 3)))
        frames.append(atoms)
    return frames


def write(path, frames):
    ase.io.write(path, frames, format="extxyz")
    return path


def expect_error(call, path, index=None, field=None):
    """``call()`` raises an EquipotInputError naming ``path``, ``structure index`` and ``field``."""
    with pytest.raises(EquipotInputError) as info:
        call()
    message = str(info.value)
    assert str(path) in message
    if index is not None:
        assert f"structure {index}" in message
        assert info.value.index == index
        for other in range(10):
            if other != index:
                assert f"structure {other}" not in message
    if field is not None:
        assert field in message
        assert info.value.field == field
    return info.value


# ---------------------------------------------------------------------------------------------
# Reading labels
# ---------------------------------------------------------------------------------------------

def test_labels_from_info_arrays_and_calculator(tmp_path):
    frames = molecules(3)
    rng = np.random.default_rng(1)
    ref_energies, ref_forces = [], []
    for atoms in frames:
        ref_energies.append(float(rng.normal()))
        ref_forces.append(rng.normal(size=(len(atoms), 3)))
        atoms.info["REF_energy"] = ref_energies[-1]
        atoms.new_array("REF_forces", ref_forces[-1])
    path = write(tmp_path / "labels.xyz", frames)

    read = read_structures(path)
    # Plain energy/forces written by ASE come back in a SinglePointCalculator, not in info/arrays.
    assert all(atoms.calc is not None and "energy" in atoms.calc.results for atoms in read)
    assert all("energy" not in atoms.info and "forces" not in atoms.arrays for atoms in read)
    assert all("REF_energy" in atoms.info and "REF_forces" in atoms.arrays for atoms in read)

    plain = GraphDataset.from_file(path, CUTOFF, LabelKeys(), cache_dir=tmp_path / "cache")
    custom = GraphDataset.from_file(path, CUTOFF,
                                    LabelKeys(energy="REF_energy", forces="REF_forces"),
                                    cache_dir=tmp_path / "cache")
    for k, atoms in enumerate(frames):
        assert plain[k][keys.ENERGY].item() == pytest.approx(atoms.get_potential_energy(),
                                                             abs=1e-8)
        np.testing.assert_allclose(plain[k][keys.FORCES].numpy(), atoms.get_forces(), atol=1e-8)
        assert custom[k][keys.ENERGY].item() == pytest.approx(ref_energies[k], abs=1e-8)
        np.testing.assert_allclose(custom[k][keys.FORCES].numpy(), ref_forces[k], atol=1e-8)
    assert plain.tensors[keys.ENERGY].dtype == torch.float64
    assert keys.STRESS not in plain.fields  # absent everywhere: not a label


def test_stress_voigt_and_full_forms_give_the_same_matrix(tmp_path):
    matrix = np.array([[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]])
    voigt = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # xx, yy, zz, yz, xz, xy (ASE's order)
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    labelled(atoms, -3.0, np.zeros((2, 3)), stress=voigt)
    atoms.info["S6"] = voigt
    atoms.info["S9"] = matrix.ravel()
    path = write(tmp_path / "stress.xyz", [atoms])

    for stress_key in ("stress", "S6", "S9"):
        dataset = GraphDataset.from_file(path, CUTOFF, LabelKeys(stress=stress_key),
                                         cache_dir=tmp_path / "cache")
        stress = dataset.tensors[keys.STRESS]
        assert stress.shape == (1, 3, 3) and stress.dtype == torch.float64
        np.testing.assert_array_equal(stress[0].numpy(), matrix, err_msg=stress_key)
        assert dataset[0][keys.STRESS].shape == (1, 3, 3)


def test_stress_of_wrong_size_is_an_error():
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.info["S"] = np.arange(4.0)
    labelled(atoms, -3.0, np.zeros((1, 3)))
    expect_error(lambda: read_labels([atoms], LabelKeys(stress="S"), "inline.xyz"),
                 "inline.xyz", 0, keys.STRESS)


def test_ase_database_reads_like_extxyz(tmp_path):
    frames = molecules(2) + [labelled(bulk("Cu", "fcc", a=3.6), -4.0, np.zeros((1, 3)),
                                      stress=np.arange(1.0, 7.0))]
    frames[0].calc.results["stress"] = np.zeros(6)
    frames[1].calc.results["stress"] = np.zeros(6)
    db_path = tmp_path / "frames.db"
    with ase.db.connect(db_path) as db:
        for atoms in frames:
            db.write(atoms)
    xyz_path = write(tmp_path / "frames.xyz", frames)

    from_db = GraphDataset.from_file(db_path, CUTOFF, cache_dir=tmp_path / "cache")
    from_xyz = GraphDataset.from_file(xyz_path, CUTOFF, cache_dir=tmp_path / "cache")
    assert len(from_db) == 3
    assert from_db.fields == from_xyz.fields >= {keys.ENERGY, keys.FORCES, keys.STRESS}
    for name in from_xyz.fields:
        torch.testing.assert_close(from_db.tensors[name], from_xyz.tensors[name],
                                   atol=1e-7, rtol=0, msg=name)
    np.testing.assert_array_equal(from_db.tensors[keys.STRESS][2].numpy(),
                                  [[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]])


# ---------------------------------------------------------------------------------------------
# Errors name the file, the structure and the field
# ---------------------------------------------------------------------------------------------

def test_no_structure_with_an_energy_label_is_an_error(tmp_path):
    frames = molecules(3)
    path = write(tmp_path / "nolabel.xyz", frames)
    error = expect_error(lambda: GraphDataset.from_file(
        path, CUTOFF, LabelKeys(energy="REF_energy"), cache_dir=tmp_path / "cache"),
        path, field=keys.ENERGY)
    assert "REF_energy" in str(error) and "data.energy_key" in str(error)
    assert not list((tmp_path / "cache").glob("*.pt"))  # nothing cached for a bad file


def test_structures_lacking_a_label_are_flagged_and_hold_zeros(tmp_path):
    """Observation 6 of issue 12: partial labels were an error."""
    frames = molecules(4)
    for k, atoms in enumerate(frames):
        if k != 2:
            atoms.info["REF_energy"] = -1.0 * k
    frames[3].calc = SinglePointCalculator(frames[3], energy=-1.0)  # no forces
    path = write(tmp_path / "partial.xyz", frames)
    dataset = GraphDataset.from_file(path, CUTOFF, LabelKeys(energy="REF_energy"),
                                     cache_dir=tmp_path / "cache")
    has_energy = dataset.tensors[keys.label(keys.ENERGY).has].tolist()
    has_forces = dataset.tensors[keys.label(keys.FORCES).has].tolist()
    assert has_energy == [True, True, False, True] and has_forces == [True, True, True, False]
    assert dataset.label_counts() == {keys.ENERGY: 3, keys.FORCES: 3}
    assert dataset[2][keys.ENERGY].item() == 0.0
    assert torch.equal(dataset[3][keys.FORCES], torch.zeros(len(frames[3]), 3,
                                                            dtype=torch.float64))
    np.testing.assert_allclose(dataset[1][keys.FORCES].numpy(), frames[1].get_forces(), atol=1e-7)


def test_stress_is_a_label_of_the_periodic_structures_only(tmp_path):
    """Observation 6 of issue 12: a file mixing molecules and cells demanded stress of both."""
    cell = bulk("Cu", "fcc", a=3.6, cubic=True)
    labelled(cell, -3.0, np.zeros((4, 3)), np.arange(6.0) / 100)
    frames = molecules(2) + [cell]
    frames[0].calc.results["stress"] = np.ones(6)  # a molecule's stress: meaningless, ignored
    path = write(tmp_path / "mixed.xyz", frames)
    dataset = GraphDataset.from_file(path, CUTOFF, cache_dir=False)
    assert dataset.tensors[keys.label(keys.STRESS).has].tolist() == [False, False, True]
    assert dataset[2][keys.STRESS][0, 0, 1].item() == pytest.approx(0.05)


def test_stress_on_a_cell_without_volume_is_an_error(tmp_path):
    """Observation 2 of issue 12: a slab whose third cell vector is zero, with stress labels,
    trained to NaN from the first step (stress divided by a zero volume)."""
    slab = bulk("Cu", "fcc", a=3.6, cubic=True)
    slab.set_cell([slab.cell[0], slab.cell[1], [0.0, 0.0, 0.0]])
    slab.pbc = [True, True, False]
    good = bulk("Cu", "fcc", a=3.6, cubic=True)
    frames = [labelled(good, -1.0, np.zeros((4, 3)), np.zeros(6)),
              labelled(slab, -1.0, np.zeros((4, 3)), np.zeros(6))]
    path = write(tmp_path / "slab.xyz", frames)
    error = expect_error(lambda: GraphDataset.from_file(path, CUTOFF, cache_dir=False),
                         path, 1, keys.STRESS)
    assert "volume" in str(error)
    # Without the stress label the slab is fine.
    GraphDataset.from_file(path, CUTOFF, LabelKeys(stress=None), cache_dir=False)


def test_loss_weights_from_info_and_config_types(tmp_path):
    frames = molecules(4)
    frames[1].info["weight"] = 3.0
    frames[2].info["config_type"] = "md"
    frames[3].info.update(weight=0.5, config_type="md")
    path = write(tmp_path / "weights.xyz", frames)
    dataset = GraphDataset.from_file(path, CUTOFF, cache_dir=tmp_path / "cache",
                                     weight_keys=WeightKeys(config_type_weights={"md": 4.0}))
    assert dataset.tensors[keys.WEIGHT].tolist() == [1.0, 3.0, 4.0, 2.0]
    plain = GraphDataset.from_file(path, CUTOFF, cache_dir=tmp_path / "cache")
    assert plain.tensors[keys.WEIGHT].tolist() == [1.0, 3.0, 1.0, 0.5]  # a cache of its own

    frames[2].info["weight"] = -1.0
    bad = write(tmp_path / "negative.xyz", frames)
    expect_error(lambda: GraphDataset.from_file(bad, CUTOFF, cache_dir=False), bad, 2, "weight")


def test_non_numeric_label(tmp_path):
    frames = molecules(3)
    for k, atoms in enumerate(frames):
        atoms.info["REF_energy"] = "n/a" if k == 1 else -1.0
    path = write(tmp_path / "text_label.xyz", frames)
    expect_error(lambda: GraphDataset.from_file(
        path, CUTOFF, LabelKeys(energy="REF_energy"), cache_dir=tmp_path / "cache"),
        path, 1, keys.ENERGY)


def test_nan_in_positions(tmp_path):
    frames = molecules(3)
    frames[1].positions[1, 0] = np.nan
    path = write(tmp_path / "nanpos.xyz", frames)
    expect_error(lambda: GraphDataset.from_file(path, CUTOFF, cache_dir=tmp_path / "cache"),
                 path, 1, "positions")


def test_inf_in_energy(tmp_path):
    frames = molecules(4)
    frames[2].calc.results["energy"] = np.inf
    path = write(tmp_path / "infenergy.xyz", frames)
    expect_error(lambda: GraphDataset.from_file(path, CUTOFF, cache_dir=tmp_path / "cache"),
                 path, 2, keys.ENERGY)


def test_forces_of_wrong_shape(tmp_path):
    frames = molecules(3)
    for k, atoms in enumerate(frames):
        atoms.new_array("REF_forces", np.zeros((len(atoms), 2 if k == 1 else 3)))
    path = write(tmp_path / "badforces.xyz", frames)
    error = expect_error(lambda: GraphDataset.from_file(
        path, CUTOFF, LabelKeys(forces="REF_forces"), cache_dir=tmp_path / "cache"),
        path, 1, keys.FORCES)
    assert "(5, 3)" in str(error) and "(5, 2)" in str(error)  # structure 1 is CH4


def test_overlapping_atoms(tmp_path):
    frames = molecules(4)
    overlapping = frames[3]
    overlapping.positions[2] = overlapping.positions[1] + [0.05, 0.0, 0.0]
    path = write(tmp_path / "overlap.xyz", frames)
    expect_error(lambda: GraphDataset.from_file(path, CUTOFF, cache_dir=tmp_path / "cache"),
                 path, 3, "positions")


def test_overlap_with_own_periodic_image():
    atoms = ase.Atoms("H", cell=np.diag([0.05, 5.0, 5.0]), pbc=True)
    with pytest.raises(EquipotInputError, match="structure 0.*positions"):
        atoms_to_graph(atoms, CUTOFF, source="tiny.xyz", index=0)


def test_truncated_extxyz(tmp_path):
    text = write(tmp_path / "full.xyz", molecules(4)).read_text()
    lines = text.splitlines(keepends=True)
    frame_lines = len(lines) // 4
    # Cut in the middle of the third frame's atom lines, halfway through a line.
    cut = "".join(lines[:2 * frame_lines + 3]) + lines[2 * frame_lines + 3][:20]
    path = tmp_path / "truncated.xyz"
    path.write_text(cut)
    expect_error(lambda: read_structures(path), path)
    expect_error(lambda: GraphDataset.from_file(path, CUTOFF, cache_dir=tmp_path / "cache"),
                 path)


def test_garbage_file(tmp_path):
    text_path = tmp_path / "garbage.xyz"
    text_path.write_text("this is not\nan xyz file\n at all\n")
    expect_error(lambda: GraphDataset.from_file(text_path, CUTOFF, cache_dir=tmp_path / "cache"),
                 text_path)
    binary_path = tmp_path / "garbage.extxyz"
    binary_path.write_bytes(np.random.default_rng(0).bytes(500))
    expect_error(lambda: read_structures(binary_path), binary_path)
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    expect_error(lambda: read_structures(empty), empty)


def test_nonexistent_file(tmp_path):
    path = tmp_path / "does_not_exist.xyz"
    error = expect_error(lambda: GraphDataset.from_file(path, CUTOFF, cache_dir=tmp_path / "cache"),
                         path)
    assert "no such file" in str(error)
    expect_error(lambda: GraphDataset.from_file(path, CUTOFF, cache_dir=False), path)
    expect_error(lambda: read_structures(path), path)


# ---------------------------------------------------------------------------------------------
# Graphs
# ---------------------------------------------------------------------------------------------

def edge_vectors(graph):
    centre, neighbour = graph[keys.EDGE_INDEX]
    pos, cell = graph[keys.POSITIONS], graph[keys.CELL][0]
    return pos[neighbour] - pos[centre] + graph[keys.SHIFTS] @ cell


@pytest.mark.parametrize("structure", ["bulk", "slab", "molecule"])
def test_graph_fields_shapes_dtypes_and_edges(structure):
    if structure == "bulk":
        atoms = bulk("Si", "diamond", a=5.43)
        atoms.rattle(0.05, seed=1)
        cutoff = 4.0  # beyond the cell size: images of an atom with itself are neighbours
    elif structure == "slab":
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.cell[2] *= 3.0  # vacuum along z
        atoms.pbc = [True, True, False]
        atoms.rattle(0.05, seed=2)
        cutoff = 3.0
    else:
        atoms = molecule("CH3CH2OH")
        cutoff = 2.0
    energy, forces = -5.0, np.arange(3.0 * len(atoms)).reshape(-1, 3)
    graph = atoms_to_graph(atoms, cutoff, {keys.ENERGY: np.array(energy), keys.FORCES: forces})
    n = len(atoms)
    num_edges = graph[keys.EDGE_INDEX].shape[1]
    expected = {
        keys.ATOMIC_NUMBERS: ((n,), torch.int64),
        keys.POSITIONS: ((n, 3), torch.float64),
        keys.CELL: ((1, 3, 3), torch.float64),
        keys.PBC: ((1, 3), torch.bool),
        keys.EDGE_INDEX: ((2, num_edges), torch.int64),
        keys.SHIFTS: ((num_edges, 3), torch.float64),
        keys.ENERGY: ((1,), torch.float64),
        keys.FORCES: ((n, 3), torch.float64),
    }
    for name, (shape, dtype) in expected.items():
        assert tuple(graph[name].shape) == shape, name
        assert graph[name].dtype == dtype, name
    assert num_edges > 0
    np.testing.assert_array_equal(graph[keys.ATOMIC_NUMBERS].numpy(), atoms.numbers)
    np.testing.assert_array_equal(graph[keys.POSITIONS].numpy(), atoms.positions)
    np.testing.assert_array_equal(graph[keys.PBC][0].numpy(), atoms.pbc)
    assert graph[keys.ENERGY].item() == energy
    np.testing.assert_array_equal(graph[keys.FORCES].numpy(), forces)

    shifts = graph[keys.SHIFTS]
    assert torch.equal(shifts, shifts.round())  # integer cell shifts stored as floats
    assert torch.all(shifts[:, ~graph[keys.PBC][0]] == 0)
    lengths = edge_vectors(graph).norm(dim=1)
    assert torch.all(lengths < cutoff) and torch.all(lengths > 0.1)
    # Every pair within the cutoff is there (ASE's neighbour list as the oracle).
    i, j, shift = ase_neighbor_list("ijS", atoms, cutoff)
    ours = set(zip(*graph[keys.EDGE_INDEX].tolist(), map(tuple, shifts.long().tolist())))
    assert ours == set(zip(i.tolist(), j.tolist(), map(tuple, shift.tolist())))
    # Both directions of every edge.
    reverse = {(b, a, tuple(-s for s in shift_)) for a, b, shift_ in ours}
    assert reverse == ours


@pytest.mark.parametrize("box", [50.0, 2.0])
def test_molecule_in_dummy_box_has_zero_shifts(box):
    atoms = molecule("CH3CH2OH")
    atoms.cell = np.diag([box, box, box])  # a dummy box; even one smaller than the molecule
    atoms.pbc = False
    cutoff = 5.0
    graph = atoms_to_graph(atoms, cutoff)
    assert graph[keys.SHIFTS].shape[0] > 0
    assert torch.all(graph[keys.SHIFTS] == 0)
    n = len(atoms)
    distances = np.linalg.norm(atoms.positions[:, None] - atoms.positions[None], axis=-1)
    within = (distances < cutoff) & ~np.eye(n, dtype=bool)
    assert graph[keys.EDGE_INDEX].shape[1] == int(within.sum())
    assert torch.all(edge_vectors(graph).norm(dim=1) < cutoff)


# ---------------------------------------------------------------------------------------------
# Dataset and its disk cache
# ---------------------------------------------------------------------------------------------

def forbid_conversion(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been used")
    monkeypatch.setattr(dataset_module, "read_structures", fail)
    monkeypatch.setattr(dataset_module, "atoms_to_graph", fail)


def assert_same_graph(actual, expected):
    for name in expected.keys():
        assert name in actual, name
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)


def test_second_call_loads_from_cache(tmp_path, monkeypatch):
    frames = molecules(5)
    path = write(tmp_path / "data.xyz", frames)
    cache_dir = tmp_path / "cache"
    first = GraphDataset.from_file(path, CUTOFF, cache_dir=cache_dir)
    cached = list(cache_dir.glob("*.pt"))
    assert len(cached) == 1
    assert not [p for p in cache_dir.iterdir() if p.suffix != ".pt"]  # no temporary left

    with monkeypatch.context() as patch:
        forbid_conversion(patch)
        second = GraphDataset.from_file(path, CUTOFF, cache_dir=cache_dir)
    assert len(second) == len(first) == 5
    assert second.source == str(path)
    assert set(second.tensors) == set(first.tensors)
    for name in first.tensors:
        assert torch.equal(second.tensors[name], first.tensors[name]), name

    # The cache is plain tensors.
    tensors = torch.load(cached[0], weights_only=True)
    assert isinstance(tensors, dict)
    assert all(isinstance(value, torch.Tensor) for value in tensors.values())
    assert tensors[keys.POSITIONS].dtype == torch.float64

    # dataset[i] is the graph atoms_to_graph builds directly.
    structures = read_structures(path)
    labels = read_labels(structures, LabelKeys(), str(path))
    for k, atoms in enumerate(structures):
        direct = atoms_to_graph(atoms, CUTOFF, {f: v[k] for f, v in labels.items()})
        assert_same_graph(second[k], direct)
        assert_same_graph(first[k], direct)
        assert second[k][keys.NUM_ATOMS].tolist() == [len(atoms)]


def test_changes_create_new_cache_entries(tmp_path, monkeypatch):
    frames = molecules(3)
    path = write(tmp_path / "data.xyz", frames)
    cache_dir = tmp_path / "cache"

    def entries():
        return {p.name for p in cache_dir.glob("*.pt")}

    original = GraphDataset.from_file(path, CUTOFF, cache_dir=cache_dir)
    assert len(entries()) == 1

    # Other cutoff: a new entry, and a different graph (only C-H and O-H bonds within 1.2 Å).
    narrower = GraphDataset.from_file(path, 1.2, cache_dir=cache_dir)
    assert len(entries()) == 2
    assert narrower.tensors[keys.NUM_EDGES].tolist() == [4, 8, 4]
    assert original.tensors[keys.NUM_EDGES].tolist() == [6, 20, 6]

    # Other label keys: a new entry.
    no_forces = GraphDataset.from_file(path, CUTOFF, LabelKeys(forces=None), cache_dir=cache_dir)
    assert len(entries()) == 3
    assert keys.FORCES not in no_forces.fields
    GraphDataset.from_file(path, CUTOFF, LabelKeys(stress=None), cache_dir=cache_dir)
    assert len(entries()) == 4

    # Other file content (same name, same size of text): a new entry with the new labels.
    frames[1].calc.results["energy"] += 1.0
    write(path, frames)
    changed = GraphDataset.from_file(path, CUTOFF, cache_dir=cache_dir)
    assert len(entries()) == 5
    assert changed.tensors[keys.ENERGY][1] == pytest.approx(original.tensors[keys.ENERGY][1] + 1.0)

    # Nothing changed: no new entry, and no conversion.
    with monkeypatch.context() as patch:
        forbid_conversion(patch)
        again = GraphDataset.from_file(path, CUTOFF, cache_dir=cache_dir)
    assert len(entries()) == 5
    assert torch.equal(again.tensors[keys.ENERGY], changed.tensors[keys.ENERGY])


def test_cache_disabled(tmp_path):
    path = write(tmp_path / "data.xyz", molecules(2))
    dataset = GraphDataset.from_file(path, CUTOFF, cache_dir=False)
    assert len(dataset) == 2
    assert not (tmp_path / "cache").exists()


def test_subset_and_from_atoms(tmp_path):
    frames = molecules(6)
    dataset = GraphDataset.from_atoms(frames, CUTOFF, source="inline")
    assert len(dataset) == 6 and dataset.source == "inline"
    part = GraphDataset.subset(dataset, [4, 1, 2])
    assert len(part) == 3
    for k, index in enumerate([4, 1, 2]):
        assert_same_graph(part[k], dataset[index])
    assert part.tensors[keys.NUM_ATOMS].tolist() == [len(frames[i]) for i in (4, 1, 2)]


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------

E0 = {1: -13.6, 6: -1029.5, 8: -2041.3}


def synthetic_structures(count=16, seed=0, noise=1e-4):
    """Random H/C/O clusters of varied composition; energy = Σ E0 + small noise."""
    rng = np.random.default_rng(seed)
    frames, energies = [], []
    for k in range(count):
        numbers = [8, 1, 6] if k == 0 else rng.choice([1, 6, 8], size=rng.integers(2, 9)).tolist()
        grid = np.array([(x, y, z) for x in range(3) for y in range(3) for z in range(3)], float)
        sites = grid[rng.permutation(len(grid))[:len(numbers)]] * 1.3
        atoms = ase.Atoms(numbers=numbers, positions=sites + rng.uniform(-0.1, 0.1, sites.shape))
        energy = sum(E0[z] for z in numbers) + rng.normal(0.0, noise)
        labelled(atoms, energy, rng.normal(0.0, 0.5, (len(atoms), 3)))
        frames.append(atoms)
        energies.append(energy)
    return frames, np.array(energies)


def test_statistics_recover_reference_energies_and_match_numpy():
    frames, energies = synthetic_structures()
    dataset = GraphDataset.from_atoms(frames, CUTOFF)
    stats = compute_statistics(dataset)
    assert stats["species"] == [1, 6, 8]  # sorted, though the first structure is O, H, C
    assert all(type(z) is int for z in stats["species"])
    np.testing.assert_allclose(stats["reference_energies"], [E0[1], E0[6], E0[8]], atol=2e-3)

    counts = np.array([[np.sum(atoms.numbers == z) for z in (1, 6, 8)] for atoms in frames],
                      dtype=float)
    np.testing.assert_array_equal(element_counts(dataset, [1, 6, 8]), counts)
    reference = np.linalg.lstsq(counts, energies, rcond=None)[0]
    np.testing.assert_allclose(stats["reference_energies"], reference, rtol=0, atol=1e-8)
    per_atom = (energies - counts @ reference) / counts.sum(axis=1)
    assert stats["shift"] == pytest.approx(per_atom.mean(), abs=1e-9)
    forces = np.concatenate([atoms.get_forces() for atoms in frames])
    assert stats["scale"] == pytest.approx(np.sqrt(np.mean(forces ** 2)), rel=1e-12)
    neighbours = sum(len(ase_neighbor_list("i", atoms, CUTOFF)) for atoms in frames)
    # rel=1e-6: the package divides in float32 (an int64 tensor by a numpy float).
    assert stats["avg_num_neighbors"] == pytest.approx(neighbours / counts.sum(), rel=1e-6)
    assert all(type(value) is float for value in
               [stats["shift"], stats["scale"], stats["avg_num_neighbors"],
                *stats["reference_energies"]])


def test_statistics_with_isolated_atoms(tmp_path):
    frames, energies = synthetic_structures(seed=3)
    isolated = [labelled(ase.Atoms([z]), e) for z, e in [(8, -2040.0), (1, -13.0), (6, -1030.0)]]
    path = write(tmp_path / "isolated.xyz", isolated)
    table = isolated_atom_energies(path)
    assert table == {1: -13.0, 6: -1030.0, 8: -2040.0}

    stats = compute_statistics(GraphDataset.from_atoms(frames, CUTOFF), table)
    assert stats["reference_energies"] == [-13.0, -1030.0, -2040.0]
    counts = np.array([[np.sum(atoms.numbers == z) for z in (1, 6, 8)] for atoms in frames])
    per_atom = (energies - counts @ np.array([-13.0, -1030.0, -2040.0])) / counts.sum(axis=1)
    assert stats["shift"] == pytest.approx(per_atom.mean(), abs=1e-9)

    with pytest.raises(EquipotInputError, match="isolated_atoms"):
        compute_statistics(GraphDataset.from_atoms(frames, CUTOFF), {1: -13.0, 6: -1030.0})


def test_isolated_atom_energies_custom_key_and_errors(tmp_path):
    atoms = [ase.Atoms("H"), ase.Atoms("O")]
    atoms[0].info["E_iso"], atoms[1].info["E_iso"] = -0.5, -75.0
    path = write(tmp_path / "iso.xyz", atoms)
    assert isolated_atom_energies(path, energy_key="E_iso") == {1: -0.5, 8: -75.0}

    two = write(tmp_path / "notisolated.xyz",
                [labelled(ase.Atoms("H"), -0.5), labelled(molecule("H2"), -1.1)])
    expect_error(lambda: isolated_atom_energies(two), two, 1)


def test_statistics_without_forces_use_energy_spread():
    frames, energies = synthetic_structures(seed=5, noise=0.05)
    dataset = GraphDataset.from_atoms(frames, CUTOFF, LabelKeys(forces=None))
    assert keys.FORCES not in dataset.fields
    stats = compute_statistics(dataset)
    counts = np.array([[np.sum(atoms.numbers == z) for z in (1, 6, 8)] for atoms in frames])
    reference = np.linalg.lstsq(counts, energies, rcond=None)[0]
    per_atom = (energies - counts @ reference) / counts.sum(axis=1)
    assert stats["scale"] == pytest.approx(per_atom.std(), rel=1e-9)


# ---------------------------------------------------------------------------------------------
# Data module
# ---------------------------------------------------------------------------------------------

def make_module(tmp_path, train, **options):
    module = AtomisticDataModule(cutoff=CUTOFF, seed=options.pop("seed", 0), **run_defaults(
        "data", train=str(train), cache_dir=str(tmp_path / "cache"), **options))
    module.setup("fit")
    return module


def split_indices(module):
    return module.indices


def test_datamodule_splits(tmp_path):
    train = write(tmp_path / "train.xyz", molecules(20))
    module = make_module(tmp_path, train, valid_count=3, test_fraction=0.25, seed=7)
    splits = split_indices(module)
    assert {name: len(indices) for name, indices in splits.items()} == \
        {"train": 12, "valid": 3, "test": 5}
    every = splits["train"] + splits["valid"] + splits["test"]
    assert sorted(every) == list(range(20))  # disjoint and complete
    full = GraphDataset.from_file(train, CUTOFF, cache_dir=tmp_path / "cache")
    for name, indices in splits.items():
        assert len(module.sets[name]) == len(indices)
        for k, index in enumerate(indices[:3]):
            assert_same_graph(module.sets[name][k], full[index])

    same = split_indices(make_module(tmp_path, train, valid_count=3, test_fraction=0.25, seed=7))
    assert same == splits
    other = split_indices(make_module(tmp_path, train, valid_count=3, test_fraction=0.25, seed=8))
    assert other != splits
    assert sorted(other["train"] + other["valid"] + other["test"]) == list(range(20))

    assert module.labels == [keys.ENERGY, keys.FORCES]
    batch = next(iter(module.train_dataloader()))
    assert batch.num_graphs == min(16, 12)
    assert len(module.test_dataloader()) == 1


def test_datamodule_fraction_split_and_no_test(tmp_path):
    train = write(tmp_path / "train.xyz", molecules(20))
    module = make_module(tmp_path, train, valid_fraction=0.1)
    sizes = {name: len(dataset) for name, dataset in module.sets.items()}
    assert sizes == {"train": 18, "valid": 2}
    assert module.test_dataloader() == []


@pytest.mark.parametrize("options", [dict(valid_count=15, test_count=10),
                                     dict(valid_fraction=0.5, test_fraction=0.5)])
def test_datamodule_held_out_sets_larger_than_the_data(tmp_path, options):
    train = write(tmp_path / "train.xyz", molecules(20))
    with pytest.raises(EquipotInputError):
        make_module(tmp_path, train, **options)


def test_datamodule_split_too_large_for_one_set(tmp_path):
    train = write(tmp_path / "train.xyz", molecules(10))
    with pytest.raises(EquipotInputError, match="cannot hold out 10 of 10"):
        make_module(tmp_path, train, valid_count=10)
    error = expect_error(lambda: make_module(tmp_path, train, valid_fraction=0.0), train)
    assert "validation" in str(error)


def test_datamodule_separate_valid_file(tmp_path):
    train = write(tmp_path / "train.xyz", molecules(10))
    valid = write(tmp_path / "valid.xyz", molecules(4, seed=1, names=("CH4",)))
    module = make_module(tmp_path, train, valid=str(valid))
    assert isinstance(module.sets["valid"], GraphDataset)
    assert module.sets["valid"].source == str(valid)
    assert len(module.sets["valid"]) == 4
    assert len(module.sets["train"]) == 10  # the whole training file: no valid split taken
    assert "test" not in module.sets
    energies = torch.cat([batch[keys.ENERGY] for batch in module.val_dataloader()])
    expected = [atoms.get_potential_energy() for atoms in read_structures(valid)]
    np.testing.assert_allclose(energies.numpy(), expected)


@pytest.mark.parametrize("which", ["valid", "test"])
def test_datamodule_unknown_element_in_held_out_file(tmp_path, which):
    train = write(tmp_path / "train.xyz", molecules(10))  # H, C, O
    other = write(tmp_path / f"{which}_with_nitrogen.xyz",
                  molecules(3, seed=2, names=("H2O", "NH3")))
    error = expect_error(lambda: make_module(tmp_path, train, valid_count=2,
                                             **{which: str(other)}), other)
    assert "[7]" in str(error)


def test_datamodule_unknown_element_in_split(tmp_path):
    frames = molecules(20)
    nitrogen = 5
    frames[nitrogen] = molecules(2, seed=4, names=("NH3",))[0]
    train = write(tmp_path / "train.xyz", frames)
    seed = next(seed for seed in range(100)
                if nitrogen in np.random.default_rng(seed).permutation(20)[:2])
    module = AtomisticDataModule(cutoff=CUTOFF, seed=seed, **run_defaults(
        "data", train=str(train), valid_count=2, cache_dir=str(tmp_path / "cache")))
    with pytest.raises(EquipotInputError, match=r"\[7\]"):
        module.setup("fit")


def test_consecutive_structures_slice_into_the_batch_collation_gives():
    from torch_geometric.data import Batch

    frames = [molecule("CH4"), bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1)), molecule("H2O"),
              molecule("CH3CH2OH")]
    dataset = GraphDataset.from_atoms(frames, CUTOFF, LabelKeys.only())
    sliced = dataset.consecutive(1, 4)
    collated = Batch.from_data_list([dataset[index] for index in (1, 2, 3)])
    assert sliced.num_graphs == 3
    for name, value in sliced.items():
        assert torch.equal(value, collated[name]), name
    assert set(sliced) == {name for name in collated.keys() if name in keys.FIELDS} - {
        keys.NUM_ATOMS}
