"""MACE interaction block (Batatia, Kovács, Simm, Ortner, Csányi, NeurIPS 2022), with e3nn.

Atom features h are C channels of every irrep l = 0 … max_L of natural parity (−1)^l, e.g.
Cx0e+Cx1o for max_L = 1; the last block (``scalar_output``) keeps only the C scalars, which is
all its readout reads. One block, for atom i of species z_i with neighbours j:

    h̄_j  = W h_j                                                     linear up
    A_i  = W_A (1/⟨n⟩) Σ_j  R(r_ij) ⊗ [h̄_j ⊗ Y(r̂_ij)]                 one-particle basis
    B_i  = Σ_{ν ≤ correlation} W(z_i) · U^{(ν)} : A_i^{⊗ν}            higher-order basis
    m_i  = W_B B_i                                                    message
    h_i ← m_i + S(z_i) h_i                                            update (residual)

Y: spherical harmonics up to l_max. ⊗: the channel-wise ("uvu") tensor product, one path per
(l_in, l_Y, l_out) allowed by the selection rules whose l_out is an irrep of Y; its weights per
edge come from the radial MLP R applied to the Bessel basis times the smooth envelope (MACE's
"edge features", with the envelope on R's input; R has no biases and SiLU(0) = 0, so the
weights vanish at the cutoff as smoothly as the envelope). A has C
channels of every irrep of Y (0e+1o+2e+3o for l_max = 3: MACE's "interaction irreps").
B: the symmetric contraction (``equipot.nn.symmetric_contraction``), channel by channel, of the
ν-fold products of A_i with generalised Clebsch–Gordan coefficients U, weighted per species z_i
and channel: the (ν+1)-body features of MACE's ACE-like basis. S(z_i): a linear map with
weights per species of atom i (MACE's self-connection, the tensor product of h_i with the
one-hot species; ``SpeciesLinear``). W, W_A, W_B: equivariant linear maps mixing channels.
⟨n⟩: the training set's average number of neighbours (MACE divides by ⟨n⟩, not √⟨n⟩).
From the convolution's sums to B, A stays channels last ([(l_max+1)², N, C]): W_A is one matrix
product per l, with the weights of its e3nn module (``linear_matrices``), and no rearrangement to
e3nn's layout and back is needed before the symmetric contraction.

The first block, reading the species embedding, follows the reference implementation's
``RealAgnosticInteractionBlock``: no self-connection (S(z_i) h_i would be a constant per
species, the job of the reference energies; without it an atom without neighbours has zero
features) and a species-dependent W_A(z_i) instead (the reference applies its species tensor
product to A there). Later blocks are its ``RealAgnosticResidualInteractionBlock`` followed by
the ``EquivariantProductBasisBlock``. ``build_potential`` tells the first block it is
(``first_block``).

Readouts (``build_readout``): a linear map of the scalars after every block but the last, an
MLP (SiLU, no biases) after the last, none after the embedding; the per-atom energy is their sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from torch import nn

from equipot.blocks.contract import BlockContext, Family, FamilyParts, chain_blocks
from equipot.nn.convolution import EdgeConvolution
from equipot.nn.embedding import SpeciesEmbedding
from equipot.nn.geometry import Geometry
from equipot.nn.irreps import hidden_irreps
from equipot.nn.readout import LinearReadout, ScalarReadout
from equipot.nn.species_linear import SpeciesLinear
from equipot.nn.symmetric_contraction import SymmetricContraction


def channel_major(irreps: o3.Irreps) -> torch.Tensor:
    """Index [C · Σ(2l+1)] taking e3nn's layout "Cx0e+Cx1o+…" (per irrep, the C channels one
    after the other) to channel-major order (per channel, its 0e, 1o, … components)."""
    num_channels = irreps[0].mul
    return torch.tensor([start + channel * ir.dim + m
                         for channel in range(num_channels)
                         for (_, ir), start in zip(irreps, (s.start for s in irreps.slices()))
                         for m in range(ir.dim)])


def linear_matrices(linear: o3.Linear) -> list[torch.Tensor]:
    """The weights of an e3nn ``o3.Linear`` as one matrix [mul_in, Σ mul_out] per input irrep:
    the instructions from that irrep side by side (in their order), each times its path
    normalisation, so that ``x_in @ matrix`` gives every output irrep they feed, [..., Σ mul_out].
    """
    sizes = [math.prod(path.path_shape) for path in linear.instructions]
    blocks = [weight.view(path.path_shape) * path.path_weight
              for path, weight in zip(linear.instructions, linear.weight.split(sizes))]
    return [torch.cat([block for path, block in zip(linear.instructions, blocks)
                       if path.i_in == i_in], dim=1)
            for i_in in range(len(linear.irreps_in))]


class MACEReadout(ScalarReadout):
    """MACE's readout of the last block: Linear → SiLU → Linear of the scalars, no biases
    (features of zero, an atom without neighbours, read as zero energy)."""

    def __init__(self, irreps_in: o3.Irreps | str, hidden: int):
        super().__init__(irreps_in, hidden, activation=nn.SiLU, bias=False)


class MACEInteraction(nn.Module):
    def __init__(self, irreps_in: o3.Irreps, num_features: int, num_radial: int,
                 avg_num_neighbors: float, num_species: int, scalar_output: bool = False,
                 max_L: int = 1, l_max: int = 3, correlation: int = 3,
                 radial_hidden: int = 64, radial_layers: int = 3, first_block: bool = False):
        """``first_block``: the block reading the species embedding (no self-connection, W_A
        per species)."""
        super().__init__()
        self.first = first_block
        self.irreps_in = o3.Irreps(irreps_in)
        if not self.irreps_in or self.irreps_in[0].ir != o3.Irrep("0e"):
            raise ValueError(f"MACEInteraction takes features with 0e scalars first, but the "
                             f"module before it gives {self.irreps_in}")
        if not 0 <= max_L <= l_max:
            raise ValueError(f"max_L must lie in 0 … l_max = {l_max}, got {max_L}")
        self.l_max, self.num_features = l_max, num_features
        self.irreps_sh = o3.Irreps.spherical_harmonics(l_max)
        self.irreps_out = hidden_irreps(num_features, 0 if scalar_output else max_L, False)
        self.norm = 1.0 / avg_num_neighbors

        # A: C channels of every irrep of Y, through every uvu path h̄_j ⊗ Y that reaches one.
        irreps_a = o3.Irreps([(num_features, ir) for _, ir in self.irreps_sh])
        self.linear_up = o3.Linear(self.irreps_in, self.irreps_in)
        self.convolution = EdgeConvolution(self.irreps_in, self.irreps_sh,
                                           {ir for _, ir in irreps_a})
        self.radial = FullyConnectedNet([num_radial] + [radial_hidden] * radial_layers
                                        + [self.convolution.weight_numel],
                                        torch.nn.functional.silu)
        irreps_mid = self.convolution.irreps_out.simplify()
        self.linear_a = (SpeciesLinear(irreps_mid, irreps_a, num_species) if self.first
                         else o3.Linear(irreps_mid, irreps_a))
        # W_A reads the convolution's channels-last sums: for each irrep l of A, those of the
        # n_l paths into l (irreps_mid holds them as n_l · C channels of l, in the order of A).
        self.paths_into = [(mul // num_features, ir.dim) for mul, ir in irreps_mid]

        # B and m, channel by channel: A's C channels of 0e+1o+… → C channels of 0e+… (≤ max_L).
        self.product = SymmetricContraction(self.irreps_sh,
                                            o3.Irreps([(1, ir) for _, ir in self.irreps_out]),
                                            num_features, num_species, correlation)
        self.register_buffer("b_e3nn_order", torch.argsort(channel_major(self.irreps_out)),
                             persistent=False)
        self.linear_b = o3.Linear(self.irreps_out, self.irreps_out)
        self.self_connection = (None if self.first else
                                SpeciesLinear(self.irreps_in, self.irreps_out, num_species))

    def forward(self, features: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        species = geometry.species
        x = self.linear_up(features)
        weights = self.radial(geometry.radial_basis * geometry.envelope.unsqueeze(-1))
        aggregated = self.convolution.channels_last(
            x, geometry.spherical_harmonics(self.l_max), weights, geometry.centre,
            geometry.neighbour) * self.norm
        a = self.one_particle_basis(aggregated, species)  # [(l_max+1)², N, C]
        b = self.product(a.permute(1, 2, 0), species)  # [N, C, dim(irreps_out)]
        b = b.flatten(1)[:, self.b_e3nn_order]  # e3nn layout again
        out = self.linear_b(b)
        if self.self_connection is not None:
            out = out + self.self_connection(features, species)
        return out

    def one_particle_basis(self, aggregated: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """A = W_A(z_i) of the convolution's sums [N, K, C] (``EdgeConvolution.channels_last``),
        as [(l_max+1)², N, C]: for each l one matrix product of the [2l+1, N, n_l C] sums of the
        paths into l, for every species at once in the first block (then each atom's is kept)."""
        linear = self.linear_a.linear if self.first else self.linear_a
        sums = aggregated.split([paths * dim for paths, dim in self.paths_into], dim=1)
        components = [block.unflatten(1, shape).permute(2, 0, 1, 3).flatten(2) @ matrix
                      for block, shape, matrix in zip(sums, self.paths_into,
                                                      linear_matrices(linear))]
        a = torch.cat(components)  # [(l_max+1)², N, S C] in the first block, else [..., C]
        if not self.first:
            return a
        every_species = a.unflatten(2, (self.linear_a.num_species, self.num_features))
        return every_species[:, torch.arange(a.shape[1], device=a.device), species]


@dataclass(frozen=True)
class MACEOptions:
    max_L: int = 1  # highest l of the hidden features (natural parity)
    l_max: int = 3  # highest l of the spherical harmonics and of A
    correlation: int = 3  # highest order ν of the products of A
    radial_hidden: int = 64  # width of the radial MLP
    radial_layers: int = 3  # its hidden layers


def build_mace(context: BlockContext, options: MACEOptions) -> FamilyParts:
    """A linear readout after every block but the last, MACE's MLP after the last; the
    first block reads the embedding (no self-connection, W_A per species) and the last
    computes scalars only."""
    embedding = SpeciesEmbedding(context.num_species, context.num_features)
    blocks = chain_blocks(context, embedding.irreps_out, lambda irreps, index: MACEInteraction(
        irreps, context.num_features, context.num_radial, context.avg_num_neighbors,
        context.num_species, index == context.num_blocks, options.max_L, options.l_max,
        options.correlation, options.radial_hidden, options.radial_layers,
        first_block=index == 1))
    readouts = {index: (LinearReadout(block.irreps_out) if index < context.num_blocks
                        else MACEReadout(block.irreps_out, context.readout_hidden))
                for index, block in enumerate(blocks, 1)}
    return FamilyParts(embedding, blocks, readouts)


MACE = Family("mace", build_mace, MACEOptions)
