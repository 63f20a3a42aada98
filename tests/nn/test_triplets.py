"""Tests of equipot.nn.triplets against a brute-force enumeration of edge pairs and against
angles measured directly on the atoms (ASE, numpy)."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from torch_geometric.data import Batch

from equipot import keys
from equipot.data.graph import atoms_to_graph
from equipot.nn.triplets import Triplets, build_triplets, triplet_angles


def ethanol():
    return molecule("CH3CH2OH")


def cu_primitive():
    """One Cu atom in the fcc primitive cell (2.55 Å vectors): with a 5 Å cutoff it is its own
    neighbour through 42 images, and every triplet is made of images of that one atom."""
    return bulk("Cu", "fcc", a=3.61)


def two_atom_slab():
    """Two atoms in a 2.6 Å hexagonal slab cell, pbc = (T, T, F): each atom sees its own images
    and the other atom through several shifts."""
    return Atoms("CuO", positions=[[0.0, 0.0, 0.0], [1.3, 0.75, 1.2]],
                 cell=[[2.6, 0.0, 0.0], [1.3, 2.25, 0.0], [0.0, 0.0, 0.0]], pbc=[True, True, False])


# (structure, cutoff in Å); ethanol at 1.2 Å keeps only the C–H and O–H bonds, so the graph
# falls apart into fragments and some atoms have a single edge (no triplet through them).
CASES = {
    "ethanol-5": (ethanol, 5.0),
    "ethanol-1.2": (ethanol, 1.2),
    "cu-primitive-5": (cu_primitive, 5.0),
    "slab-two-atoms-4": (two_atom_slab, 4.0),
}


def graph(name):
    make, cutoff = CASES[name]
    return atoms_to_graph(make(), cutoff)


def triplets_of(data):
    centre, neighbour = data[keys.EDGE_INDEX]
    return build_triplets(centre, neighbour, data[keys.SHIFTS], data.num_nodes)


def brute_force_pairs(data):
    """{(edge_ji, edge_kj)}: every edge arriving at j paired with every edge leaving j, except
    the one going straight back (k = i with the opposite shift)."""
    centre, neighbour = data[keys.EDGE_INDEX].tolist()
    shifts = [tuple(row) for row in data[keys.SHIFTS].tolist()]
    pairs = set()
    for ji in range(len(centre)):
        for kj in range(len(centre)):
            if centre[kj] != neighbour[ji]:
                continue
            if neighbour[kj] == centre[ji] and shifts[kj] == tuple(-s for s in shifts[ji]):
                continue
            pairs.add((ji, kj))
    return pairs


def edge_vectors(data, positions=None):
    """[E, 3] r_ij = pos[j] − pos[i] + S @ cell of a single structure (not a batch)."""
    positions = data[keys.POSITIONS] if positions is None else positions
    centre, neighbour = data[keys.EDGE_INDEX]
    return positions[neighbour] - positions[centre] + data[keys.SHIFTS] @ data[keys.CELL][0]


@pytest.mark.parametrize("name", CASES)
def test_matches_brute_force(name):
    """Exactly the brute-force set of edge pairs, each once, with consistent atom indices."""
    data = graph(name)
    triplets = triplets_of(data)
    pairs = list(zip(triplets.edge_ji.tolist(), triplets.edge_kj.tolist()))
    expected = brute_force_pairs(data)
    assert len(expected) > 0
    assert len(pairs) == len(set(pairs))
    assert set(pairs) == expected

    centre, neighbour = data[keys.EDGE_INDEX]
    for field in ("edge_ji", "edge_kj", "atom_i", "atom_j", "atom_k"):
        assert getattr(triplets, field).dtype == torch.int64
    assert torch.equal(triplets.atom_i, centre[triplets.edge_ji])
    assert torch.equal(triplets.atom_j, neighbour[triplets.edge_ji])
    assert torch.equal(triplets.atom_j, centre[triplets.edge_kj])
    assert torch.equal(triplets.atom_k, neighbour[triplets.edge_kj])


@pytest.mark.parametrize("name", CASES)
def test_one_back_edge_left_out_per_edge(name):
    """Edge j → i gets (edges arriving at j) − 1 triplets, and no triplet closes back on i:
    the image of k it reaches, r_ij + r_jk from i, is never i itself."""
    data = graph(name)
    triplets = triplets_of(data)
    centre, neighbour = data[keys.EDGE_INDEX]
    in_degree = torch.bincount(centre, minlength=data.num_nodes)
    per_edge = torch.bincount(triplets.edge_ji, minlength=centre.shape[0])
    assert torch.equal(per_edge, in_degree[neighbour] - 1)
    vectors = edge_vectors(data)
    i_to_k = vectors[triplets.edge_ji] + vectors[triplets.edge_kj]
    assert torch.linalg.vector_norm(i_to_k, dim=-1).min() > 0.5


@pytest.mark.parametrize("name", ["cu-primitive-5", "slab-two-atoms-4"])
def test_periodic_images_of_i_are_kept(name):
    """Small cells have self-edges and one pair with several shifts, and triplets whose k is
    another image of i; the test cases are meant to exercise exactly that."""
    data = graph(name)
    centre, neighbour = data[keys.EDGE_INDEX]
    assert (centre == neighbour).any()
    pairs = torch.stack([centre, neighbour], dim=1)
    assert torch.unique(pairs, dim=0).shape[0] < pairs.shape[0]
    triplets = triplets_of(data)
    assert (triplets.atom_k == triplets.atom_i).any()


def test_batch_matches_structures():
    """In a batch, the triplets are each structure's own, with edge indices offset."""
    first, second = graph("ethanol-5"), graph("slab-two-atoms-4")
    batch = Batch.from_data_list([first, second])
    triplets = triplets_of(batch)
    pairs = set(zip(triplets.edge_ji.tolist(), triplets.edge_kj.tolist()))
    assert pairs == brute_force_pairs(batch)

    offset = first.num_edges
    expected = brute_force_pairs(first)
    expected |= {(ji + offset, kj + offset) for ji, kj in brute_force_pairs(second)}
    assert len(expected) > 0
    assert pairs == expected
    assert torch.equal(batch[keys.BATCH][triplets.atom_i], batch[keys.BATCH][triplets.atom_k])


def test_no_edges_no_triplets():
    """A graph without edges (isolated atoms) gives empty int64 triplets."""
    data = atoms_to_graph(ethanol(), 0.5)
    assert data.num_edges == 0
    triplets = triplets_of(data)
    assert triplets.num_triplets == 0
    assert triplets.edge_ji.dtype == torch.int64


def test_angles_match_ase_in_molecule():
    """α_kji at j equals ASE's angle i–j–k for every triplet of ethanol."""
    atoms = ethanol()
    data = atoms_to_graph(atoms, 5.0)
    triplets = triplets_of(data)
    cos, angle = triplet_angles(edge_vectors(data), triplets)
    expected = np.radians(atoms.get_angles(
        torch.stack([triplets.atom_i, triplets.atom_j, triplets.atom_k], dim=1).numpy()))
    assert triplets.num_triplets > 0
    np.testing.assert_allclose(angle.numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(cos.numpy(), np.cos(expected), atol=1e-12)


def test_angles_match_numpy_with_images():
    """α_kji equals arccos on explicit image positions in the two-atom slab: i at its
    position, j at i + r_ij and k at j + r_jk."""
    data = graph("slab-two-atoms-4")
    triplets = triplets_of(data)
    cos, angle = triplet_angles(edge_vectors(data), triplets)
    vectors = edge_vectors(data).numpy()
    position_i = data[keys.POSITIONS].numpy()[triplets.atom_i.numpy()]
    position_j = position_i + vectors[triplets.edge_ji.numpy()]
    position_k = position_j + vectors[triplets.edge_kj.numpy()]
    to_i, to_k = position_i - position_j, position_k - position_j
    lengths = np.linalg.norm(to_i, axis=1) * np.linalg.norm(to_k, axis=1)
    expected_cos = (to_i * to_k).sum(1) / lengths
    np.testing.assert_allclose(cos.numpy(), expected_cos, atol=1e-12)
    # arccos loses accuracy near 0 and π, where atan2 does not.
    np.testing.assert_allclose(angle.numpy(), np.arccos(np.clip(expected_cos, -1, 1)), atol=1e-6)


def test_straight_and_folded_angles_have_finite_gradients():
    """A linear chain gives α = π at the middle atom and α = 0 at the ends (k beyond i); first
    and second derivatives with respect to positions stay finite there."""
    atoms = Atoms("OCO", positions=[[-1.2, 0.0, 0.0], [0.0, 0.0, 0.0], [1.2, 0.0, 0.0]])
    data = atoms_to_graph(atoms, 3.0)
    triplets = triplets_of(data)
    positions = data[keys.POSITIONS].clone().requires_grad_(True)
    cos, angle = triplet_angles(edge_vectors(data, positions), triplets)
    straight = torch.isclose(angle, torch.tensor(torch.pi, dtype=angle.dtype))
    folded = angle == 0
    assert straight.any() and folded.any() and (straight | folded).all()
    torch.testing.assert_close(cos, torch.where(straight, -1.0, 1.0).to(cos))

    energy = (angle - 1.0).square().sum() + cos.sum()
    (gradient,) = torch.autograd.grad(energy, positions, create_graph=True)
    (second,) = torch.autograd.grad(gradient.square().sum(), positions)
    assert torch.isfinite(gradient).all() and torch.isfinite(second).all()


def test_angle_gradient_matches_finite_differences():
    """Away from 0 and π, the autograd gradients of cos α and α are the finite-difference ones."""
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(6, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    edge_ji, edge_kj = torch.tensor([0, 1, 2, 3, 4]), torch.tensor([5, 4, 3, 2, 1])
    unused_atoms = torch.zeros_like(edge_ji)
    triplets = Triplets(edge_ji=edge_ji, edge_kj=edge_kj, atom_i=unused_atoms,
                        atom_j=unused_atoms, atom_k=unused_atoms)
    assert torch.autograd.gradcheck(lambda v: triplet_angles(v, triplets), (vectors,))
