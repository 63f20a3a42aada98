"""Tests of equipot.neighbors.neighbor_list against ASE's neighbour list as the oracle."""

import ase
import numpy as np
import pytest
from ase.neighborlist import neighbor_list as ase_neighbor_list

from equipot.neighbors import neighbor_list


def random_structure(seed, pbc, zero_nonperiodic=False, n_atoms=24):
    """Random atoms in a skewed, randomly rotated cell; non-periodic rows are a 50 Å dummy box.

    Returns (positions, cell, pbc, ase_cell): `cell` is what neighbor_list gets (its
    non-periodic rows zeroed if `zero_nonperiodic`), `ase_cell` the full box ASE needs.
    Atoms span at most 10 Å along non-periodic directions.
    """
    rng = np.random.default_rng(seed)
    pbc = np.array(pbc, dtype=bool)
    box = (np.diag(np.where(pbc, rng.uniform(4.0, 7.0, 3), 50.0))
           + np.tril(rng.uniform(-3, 3, (3, 3)), -1))
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    ase_cell = box @ rotation
    positions = (rng.random((n_atoms, 3)) * np.where(pbc, 1.0, 0.2)) @ ase_cell
    cell = np.where(pbc[:, None] | (not zero_nonperiodic), ase_cell, 0.0)
    return positions, cell, pbc, ase_cell


def explicit_structure(positions, cell, pbc):
    """A structure given explicitly, whose cell ASE can use as it is."""
    cell = np.array(cell, dtype=float)
    return np.array(positions, dtype=float), cell, np.array(pbc, dtype=bool), cell


TINY_CELL = [[1.2, 0.0, 0.0], [0.4, 1.1, 0.0], [-0.3, 0.5, 1.0]]
THIN_SKEWED_CELL = [[3.0, 0.0, 0.0], [2.9, 0.8, 0.0], [-2.5, 1.2, 1.0]]

# (structure, cutoff); every case has edges, so the checks on them are never vacuous.
CASES = {
    **{f"periodic-seed{seed}": (random_structure(seed, [True] * 3), 5.0) for seed in range(4)},
    "periodic-thin-skewed": (explicit_structure(
        np.random.default_rng(7).random((6, 3)) @ THIN_SKEWED_CELL, THIN_SKEWED_CELL,
        [True] * 3), 5.0),
    "slab-dummy-c": (random_structure(10, [True, True, False]), 4.5),
    "slab-zero-c": (random_structure(11, [True, True, False], zero_nonperiodic=True), 4.5),
    "wire-dummy-box": (random_structure(12, [True, False, False]), 4.5),
    "wire-zero-cell": (random_structure(13, [True, False, False], zero_nonperiodic=True), 4.5),
    "molecule-dummy-box": (random_structure(14, [False] * 3), 4.0),
    "molecule-zero-cell": (random_structure(15, [False] * 3, zero_nonperiodic=True), 4.0),
    "tiny-cell-one-atom": (explicit_structure([[0.1, 0.2, 0.3]], TINY_CELL, [True] * 3), 4.0),
    "tiny-slab-two-atoms": (explicit_structure([[0.1, 0.2, 0.3], [0.7, 0.5, 0.9]], TINY_CELL,
                                               [True, True, False]), 4.0),
    # Neighbours at exactly 3.0 Å must be left out (strict inequality).
    "cubic-exact-cutoff": (explicit_structure([[0.0, 0.0, 0.0]], np.eye(3) * 1.5, [True] * 3), 3.0),
}


def sorted_rows(*columns):
    """Columns stacked into rows, sorted lexicographically: a canonical form of a set of edges."""
    rows = np.column_stack(columns)
    return rows[np.lexsort(rows.T[::-1])]


def assert_matches_ase(positions, cell, pbc, ase_cell, cutoff):
    """neighbor_list must give exactly ASE's set of (i, j, S) triples."""
    atoms = ase.Atoms(numbers=np.ones(len(positions), dtype=int), positions=positions,
                      cell=ase_cell, pbc=pbc)
    expected = sorted_rows(*ase_neighbor_list("ijS", atoms, cutoff))
    actual = sorted_rows(*neighbor_list(positions, cell, pbc, cutoff))
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("name", CASES)
def test_matches_ase(name):
    """Same (i, j, S) triples as ASE for periodic, slab, wire, molecule and tiny cells."""
    structure, cutoff = CASES[name]
    assert_matches_ase(*structure, cutoff)


@pytest.mark.parametrize("name", CASES)
def test_edges_are_valid(name):
    """int64 output; every edge shorter than the cutoff, listed both ways, no zero-shift
    self-edge."""
    (positions, cell, pbc, _), cutoff = CASES[name]
    i, j, shifts = neighbor_list(positions, cell, pbc, cutoff)
    assert len(i) > 0
    assert i.dtype == j.dtype == shifts.dtype == np.int64
    assert i.shape == j.shape == (len(i),) and shifts.shape == (len(i), 3)
    assert not shifts[:, ~pbc].any()
    assert not ((i == j) & ~shifts.any(axis=1)).any()
    vectors = positions[j] - positions[i] + shifts @ cell
    assert (np.linalg.norm(vectors, axis=1) < cutoff).all()
    np.testing.assert_array_equal(sorted_rows(i, j, shifts), sorted_rows(j, i, -shifts))


@pytest.mark.parametrize("structure", [
    explicit_structure([[0.0, 0.0, 0.0]], np.zeros((3, 3)), [False] * 3),
    explicit_structure([[1.0, 1.0, 1.0], [6.0, 6.0, 6.0]], np.eye(3) * 12.0, [True] * 3),
], ids=["isolated-atom", "periodic-pair-beyond-cutoff"])
def test_no_neighbours(structure):
    """A structure without neighbours gives empty int64 arrays of shapes [0], [0], [0, 3]."""
    positions, cell, pbc, _ = structure
    i, j, shifts = neighbor_list(positions, cell, pbc, 4.0)
    assert i.shape == j.shape == (0,) and shifts.shape == (0, 3)
    assert i.dtype == j.dtype == shifts.dtype == np.int64


@pytest.mark.parametrize("pbc", [[True] * 3, [True, True, False]], ids=["periodic", "slab"])
def test_unwrapped_positions(pbc):
    """Atoms moved out of the cell (2.3 lattice vectors, plus whole ones per atom along periodic
    directions) keep the same edge vectors; only the shifts S change."""
    positions, cell, pbc, _ = random_structure(20, pbc)
    whole = np.random.default_rng(21).integers(-3, 4, positions.shape) * pbc
    moved = positions + (2.3 + whole) @ cell

    def edges(positions):
        """Edges as rows (i, j, r_ij), sorted by i, j and then r_ij rounded well below lattice
        spacings."""
        i, j, shifts = neighbor_list(positions, cell, pbc, 5.0)
        vectors = positions[j] - positions[i] + shifts @ cell
        order = np.lexsort([*np.round(vectors, 6).T[::-1], j, i])
        return np.column_stack([i, j, vectors])[order]

    reference = edges(positions)
    assert len(reference) > 0
    np.testing.assert_allclose(edges(moved), reference, rtol=0, atol=1e-9)
