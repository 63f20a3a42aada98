"""Shared fixtures of the physics and calculator tests: a small float64 model with random,
scaled-up weights (so energies, forces and stress are far from zero) and test structures."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111, molecule
from torch_geometric.data import Batch

from equipot import build_potential, keys
from equipot.blocks.registry import FAMILIES
from equipot.data.graph import atoms_to_graph
from equipot.datasets.emt import emt_copper
from equipot.testing.block_contract import scale_to_test_forces
from equipot.train.config import composed

MODEL_CONFIG = dict(block="schnet", cutoff=4.0, num_features=16, num_blocks=2, num_radial=8,
                    species=[1, 6, 8, 29], reference_energies=[-1.0, -2.0, -3.0, -4.0],
                    shift=0.1, scale=2.0, avg_num_neighbors=10.0)


def run_defaults(section: str, **overrides) -> dict:
    """Section ``section`` of equipot-train's default config (``configs/``, the one place a
    run's defaults are written), with ``overrides``."""
    return {**composed("data.train=train.xyz")[section], **overrides}


def make_model(config=None, dtype=torch.float64, seed=0, weight_factor=None):
    """A model with seeded random weights. Block and readout weights are multiplied by
    ``weight_factor``, or by default scaled until the forces on a test structure are of order
    1 eV/Å (``equipot.testing.block_contract.scale_to_test_forces``, the same for every
    family), so that the network part of the energy is large and non-linear."""
    config = dict(config or MODEL_CONFIG)
    torch.manual_seed(seed)
    model = build_potential(config, dtype=dtype).eval()
    if weight_factor is None:
        probe = make_ethanol() if {1, 6, 8} <= set(config["species"]) else make_cu_cell()
        return scale_to_test_forces(model, probe)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(("blocks.", "readouts.")):
                parameter.mul_(weight_factor)
    return model


# ---------------------------------------------------------------- evaluation helpers

def evaluate(model, atoms_list, forces=True, stress=False):
    """The model's outputs (numpy) for one Atoms or a batch of several."""
    single = not isinstance(atoms_list, (list, tuple))
    graphs = [atoms_to_graph(atoms, model.cutoff) for atoms in
              ([atoms_list] if single else atoms_list)]
    out = model(Batch.from_data_list(graphs), compute_forces=forces, compute_stress=stress)
    return {name: value.detach().numpy() for name, value in out.items()}


def energy(model, atoms) -> float:
    """Energy of one structure, neighbour list built afresh."""
    return float(evaluate(model, atoms, forces=False)[keys.ENERGY][0])


def fd_forces(model, atoms, h=1e-5):
    """−∂E/∂x by central differences over every coordinate."""
    atoms = atoms.copy()
    reference = atoms.positions.copy()
    forces = np.zeros_like(reference)
    for index in np.ndindex(*reference.shape):
        values = []
        for sign in (+1, -1):
            positions = reference.copy()
            positions[index] += sign * h
            atoms.positions = positions
            values.append(energy(model, atoms))
        forces[index] = -(values[0] - values[1]) / (2 * h)
    return forces


def fd_stress(model, atoms, h=1e-5):
    """(1/V) ∂E/∂ε by central differences of symmetric strains ε applied to cell and atoms."""
    atoms = atoms.copy()
    cell = atoms.cell.array.copy()
    volume = abs(np.linalg.det(cell))
    stress = np.zeros((3, 3))
    for i in range(3):
        for j in range(i, 3):
            values = []
            for sign in (+1, -1):
                strain = np.zeros((3, 3))
                strain[i, j] += 0.5 * sign * h
                strain[j, i] += 0.5 * sign * h
                atoms.set_cell(cell @ (np.eye(3) + strain), scale_atoms=True)
                values.append(energy(model, atoms))
            stress[i, j] = stress[j, i] = (values[0] - values[1]) / (2 * h * volume)
    return stress


def relative_error(actual, expected):
    return np.abs(actual - expected).max() / np.abs(expected).max()


def random_rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


@pytest.fixture(scope="session", params=sorted(FAMILIES))
def model_config(request):
    """The test model's config, once for each interaction block."""
    return {**MODEL_CONFIG, "block": request.param}


@pytest.fixture(scope="session")
def build_model():
    """Factory: build_model(config=None, dtype=torch.float64, seed=0, weight_factor=None)."""
    return make_model


@pytest.fixture(scope="session")
def model(model_config):
    """Shared float64 model of ``model_config``, in eval mode; tests must not modify it."""
    return make_model(model_config)


def make_ethanol(seed=1):
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=seed)
    return atoms


def make_cu_cell(seed=2):
    """Two Cu atoms in a triclinic cell whose lattice vectors (≈ 2.5, 2.6, 5.0 Å) are all
    shorter than 2 × cutoff, so atoms see their own periodic images."""
    atoms = bulk("Cu", "fcc", a=3.6).repeat((1, 1, 2))
    distortion = np.eye(3) + np.random.default_rng(0).uniform(-0.05, 0.05, (3, 3))
    atoms.set_cell(atoms.cell.array @ distortion, scale_atoms=True)
    atoms.rattle(0.1, seed=seed)
    return atoms


def make_cu_slab(seed=3):
    """Cu(111) slab with an O adatom, pbc = (T, T, F) with a 12 Å vacuum c vector."""
    atoms = fcc111("Cu", size=(2, 2, 2), a=3.6, vacuum=6.0)
    add_adsorbate(atoms, "O", 1.5, "fcc")
    atoms.center(vacuum=6.0, axis=2)
    atoms.pbc = [True, True, False]
    atoms.rattle(0.05, seed=seed)
    return atoms


@pytest.fixture
def ethanol() -> Atoms:
    return make_ethanol()


@pytest.fixture
def cu_cell() -> Atoms:
    return make_cu_cell()


@pytest.fixture
def cu_slab() -> Atoms:
    return make_cu_slab()


@pytest.fixture
def float64_default_dtype():
    """e3nn builds D-matrices from float32 constants unless float64 is the default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def write_copper_splits(directory, train: int = 24, valid: int = 6, test: int = 6):
    """``train.xyz``, ``valid.xyz`` and ``test.xyz`` of EMT Cu cells (seeds 0, 1, 2) in
    ``directory``, which is returned."""
    import ase.io

    for name, count, seed in (("train", train, 0), ("valid", valid, 1), ("test", test, 2)):
        ase.io.write(directory / f"{name}.xyz", emt_copper(count, seed=seed))
    return directory


UNCERTAINTIES = ("energy_uncertainty", "forces_uncertainty", "energies_uncertainty")


def assert_uncertainty_invariant_and_finite(model, rotation_seed: int, rtol: float) -> None:
    """The calculator's uncertainties of a Cu cell equal those of a rotated copy (to ``rtol``),
    and are finite for one Cu atom and for two too far apart to share an edge."""
    from equipot import EquipotCalculator

    calculator = EquipotCalculator(model)
    cell, rotation = make_cu_cell(), random_rotation(rotation_seed)
    rotated = cell.copy()
    rotated.set_cell(cell.cell @ rotation.T, scale_atoms=False)
    rotated.positions = cell.positions @ rotation.T
    results = []
    for atoms in (cell, rotated):
        atoms.calc = calculator
        atoms.get_potential_energy()
        results.append(dict(calculator.results))
    for name in UNCERTAINTIES:
        np.testing.assert_allclose(results[0][name], results[1][name], rtol=rtol, atol=1e-12)
    for atoms in (Atoms("Cu"), Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 9.0]])):
        atoms.calc = calculator
        atoms.get_potential_energy()
        for name in UNCERTAINTIES:
            assert np.isfinite(calculator.results[name]).all(), name


def train_here(overrides: list[str], run_dir):
    """equipot-train's ``train`` in this process, on the config it composes from
    ``overrides``; returns the test metrics."""
    from hydra import compose, initialize_config_dir

    from equipot.cli import train as train_cli

    with initialize_config_dir(config_dir=train_cli.CONFIG_DIR, version_base="1.3"):
        config = compose("train", overrides=overrides)
    return train_cli.train(config, run_dir, overrides)


def enter_workdir(workdir, monkeypatch) -> None:
    """Run in ``workdir``, with the graph cache inside it."""
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("EQUIPOT_CACHE", str(workdir / "cache"))
