"""The contract every registered interaction-block family must keep, as checks any test suite
can run on any family (``run_block_contract("myblock")``; equipot's own tests run it on every
family in ``FAMILIES``, and on a toy family defined in a test file alone).

Each check builds a small float64 model of the family with random weights scaled until the
forces on a molecule are of order 1 eV/Å (``contract_model``: no per-family tuning), and compares
the model against independent numbers:

- ``features_transform_by_their_irreps``: every stage's features of a rotated (and inverted)
  structure equal D(Q) applied to the original's, D from the stage's declared ``irreps_out``;
- ``energy_is_invariant``: under rotation, translation and permutation of the atoms (forces
  rotate and permute with them);
- ``forces_and_stress_are_derivatives``: against central finite differences of the energy,
  on a molecule, a triclinic crystal whose atoms see their own images, and a slab;
- ``model_file_round_trip``: ``save_model`` → ``load`` predicts the same to 1e-12;
- ``calculator_and_md``: the ASE calculator gives the Potential's energy and forces, and 40
  velocity-Verlet steps of 0.25 fs conserve the total energy.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.build import fcc111, molecule
from ase.md.verlet import VelocityVerlet
from e3nn import o3
from torch_geometric.data import Batch

from equipot import keys
from equipot.calculator import EquipotCalculator
from equipot.data.graph import atoms_to_graph
from equipot.model.build import build_potential
from equipot.model.checkpoint import load, save_model
from equipot.model.potential import Potential

SPECIES = [1, 6, 8, 29]
CONTRACT_CONFIG = dict(cutoff=4.0, num_features=16, num_blocks=2, num_radial=8,
                       species=SPECIES, reference_energies=[-1.0, -2.0, -3.0, -4.0], shift=0.1,
                       scale=2.0, avg_num_neighbors=10.0)
FORCE_SCALE = (0.3, 30.0)  # eV/Å: RMS force on ethanol of a contract model
WEIGHT_STEP = 1.25  # first step of the scaling of block and readout weights into FORCE_SCALE


def contract_model(block: str, block_options: dict | None = None, seed: int = 0) -> Potential:
    """A float64 model of ``block`` in eval mode: seeded random weights, scaled by
    ``scale_to_test_forces`` on ethanol."""
    torch.manual_seed(seed)
    model = build_potential({**CONTRACT_CONFIG, "block": block,
                             "block_options": block_options or {}}, dtype=torch.float64).eval()
    return scale_to_test_forces(model, ethanol())


def scale_to_test_forces(model: Potential, atoms: Atoms) -> Potential:
    """``model`` with its block and readout weights multiplied by one factor, found by a
    bisection in log space from steps of WEIGHT_STEP, that puts the RMS force on ``atoms`` in
    FORCE_SCALE: the network part of the energy is then large and non-linear, with no
    per-family tuning (MACE's energy is a polynomial of high degree in its weights)."""
    scaled = [parameter for name, parameter in model.named_parameters()
              if name.startswith(("blocks.", "readouts."))]
    step, direction = math.log(WEIGHT_STEP), 0
    for _ in range(30):
        rms = float(np.sqrt((evaluate(model, atoms)[keys.FORCES] ** 2).mean()))
        if FORCE_SCALE[0] <= rms <= FORCE_SCALE[1]:
            return model
        wanted = 1 if rms < FORCE_SCALE[0] else -1
        if direction and wanted != direction:  # stepped over the window: halve the step
            step /= 2
        direction = wanted
        with torch.no_grad():
            for parameter in scaled:
                parameter.mul_(math.exp(direction * step))
    raise AssertionError(f"{model.config['block']}: RMS force {rms:.3g} eV/Å of the contract "
                         f"model stays outside {FORCE_SCALE}: its weights cannot be scaled to "
                         f"test it")


# ---------------------------------------------------------------- structures

def ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    return atoms


def triclinic_crystal() -> Atoms:
    """H, C, O and Cu in a triclinic cell with lattice vectors shorter than twice the cutoff,
    so atoms see their own periodic images."""
    cell = np.array([[4.3, 0.0, 0.0], [0.9, 4.0, 0.0], [-0.6, 0.7, 4.6]])
    fractional = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.1], [0.2, 0.7, 0.5], [0.7, 0.2, 0.6],
                           [0.45, 0.05, 0.35]])
    atoms = Atoms(numbers=[29, 8, 6, 1, 1], scaled_positions=fractional, cell=cell, pbc=True)
    atoms.rattle(0.05, seed=2)
    return atoms


def slab() -> Atoms:
    """Cu(111), pbc = (T, T, F), with an O adatom."""
    atoms = fcc111("Cu", size=(2, 2, 2), a=3.6, vacuum=6.0)
    atoms += Atoms("O", positions=[atoms.positions[-1] + [0.0, 0.0, 1.8]])
    atoms.rattle(0.05, seed=3)
    return atoms


# ---------------------------------------------------------------- evaluation

def evaluate(model: Potential, atoms: Atoms, stress: bool = False) -> dict[str, np.ndarray]:
    graph = atoms_to_graph(atoms, model.cutoff)
    out = model(Batch.from_data_list([graph]), compute_forces=True, compute_stress=stress)
    return {name: value.detach().numpy() for name, value in out.items()}


def energy(model: Potential, atoms: Atoms) -> float:
    graph = atoms_to_graph(atoms, model.cutoff)
    with torch.no_grad():
        return float(model(Batch.from_data_list([graph]), compute_forces=False)[keys.ENERGY][0])


def transformed(atoms: Atoms, matrix: np.ndarray) -> Atoms:
    copy = atoms.copy()
    copy.positions = atoms.positions @ matrix.T
    copy.set_cell(atoms.cell.array @ matrix.T, scale_atoms=False)
    return copy


def fixed_rotation(alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """[3, 3] float64 rotation of Euler angles (rad), e3nn's convention."""
    angles = torch.tensor([alpha, beta, gamma], dtype=torch.float64)
    return o3.angles_to_matrix(*angles)


def wigner_d(irreps: o3.Irreps, rotation: torch.Tensor) -> torch.Tensor:
    """D(Q) of ``irreps`` in float64 (e3nn builds it in the default dtype)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return irreps.D_from_matrix(rotation)
    finally:
        torch.set_default_dtype(previous)


def stage_features(model: Potential, atoms: Atoms) -> list[torch.Tensor]:
    """The output features of every block."""
    features = []
    handles = [block.register_forward_hook(lambda _, __, out: features.append(out.detach()))
               for block in model.blocks]
    try:
        evaluate(model, atoms)
    finally:
        for handle in handles:
            handle.remove()
    return features


def assert_close(actual, expected, tolerance: float, what: str) -> None:
    error = np.abs(np.asarray(actual) - np.asarray(expected)).max()
    scale = max(np.abs(np.asarray(expected)).max(), 1e-3)
    if not error <= tolerance * scale:
        raise AssertionError(f"{what}: deviation {error:.3g} exceeds {tolerance:g} × {scale:.3g}")


# ---------------------------------------------------------------- the checks

def features_transform_by_their_irreps(model: Potential) -> None:
    rotation = fixed_rotation(0.7, 1.1, -0.4)
    for matrix in (rotation, -rotation):  # a rotation, and one times inversion
        for atoms in (ethanol(), triclinic_crystal()):
            original = stage_features(model, atoms)
            rotated = stage_features(model, transformed(atoms, matrix.numpy()))
            for index, (before, after) in enumerate(zip(original, rotated), 1):
                wigner = wigner_d(model.blocks[index - 1].irreps_out, matrix)
                if before.shape[1] != wigner.shape[0]:
                    raise AssertionError(f"block {index} gives {before.shape[1]} features, its "
                                         f"irreps_out {model.blocks[index - 1].irreps_out} "
                                         f"declare {wigner.shape[0]}")
                if before.abs().max() < 1e-3:
                    raise AssertionError(f"block {index}: features trivially zero")
                assert_close(after, before @ wigner.T, 1e-9, f"block {index} features")


def energy_is_invariant(model: Potential) -> None:
    rotation = fixed_rotation(-1.3, 2.0, 0.5).numpy()
    permutation = np.random.default_rng(5)
    for atoms in (ethanol(), triclinic_crystal(), slab()):
        reference = evaluate(model, atoms)
        rotated = evaluate(model, transformed(atoms, rotation))
        assert_close(rotated[keys.ENERGY], reference[keys.ENERGY], 1e-10, "rotated energy")
        assert_close(rotated[keys.FORCES], reference[keys.FORCES] @ rotation.T, 1e-9,
                     "rotated forces")
        moved = atoms.copy()
        moved.positions += [0.7, -1.3, 2.1]
        assert_close(evaluate(model, moved)[keys.ENERGY], reference[keys.ENERGY], 1e-10,
                     "translated energy")
        order = permutation.permutation(len(atoms))
        permuted = evaluate(model, atoms[order])
        assert_close(permuted[keys.ENERGY], reference[keys.ENERGY], 1e-10, "permuted energy")
        assert_close(permuted[keys.FORCES], reference[keys.FORCES][order], 1e-9,
                     "permuted forces")


def forces_and_stress_are_derivatives(model: Potential, step: float = 1e-5) -> None:
    for atoms in (ethanol(), triclinic_crystal(), slab()):
        out = evaluate(model, atoms, stress=bool(atoms.pbc.any()))
        numerical = np.zeros_like(atoms.positions)
        for index in np.ndindex(*atoms.positions.shape):
            values = []
            for sign in (1, -1):
                displaced = atoms.copy()
                displaced.positions[index] += sign * step
                values.append(energy(model, displaced))
            numerical[index] = -(values[0] - values[1]) / (2 * step)
        assert_close(out[keys.FORCES], numerical, 1e-6, f"forces of {atoms.get_chemical_formula()}")
        if atoms.pbc.any():
            strained = np.zeros((3, 3))
            for i, j in np.ndindex(3, 3):
                values = []
                for sign in (1, -1):
                    deformation = np.eye(3)
                    deformation[i, j] += sign * step / 2
                    deformation[j, i] += sign * step / 2
                    values.append(energy(model, transformed(atoms, deformation)))
                strained[i, j] = (values[0] - values[1]) / (2 * step) / atoms.get_volume()
            assert_close(out[keys.STRESS][0], strained, 1e-6,
                         f"stress of {atoms.get_chemical_formula()}")


def model_file_round_trip(model: Potential) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "model.pt"
        save_model(path, model, {"dtype": "float64"})
        loaded = load(path)
    for atoms in (ethanol(), triclinic_crystal()):
        before, after = evaluate(model, atoms, stress=True), evaluate(loaded, atoms, stress=True)
        for field in (keys.ENERGY, keys.FORCES, keys.STRESS):
            assert_close(after[field], before[field], 1e-12, f"loaded model's {field}")


def calculator_and_md(model: Potential) -> None:
    atoms = ethanol()
    atoms.calc = EquipotCalculator(model)
    direct = evaluate(model, atoms)
    assert_close(atoms.get_potential_energy(), direct[keys.ENERGY][0], 1e-12, "calculator energy")
    assert_close(atoms.get_forces(), direct[keys.FORCES], 1e-12, "calculator forces")
    atoms.set_momenta(np.random.default_rng(6).normal(0.0, 0.3, (len(atoms), 3))
                      * np.sqrt(atoms.get_masses())[:, None])
    totals = []
    dynamics = VelocityVerlet(atoms, timestep=0.25 * units.fs)
    dynamics.attach(lambda: totals.append(atoms.get_total_energy()), interval=1)
    dynamics.run(40)
    drift = max(totals) - min(totals)
    kinetic = atoms.get_kinetic_energy()
    if not (np.isfinite(totals).all() and drift < 0.02 * max(kinetic, 0.1)):
        raise AssertionError(f"NVE total energy varies by {drift:.3g} eV over 40 steps "
                             f"(kinetic energy {kinetic:.3g} eV)")


CHECKS: dict[str, Callable[[Potential], None]] = {
    check.__name__: check for check in (features_transform_by_their_irreps, energy_is_invariant,
                                        forces_and_stress_are_derivatives, model_file_round_trip,
                                        calculator_and_md)}


def run_block_contract(block: str, block_options: dict | None = None) -> None:
    """Every check of the contract on a contract model of ``block``; raises on the first
    that fails."""
    model = contract_model(block, block_options)
    for check in CHECKS.values():
        check(model)
