"""The k-vectors of each structure that reciprocal-space (long-range) blocks sum over.

Every structure gets a *Fourier cell* A (rows a_1, a_2, a_3, Å), whose reciprocal lattice
within the frequency cutoff k_c is its set of k-vectors:

    k_n = n_1 b_1 + n_2 b_2 + n_3 b_3,   b_α · a_β = 2π δ_αβ,   n ∈ ℤ³,   0 < |k_n| ≤ k_c

    periodic direction α:      a_α = the lattice vector: the reciprocal-lattice vectors of the
                               cell, as in Ewald sums (Kosmala et al. 2023, periodic case);
    non-periodic direction α:  a_α = L ê_α with L = 2π/Δk, so that the k-vectors form a grid
                               of spacing Δk along it (the paper's voxel grid for aperiodic
                               systems). ê_α is the lab axis for molecules and the surface
                               normal for slabs, so a slab's k-vectors rotate with its cell.

A sum over k-vectors with the weight w = (2π)³ / (|det A| · 4/3 π k_c³), one over the number of
k-vectors the ball holds on average, is a quadrature of the ball's mean:

    Σ_k w g(k)  ≈  ∫_{|k| ≤ k_c} g(k) d³k / (4/3 π k_c³),

so the same filter gives the same real-space kernel in any cell; w ∝ 1/V for periodic cells.
Along a non-periodic direction that kernel is periodic with L: L/2 must exceed the structure's
extent there (Δk = 0.15 Å⁻¹: L = 41.9 Å). Only one of each pair ±k is kept, with the weight
doubled, since real features give s_−k = conj(s_k); k = 0, which would couple every atom
equally to all the others, is left out as in Ewald sums.

Wires (one periodic direction) are refused: their k-vectors would need a frame around the
axis that the structure does not define.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from equipot import keys
from equipot.errors import EquipotInputError


@dataclass
class KVectors:
    """Shapes: G structures, K k-vectors per structure (padded to the batch's largest set)."""

    vectors: torch.Tensor  # [G, K, 3] Å⁻¹, differentiable with respect to the cell
    weights: torch.Tensor  # [G, K] quadrature weights 2w (0 for padding), dimensionless


def fourier_cells(cell: torch.Tensor, pbc: torch.Tensor, k_spacing: float) -> torch.Tensor:
    """[G, 3, 3] Å: the Fourier cell A of each structure, from its cell [G, 3, 3] Å and pbc
    [G, 3]; non-periodic rows have length 2π/k_spacing (k_spacing in Å⁻¹)."""
    # Row α of ``normals``: a_{α+1} × a_{α+2}, the normal of a slab whose direction α is the
    # non-periodic one (normalize's eps keeps it finite, and its gradient too, where it is 0).
    normals = torch.nn.functional.normalize(
        torch.linalg.cross(cell.roll(-1, dims=1), cell.roll(-2, dims=1), dim=-1), dim=-1)
    is_slab_normal = ~pbc & (pbc.sum(dim=1, keepdim=True) == 2)
    lab_axes = torch.eye(3, dtype=cell.dtype, device=cell.device).expand_as(cell)
    directions = torch.where(is_slab_normal.unsqueeze(-1), normals, lab_axes)
    return torch.where(pbc.unsqueeze(-1), cell, 2 * math.pi / k_spacing * directions)


def half_space_indices(n_max: list[int], dtype: torch.dtype, device) -> torch.Tensor:
    """[M, 3] integer vectors n with |n_α| ≤ n_max[α], one of each pair ±n, n = 0 left out."""
    box = torch.cartesian_prod(*(torch.arange(-m, m + 1, dtype=dtype, device=device)
                                 for m in n_max))
    # The box lists n and −n at mirrored positions around its centre, n = 0: keep what follows.
    return box[box.shape[0] // 2 + 1:]


def k_vectors(cell: torch.Tensor, pbc: torch.Tensor, k_cutoff: float,
              k_spacing: float) -> KVectors:
    """The k-vectors with 0 < |k| ≤ k_cutoff (Å⁻¹) of every structure of a batch (cell
    [G, 3, 3] Å, pbc [G, 3] bool), grid spacing k_spacing (Å⁻¹) along non-periodic directions."""
    is_wire = pbc.sum(dim=1) == 1
    if is_wire.any():
        raise EquipotInputError(
            f"structure {int(is_wire.nonzero()[0, 0])} of the batch is a wire (one periodic "
            "direction); Ewald message passing takes periodic cells, slabs and molecules",
            field=keys.PBC)
    fourier_cell = fourier_cells(cell, pbc, k_spacing)
    reciprocal = 2 * math.pi * torch.linalg.inv(fourier_cell).transpose(1, 2)  # rows b_α
    with torch.no_grad():
        # |n_α| = |k · a_α| / 2π ≤ k_c |a_α| / 2π bounds the box that holds the ball.
        n_max = (k_cutoff * torch.linalg.vector_norm(fourier_cell, dim=-1) / (2 * math.pi)).floor()
        indices = half_space_indices(n_max.amax(dim=0).long().tolist(), cell.dtype, cell.device)
        inside = torch.linalg.vector_norm(indices @ reciprocal, dim=-1) <= k_cutoff  # [G, M]
        num_k = int(inside.sum(dim=1).max())
        # Each structure's k-vectors first (stable sort), padded to the batch's largest set.
        order = torch.argsort(inside.to(torch.int8), dim=1, descending=True, stable=True)
        order = order[:, :num_k]
        inside = inside.gather(1, order)
    vectors = indices[order] @ reciprocal
    # The ball's volume over that of one k-vector's cell, (2π)³ / |det A|.
    mean_count = (torch.linalg.det(fourier_cell).abs() * (4 / 3 * math.pi * k_cutoff**3)
                  / (2 * math.pi) ** 3)
    return KVectors(vectors=vectors, weights=2 * inside.to(cell.dtype) / mean_count.unsqueeze(-1))
