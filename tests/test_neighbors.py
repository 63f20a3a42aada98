"""Tests of equipot.neighbors: neighbor_list against ASE's neighbour list as the oracle, and the
skin list against a fresh search."""

import ase
import numpy as np
import pytest
from ase.neighborlist import neighbor_list as ase_neighbor_list

from equipot.neighbors import SkinNeighborList, neighbor_list


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
    rows = np.column_stack([i, j, shifts])
    np.testing.assert_array_equal(rows, sorted_rows(i, j, shifts))  # sorted by i, j, S
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


def moves(seed, positions, cell, pbc, steps=60):
    """(positions, cell) of a random walk from a structure: small steps (0.02–0.1 Å per atom),
    now and then a whole lattice translation of some atoms (a wrap into the cell) along
    periodic directions and, for fully periodic cells, a small random strain of cell and
    atoms."""
    rng = np.random.default_rng(seed)
    for step in range(steps):
        positions = positions + rng.normal(scale=rng.choice([0.02, 0.1]), size=positions.shape)
        if step % 7 == 3 and pbc.any():
            jumps = rng.integers(-1, 2, positions.shape) * pbc
            positions = positions + jumps @ cell
        if step % 5 == 2 and pbc.all():
            strain = np.eye(3) + rng.normal(scale=0.01, size=(3, 3))
            positions, cell = positions @ strain, cell @ strain
        yield positions, cell


@pytest.mark.parametrize("name", ["periodic-seed0", "periodic-thin-skewed", "slab-dummy-c",
                                  "wire-zero-cell", "molecule-dummy-box"])
@pytest.mark.parametrize("skin", [0.0, 0.3, 1.0])
def test_skin_list_equals_a_fresh_search(name, skin):
    """Along random walks with wraps and strains the skin list gives exactly the (i, j, S)
    triples of a new search, in its order, and the same vectors at every step; with a skin it
    searches fewer times than it is asked."""
    (positions, cell, pbc, _), cutoff = CASES[name]
    skin_list = SkinNeighborList(cutoff, skin)
    for step, (moved, strained) in enumerate(moves(3, positions, cell, pbc)):
        expected_cell = np.where(pbc[:, None], strained, 0.0)
        i, j, shifts = neighbor_list(moved, expected_cell, pbc, cutoff)
        expected = np.column_stack([i, j, shifts, moved[j] - moved[i] + shifts @ expected_cell])
        actual = np.column_stack(skin_list.update(moved, strained, pbc))
        assert len(expected) > 0
        np.testing.assert_array_equal(actual[:, :5], expected[:, :5], err_msg=f"step {step}")
        np.testing.assert_allclose(actual[:, 5:], expected[:, 5:], rtol=0, atol=1e-12)
    if skin == 0.0:
        assert skin_list.searches == step + 1
    else:
        assert skin_list.searches < (step + 1) * (0.8 if skin < 1.0 else 0.5)


def test_skin_list_searches_when_an_atom_moved_half_the_skin():
    """Kept while every atom moved less than skin / 2; searched again just beyond it; a whole
    lattice translation is not a move."""
    (positions, cell, pbc, _), cutoff = CASES["periodic-seed1"]
    skin_list = SkinNeighborList(cutoff, 0.4)
    skin_list.update(positions, cell, pbc)
    moved = positions.copy()
    moved[5] += [0.199, 0.0, 0.0]
    moved[6] += cell[1] - cell[2]
    skin_list.update(moved, cell, pbc)
    assert skin_list.searches == 1
    moved[5] += [0.002, 0.0, 0.0]
    skin_list.update(moved, cell, pbc)
    assert skin_list.searches == 2


def test_skin_list_follows_a_deformed_cell():
    """Cell and atoms compressed, sheared and expanded together (as a barostat does): the
    pairs equal a fresh search's; small strains keep the list, large ones search again."""
    (positions, cell, pbc, _), cutoff = CASES["periodic-seed2"]
    skin_list = SkinNeighborList(cutoff, 1.0)
    searches = []
    for factor in (1.0, 0.97, 0.8, 0.78, 1.3, 0.6):
        strain = np.diag([factor, factor, 1.0]) + np.array([[0, 0.02, 0], [0, 0, 0], [0, 0, 0]])
        moved, strained = positions @ strain, cell @ strain
        i, j, shifts = neighbor_list(moved, strained, pbc, cutoff)
        np.testing.assert_array_equal(np.column_stack(skin_list.update(moved, strained, pbc)[:3]),
                                      np.column_stack([i, j, shifts]), err_msg=f"strain {factor}")
        searches.append(skin_list.searches)
    assert searches == [1, 1, 2, 2, 2, 3]  # expansion never loses a pair
