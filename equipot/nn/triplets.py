"""Triplets of atoms k → j → i as pairs of edges, and the angle at j, for angular message passing.

DimeNet++ updates the message on edge j → i with the messages on every edge k → j that arrives at
its sender j, weighted by the angle α_kji at j. Periodic images make one atom pair appear with
several shifts and an atom its own neighbour, so the only pair left out is the exact back-edge
of j → i (i → j with the opposite shift, whose k is i itself); another image of i is a genuine k.
Everything is built with sorting and counting, without Python loops, so it runs on any device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Triplets:
    """T triplets k → j → i, ordered by ``edge_ji`` and then by ``edge_kj``; all [T] int64.

    An edge e is (centre[e], neighbour[e]) = (receiver, sender), so
    centre[edge_ji] = atom_i, neighbour[edge_ji] = centre[edge_kj] = atom_j and
    neighbour[edge_kj] = atom_k.
    """

    edge_ji: torch.Tensor  # [T] int64, the edge j → i that receives the angular message
    edge_kj: torch.Tensor  # [T] int64, the edge k → j whose message is passed on
    atom_i: torch.Tensor  # [T] int64, receiver of edge_ji
    atom_j: torch.Tensor  # [T] int64, the atom at the angle's vertex
    atom_k: torch.Tensor  # [T] int64, sender of edge_kj; may equal atom_i through periodic images

    @property
    def num_triplets(self) -> int:
        return self.edge_ji.shape[0]


def build_triplets(centre: torch.Tensor, neighbour: torch.Tensor, shifts: torch.Tensor,
                   num_atoms: int) -> Triplets:
    """Every pair of edges (k → j, j → i) except edge j → i with its own back-edge.

    centre [E] int64 (receiver i), neighbour [E] int64 (sender j), shifts [E, 3] integer cell
    shifts of the edges (any dtype holding integers exactly): r_ij = pos[j] − pos[i] + S @ cell.
    The graph must be symmetric (edge i ← j with S implies edge j ← i with −S), as the
    neighbour list makes it. Edge k → j (centre j, neighbour k, shift S_kj) is left out of edge
    j → i's triplets exactly when k = i and S_kj = −S_ji, so each edge j → i gets
    (number of edges arriving at j) − 1 triplets.
    """
    num_edges = centre.shape[0]
    device = centre.device
    # Edges sorted by receiver: those arriving at atom a are
    # by_receiver[first_in[a] : first_in[a] + in_degree[a]].
    by_receiver = torch.argsort(centre, stable=True)
    in_degree = torch.bincount(centre, minlength=num_atoms)
    first_in = torch.cumsum(in_degree, 0) - in_degree

    # Edge j → i pairs with every edge arriving at its sender j.
    pairs_per_edge = in_degree[neighbour]
    num_pairs = int(pairs_per_edge.sum())
    edge_ji = torch.repeat_interleave(torch.arange(num_edges, device=device), pairs_per_edge,
                                      output_size=num_pairs)
    first_pair = torch.cumsum(pairs_per_edge, 0) - pairs_per_edge
    rank_in_group = torch.arange(num_pairs, device=device) - first_pair[edge_ji]
    edge_kj = by_receiver[first_in[neighbour[edge_ji]] + rank_in_group]

    is_back_edge = ((neighbour[edge_kj] == centre[edge_ji])
                    & (shifts[edge_kj] == -shifts[edge_ji]).all(dim=-1))
    edge_ji, edge_kj = edge_ji[~is_back_edge], edge_kj[~is_back_edge]
    return Triplets(edge_ji=edge_ji, edge_kj=edge_kj, atom_i=centre[edge_ji],
                    atom_j=neighbour[edge_ji], atom_k=neighbour[edge_kj])


def triplet_angles(vectors: torch.Tensor, triplets: Triplets) -> tuple[torch.Tensor, torch.Tensor]:
    """cos α_kji [T] and α_kji [T] (radians, in [0, π]), the angle at j between j → i and j → k.

    vectors [E, 3] are the edge vectors r_ij = pos[j] − pos[i] + S @ cell, which point from the
    receiver to the sender, so with a = −vectors[edge_ji] (j to i) and b = vectors[edge_kj]
    (j to k):

        cos α = a·b / (|a| |b|),    α = atan2(|a × b|, a·b).

    atan2 rather than arccos keeps α accurate near 0 and π; |a × b| is taken as 0 with zero first
    and second derivatives where a ∥ b, so straight triplets give finite forces and force
    gradients (the angle has a kink there; zero is its symmetric subgradient).
    """
    to_i = -vectors[triplets.edge_ji]
    to_k = vectors[triplets.edge_kj]
    dot = (to_i * to_k).sum(dim=-1)
    cross_squared = torch.linalg.cross(to_i, to_k).square().sum(dim=-1)
    is_bent = cross_squared > 0
    cross_norm = torch.where(is_bent, torch.where(is_bent, cross_squared, 1.0).sqrt(), 0.0)
    cos = dot / (torch.linalg.vector_norm(to_i, dim=-1) * torch.linalg.vector_norm(to_k, dim=-1))
    return cos, torch.atan2(cross_norm, dot)
