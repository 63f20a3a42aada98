"""The bundled long-range benchmark (GFN2-xTB): it loads through the data pipeline, its fields
are sane, and its reference obeys physics it was not built from (Coulomb's law for ion pairs,
forces that are the energy's slope, no net force on a molecule)."""

import numpy as np
import pytest
from ase.geometry import find_mic, get_distances
from ase.units import Bohr, Hartree

from equipot import keys
from equipot.data.datamodule import AtomisticDataModule
from equipot.data.reading import read_structures
from equipot.datasets import bundled

from conftest import run_defaults

CUTOFF = 5.0  # Å, the cutoff the benchmark is designed around
COULOMB_CONSTANT = Hartree * Bohr  # eV·Å/e², 14.3996
MOLECULAR = ("train.xyz", "valid.xyz", "test.xyz", "scan.xyz")
PERIODIC = ("periodic_train.xyz", "periodic_valid.xyz", "periodic_test.xyz",
            "periodic_scan.xyz")


def structures(name):
    return read_structures(bundled(f"long_range/{name}"))


def fragment_charges(atoms):
    """Sum of the xTB charges of fragments 0 and 1 (e)."""
    return np.bincount(atoms.arrays["fragment"], weights=atoms.arrays["xtb_charges"])


def centre_vector(atoms):
    """From fragment 0's centre of mass to fragment 1's [3] (Å), minimum image in a cell."""
    fragment = atoms.arrays["fragment"]
    vector = (atoms[fragment == 1].get_center_of_mass()
              - atoms[fragment == 0].get_center_of_mass())
    return find_mic(vector, atoms.cell, atoms.pbc)[0] if atoms.pbc.any() else vector


@pytest.mark.parametrize("prefix, labels", [
    ("", {keys.ENERGY, keys.FORCES, keys.DIPOLE}),
    ("periodic_", {keys.ENERGY, keys.FORCES, keys.STRESS}),
])
def test_splits_load_through_the_data_module(prefix, labels):
    data = AtomisticDataModule(cutoff=CUTOFF, seed=0, **run_defaults(
        "data", train=bundled(f"long_range/{prefix}train.xyz"),
        valid=bundled(f"long_range/{prefix}valid.xyz"),
        test=bundled(f"long_range/{prefix}test.xyz"), cache_dir=False))
    data.setup()
    assert set(data.labels) == labels
    for dataset in data.sets.values():
        charges = dataset.tensors[keys.TOTAL_CHARGE]
        assert set(charges.tolist()) <= {-1.0, 0.0, 1.0, 2.0}
    assert set(data.sets["train"].tensors[keys.TOTAL_CHARGE].tolist()) == (
        {-1.0, 0.0, 1.0, 2.0} if prefix == "" else {0.0})


@pytest.mark.parametrize("name", MOLECULAR + PERIODIC)
def test_fields_are_consistent(name):
    for index, atoms in enumerate(structures(name)):
        where = f"{name}[{index}]"
        charge = atoms.info["charge"]
        assert charge == round(charge), where
        assert fragment_charges(atoms).sum() == pytest.approx(charge, abs=1e-4), where
        distances = get_distances(atoms.positions[atoms.arrays["fragment"] == 0],
                                  atoms.positions[atoms.arrays["fragment"] == 1],
                                  cell=atoms.cell, pbc=atoms.pbc)[1]
        assert distances.min() == pytest.approx(atoms.info["separation"], abs=1e-6), where
        assert atoms.info["separation"] > 1.5, where
        if atoms.info["separation"] > CUTOFF:  # each fragment keeps its own integer charge
            fragments = fragment_charges(atoms)
            assert np.abs(fragments - np.round(fragments)).max() < 0.02, where
        if atoms.pbc.any():
            assert atoms.get_stress().shape == (6,), where
        else:
            assert atoms.get_dipole_moment().shape == (3,), where
            # no external field: the forces on a molecule add up to zero
            assert np.abs(atoms.get_forces().sum(axis=0)).max() < 1e-3, where


def test_test_set_spans_both_sides_of_the_cutoff():
    for name in ("test.xyz", "periodic_test.xyz"):
        test = structures(name)
        separations = np.array([atoms.info["separation"] for atoms in test])
        systems = np.array([atoms.info["system"] for atoms in test])
        for system in set(systems):
            inside = separations[systems == system] < CUTOFF
            assert inside.sum() >= 75 and (~inside).sum() >= 75, (name, system)
        assert separations.max() > (11.0 if name == "test.xyz" else 7.0)


@pytest.mark.parametrize("system", ["ammonium_perchlorate", "ammonium_ammonium"])
def test_scan_of_ion_pairs_follows_coulombs_law(system):
    """E(R) − E(R_far) of two unit ions ≈ k q₁q₂ (1/R − 1/R_far) beyond 10 Å (polarisation,
    a 1/R⁴ term, makes up the rest)."""
    scan = [atoms for atoms in structures("scan.xyz") if atoms.info["system"] == system]
    distance = np.array([np.linalg.norm(centre_vector(atoms)) for atoms in scan])
    energy = np.array([atoms.get_potential_energy() for atoms in scan])
    q1, q2 = np.round(fragment_charges(scan[-1]))
    far = np.argmax(distance)
    coulomb = COULOMB_CONSTANT * q1 * q2 * (1 / distance - 1 / distance[far])
    tail = distance > 10.0
    assert tail.sum() > 20
    assert energy[tail] - energy[far] == pytest.approx(coulomb[tail], rel=0.02, abs=2e-3)


@pytest.mark.parametrize("name, system", [("scan.xyz", "ammonium_perchlorate"),
                                          ("scan.xyz", "ammonium_ammonium"),
                                          ("periodic_scan.xyz", "ammonium_perchlorate")])
def test_scan_forces_are_the_energy_slope(name, system):
    """Moving fragment 1 rigidly by dR along the scan changes E by −Σ F_j · u dR: energy
    steps against the trapezoid rule on the forces."""
    scan = [atoms for atoms in structures(name) if atoms.info["system"] == system]
    scan = [atoms for atoms in scan if atoms.info["separation"] > 3.0]  # smooth region
    moved = [atoms.arrays["fragment"] == 1 for atoms in scan]
    centres = np.array([centre_vector(atoms) for atoms in scan])
    direction = centres[-1] - centres[0]
    direction /= np.linalg.norm(direction)
    position = centres @ direction
    energy = np.array([atoms.get_potential_energy() for atoms in scan])
    slope = -np.array([atoms.get_forces()[mask].sum(axis=0) @ direction
                       for atoms, mask in zip(scan, moved)])
    step = np.diff(position)
    trapezoid = 0.5 * (slope[1:] + slope[:-1]) * step  # ∫ dE/dR dR over each step, eV
    scale = np.abs(np.diff(energy)).max()
    assert scale > 1e-3  # eV: the test compares something
    assert np.abs(np.diff(energy) - trapezoid).max() < 0.01 * scale
