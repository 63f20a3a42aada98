"""NequIP interaction block (Batzner et al., Nat. Commun. 13, 2453, 2022), with e3nn.

Atom features h are e3nn irreps up to l_max (both parities when ``parity``, else the natural
parity (−1)^l only). One block, for atom i with neighbours j, edge direction r̂_ij and edge
length r_ij:

    x_i  = W₁ h_i                                           self-interaction (linear)
    m_i  = (1/√⟨n⟩) Σ_j  R(r_ij) ⊗ [x_j ⊗ Y(r̂_ij)]          convolution
    y_i  = W₂ m_i + S(z_i) h_i                              self-interaction + self-connection
    h_i ← Gate(y_i)  (+ h_i with ``resnet``, where irreps match)   equivariant nonlinearity

The last block (``scalar_output``) computes only the 0e features the energy readout uses.

Y: spherical harmonics up to l_max. ⊗: the channel-wise ("uvu") tensor product, one path per
(l_in, l_sh, l_out) allowed by the selection rules; its weights per edge come from the radial
MLP R of the Bessel basis, times the smooth envelope, so messages vanish at the cutoff.
S(z_i): a linear map with weights per species of atom i (NequIP's self-connection, the tensor
product of h_i with the one-hot species), the block's skip connection; a residual on top is
NequIP's ``resnet`` option, off by default as there. Gate, as NequIP's defaults: SiLU (even) /
tanh (odd) on the scalars, and on the gate scalars that multiply the l > 0 features (not a
sigmoid: on bundled acac, 20 epochs reach F MAE 63 meV/Å against 69 with sigmoid gates).
⟨n⟩: the training set's average number of neighbours (e3nn's normalisation: a sum of n
unit-variance terms has variance n).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from e3nn import o3
from e3nn.nn import Activation, FullyConnectedNet, Gate
from torch import nn

from equipot.blocks.contract import BlockContext, Family, FamilyParts, species_embedding_parts
from equipot.nn.convolution import EdgeConvolution
from equipot.nn.geometry import Geometry
from equipot.nn.irreps import hidden_irreps
from equipot.nn.species_linear import SpeciesLinear

# Activations of the gate scalars that multiply the l > 0 features: SiLU, NequIP's default, or
# the sigmoid of equipot's first NequIP (model files of format 1, ``equipot.model.checkpoint``).
GATES = {"silu": torch.nn.functional.silu, "sigmoid": torch.sigmoid}


class NequIPInteraction(nn.Module):
    def __init__(self, irreps_in: o3.Irreps, num_features: int, num_radial: int,
                 avg_num_neighbors: float, num_species: int, l_max: int = 2,
                 parity: bool = True, radial_hidden: int = 64, resnet: bool = False,
                 scalar_output: bool = False, gate: str = "silu"):
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"NequIP gate must be one of {sorted(GATES)}, got {gate!r}")
        self.irreps_in = o3.Irreps(irreps_in)
        if self.irreps_in[0][1] != o3.Irrep("0e"):
            raise ValueError(f"NequIPInteraction takes features with 0e scalars first, but the "
                             f"module before it gives {self.irreps_in}")
        self.irreps_sh = o3.Irreps.spherical_harmonics(l_max)
        self.l_max = l_max
        self.norm = avg_num_neighbors ** -0.5

        # Convolution x_j ⊗ Y(r̂_ij): every path whose output is an allowed hidden irrep. The
        # last block feeds only the readout of invariants: it computes 0e outputs alone.
        hidden = hidden_irreps(num_features, l_max, parity)
        allowed = {o3.Irrep("0e")} if scalar_output else {ir for _, ir in hidden}
        self.linear_in = o3.Linear(self.irreps_in, self.irreps_in)
        self.convolution = EdgeConvolution(self.irreps_in, self.irreps_sh, allowed)
        irreps_mid = self.convolution.irreps_out
        self.radial = FullyConnectedNet([num_radial, radial_hidden, radial_hidden,
                                         self.convolution.weight_numel], torch.nn.functional.silu)

        # Gate: the reachable hidden irreps become this block's output.
        reachable = {ir for _, ir in irreps_mid.simplify()}
        scalars = o3.Irreps([(num_features, ir) for ir in (o3.Irrep("0e"), o3.Irrep("0o"))
                             if ir in reachable and ir in allowed])
        gated = o3.Irreps([(num_features, ir) for _, ir in hidden
                           if ir.l > 0 and ir in reachable])
        activations = [torch.nn.functional.silu if ir.p == 1 else torch.tanh
                       for _, ir in scalars]
        if gated:
            self.gate = Gate(scalars, activations, o3.Irreps(f"{gated.num_irreps}x0e"),
                             [GATES[gate]], gated)
        else:  # l_max = 0 or scalar output: nothing to gate
            self.gate = Activation(scalars, activations)
        self.linear_out = o3.Linear(irreps_mid, self.gate.irreps_in)
        self.self_connection = SpeciesLinear(self.irreps_in, self.gate.irreps_in, num_species)
        self.irreps_out = self.gate.irreps_out
        # Residual onto the input's leading irreps when they are the output's (all of them, or
        # the scalars for a scalar output).
        self.residual = resnet and self.irreps_in[:len(self.irreps_out)] == self.irreps_out

    def forward(self, features: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        x = self.linear_in(features)
        weights = self.radial(geometry.radial_basis) * geometry.envelope.unsqueeze(-1)
        aggregated = self.convolution(x, geometry.spherical_harmonics(self.l_max), weights,
                                      geometry.centre, geometry.neighbour) * self.norm
        out = self.gate(self.linear_out(aggregated)
                        + self.self_connection(features, geometry.species))
        return features[:, :self.irreps_out.dim] + out if self.residual else out


@dataclass(frozen=True)
class NequIPOptions:
    l_max: int = 2  # highest l of the spherical harmonics and of the features
    parity: bool = True  # features of both parities (0e, 0o, 1o, 1e, …) or natural only
    radial_hidden: int = 64  # width of the radial MLP
    resnet: bool = False  # residual update where input and output irreps agree
    gate: str = "silu"  # activation of the gate scalars: silu or sigmoid (GATES)


def build_nequip(context: BlockContext, options: NequIPOptions) -> FamilyParts:
    """The last block computes only the scalars its readout takes."""
    return species_embedding_parts(context, lambda irreps, index: NequIPInteraction(
        irreps, context.num_features, context.num_radial, context.avg_num_neighbors,
        context.num_species, options.l_max, options.parity, options.radial_hidden,
        options.resnet, scalar_output=index == context.num_blocks, gate=options.gate))


NEQUIP = Family("nequip", build_nequip, NequIPOptions)
