"""Ewald message passing (Kosmala, Gasteiger, Gao, Günnemann, "Ewald-based long-range message
passing for molecular graphs", ICML 2023): a message block in reciprocal space, added after
the interaction blocks of any backbone whose features live on atoms.

On the F leading scalar (0e) channels h of the features (the other channels pass through):

    x_j  = W h_j                                        down-projection to D channels, no bias
    s_k  = Σ_j x_j exp(−i k·r_j)                        structure factor, [G, K, D]
    f(k) = W_f [g_1(|k|) … g_B(|k|)] u(|k|/k_c)         frequency filter: Gaussians g_b of |k|
                                                        times the smooth envelope u, [G, K, D]
    M_i  = Σ_k w_k f(k) ⊙ Re[exp(i k·r_i) s_k]          long-range message, [N, D]
    h_i ← h_i + MLP(M_i)

k runs over the structure's k-vectors 0 < |k| ≤ k_c (Å⁻¹, ``equipot/nn/k_vectors.py``):
reciprocal-lattice vectors of a periodic cell, a grid of spacing Δk along non-periodic
directions. The weights w_k (∝ 1/V for periodic cells) turn the sum into the mean over the
ball |k| ≤ k_c, so that M_i = Σ_j K(r_j − r_i) x_j with one learned kernel
K(r) ≈ ⟨f(k) cos(k·r)⟩_{|k|≤k_c}, smooth and of unlimited range, in every cell.

Exactly invariant to translations (only r_i − r_j enter) and, for periodic cells and slabs
whose cell rotates with the atoms, to rotations; the fixed grid of aperiodic directions makes
it invariant to rotations only approximately (tests/test_ewald_message_passing.py measures it).
The envelope takes f to zero at k_c, so the energy stays smooth when a strained cell moves a
k-vector across the cutoff. Atoms are padded per structure (``PaddedAtoms``) so that both
sums, over atoms for s_k and over k for M_i, are batched matrix products.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from e3nn import o3
from torch import nn

from equipot.nn.geometry import Geometry
from equipot.nn.k_vectors import KVectors, k_vectors
from equipot.nn.mlp import mlp
from equipot.nn.radial import GaussianBasis, PolynomialEnvelope
from equipot.nn.readout import leading_scalars


@dataclass
class PaddedAtoms:
    """Per-atom values laid out per structure, [N, C] ↔ [G, A, C] (A: atoms of the largest
    structure), so that sums over a structure's atoms are batched matrix products. The atoms
    of a structure are contiguous, as in every torch_geometric Batch."""

    slots: torch.Tensor  # [N] int64, atom i's row in the flattened [G · A]
    num_graphs: int
    max_atoms: int

    @classmethod
    def of(cls, batch: torch.Tensor, num_graphs: int) -> PaddedAtoms:
        counts = torch.bincount(batch, minlength=num_graphs)
        first_atom = torch.cumsum(counts, dim=0) - counts
        max_atoms = int(counts.max())
        index_in_structure = torch.arange(len(batch), device=batch.device) - first_atom[batch]
        slots = batch * max_atoms + index_in_structure
        return cls(slots=slots, num_graphs=num_graphs, max_atoms=max_atoms)

    def pad(self, per_atom: torch.Tensor) -> torch.Tensor:
        """[N, C] → [G, A, C], zeros in the padding slots."""
        padded = per_atom.new_zeros(self.num_graphs * self.max_atoms, per_atom.shape[1])
        return padded.index_copy(0, self.slots, per_atom).view(self.num_graphs, self.max_atoms, -1)

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """[G, A, C] → [N, C]."""
        return padded.reshape(-1, padded.shape[-1])[self.slots]


def plane_waves(positions: torch.Tensor, k: KVectors, dtype: torch.dtype) -> torch.Tensor:
    """exp(i k·r) [G, A, K] in ``dtype``'s complex type from padded positions [G, A, 3] Å;
    the phases are formed in float64 (at 100 Å and 3 Å⁻¹ float32 would lose 10⁻² rad)."""
    return torch.exp(1j * (positions @ k.vectors.transpose(1, 2))).to(dtype.to_complex())


class EwaldMessagePassing(nn.Module):
    """h_i ← h_i + MLP(M_i) on the leading scalars of features [N, dim(irreps)] → same shape.

    ``k_cutoff``: k_c (Å⁻¹); ``k_spacing``: Δk of the grid along non-periodic directions
    (Å⁻¹); ``num_basis``: Gaussians B of the filter; ``num_channels``: D;
    ``envelope_exponent``: p of the envelope u.
    """

    def __init__(self, irreps: o3.Irreps | str, k_cutoff: float, k_spacing: float = 0.15,
                 num_basis: int = 16, num_channels: int = 16, envelope_exponent: int = 5):
        super().__init__()
        self.irreps_in = self.irreps_out = o3.Irreps(irreps)
        self.num_scalars = leading_scalars(self.irreps_in)
        self.k_cutoff, self.k_spacing = float(k_cutoff), float(k_spacing)
        self.settings = (self.k_cutoff, self.k_spacing, num_basis, envelope_exponent)
        self.frequency_basis = GaussianBasis(self.k_cutoff, num_basis)
        self.envelope = PolynomialEnvelope(self.k_cutoff, envelope_exponent)
        self.down_projection = nn.Linear(self.num_scalars, num_channels, bias=False)
        self.frequency_filter = nn.Linear(num_basis, num_channels, bias=False)
        self.update = mlp(num_channels, self.num_scalars, self.num_scalars)

    def reciprocal_space(self, geometry: Geometry, dtype: torch.dtype
                         ) -> tuple[PaddedAtoms, torch.Tensor, torch.Tensor]:
        """The atoms' padding, exp(i k·r_j) [G, A, K] and w_k g_b(|k|) u(|k|/k_c) [G, K, B] in
        ``dtype``: computed once per forward pass for all blocks of the same settings."""
        k = k_vectors(geometry.cell, geometry.pbc, self.k_cutoff, self.k_spacing)
        atoms = PaddedAtoms.of(geometry.batch, geometry.num_graphs)
        waves = plane_waves(atoms.pad(geometry.positions), k, dtype)
        length = torch.linalg.vector_norm(k.vectors, dim=-1)  # [G, K] Å⁻¹
        basis = self.frequency_basis(length) * (k.weights * self.envelope(length)).unsqueeze(-1)
        return atoms, waves, basis.to(dtype)

    def forward(self, features: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        atoms, waves, basis = geometry.shared(
            ("ewald_message_passing", *self.settings, features.dtype),
            lambda: self.reciprocal_space(geometry, features.dtype))
        filters = self.frequency_filter(basis)  # w_k f(k), [G, K, D]

        h = features[:, : self.num_scalars]
        x = atoms.pad(self.down_projection(h)).to(waves.dtype)  # [G, A, D], 0 in padding
        structure_factor = waves.conj().transpose(1, 2) @ x  # s_k, [G, K, D]
        messages = atoms.unpad((waves @ (filters * structure_factor)).real)  # M_i, [N, D]
        return torch.cat([h + self.update(messages), features[:, self.num_scalars:]], dim=-1)


class WithEwaldMessages(nn.Module):
    """An interaction block followed by Ewald message passing on its output: one stage of the
    model, with the block's irreps_in and irreps_out, so readouts per stage are unchanged."""

    def __init__(self, block: nn.Module, options: Mapping):
        super().__init__()
        self.block = block
        self.long_range = EwaldMessagePassing(block.irreps_out, **options)
        self.irreps_in, self.irreps_out = block.irreps_in, block.irreps_out

    def forward(self, features: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        return self.long_range(self.block(features, geometry), geometry)
