"""DimeNet++ (Gasteiger, Giri, Margraf, Günnemann, "Fast and uncertainty-aware directional
message passing for non-equilibrium molecules", 2020), after DimeNet (Gasteiger, Groß,
Günnemann, ICLR 2020).

Features are messages m_ji on the edges j → i (edge e: centre i receives from neighbour j),
[E, F] with F = emb_size. d: an edge's length, c: the cutoff, u(d): the polynomial envelope
(DimeNet's p = 6 is our ``envelope_exponent: 6``), σ: swish (SiLU), α_kji: the angle at j
between j → i and j → k, for every edge k → j arriving at j except the back-edge i → j.

basis        e_RBF,n(d)    = √(2/c) sin(nπd/c)/d · u(d)                          n = 1 … N_rbf
             a_SBF,ln(d,α) = √(2/(c³ j²_{l+1}(z_ln))) j_l(z_ln d/c) · Y_l^0(α) · u(d)
                             l = 0 … N_sbf − 1, n = 1 … N_rbf, z_ln the n-th root of j_l,
                             Y_l^0(α) = √((2l+1)/4π) P_l(cos α)
embedding    h_i    = Emb(z_i)
             m_ji   = σ(W [h_j ‖ h_i ‖ σ(W_rbf e_RBF(d_ji))])
interaction  x_kj   = σ(W_kj m_kj) ⊙ (W_rbf2 W_rbf1 e_RBF(d_kj))
             t_ji   = σ(W_up Σ_k σ(W_down x_kj) ⊙ (W_sbf2 W_sbf1 a_SBF(d_kj, α_kji)))
                      (W_down: F → int_emb_size, W_up: back; W_rbf1, W_sbf1: → basis_emb_size)
             y_ji   = Res_before(σ(W_ji m_ji) + t_ji)
             m_ji  ← Res_after(m_ji + σ(W y_ji))          Res(x) = x + σ(W₂ σ(W₁ x)), stacked
output       t_i    = Σ_j (W_rbf e_RBF(d_ji)) ⊙ m_ji
             ε_i    = W_out σ(W_L … σ(W_1 W_up t_i))      one per stage, the embedding's too

Linear maps with a bias except W_rbf1/2, W_sbf1/2, W_down, W_up and the output's W_rbf, W_up
and W_out; weights initialised Glorot-orthogonal, biases zero, Emb uniform in ±√3, as in the
reference code. The radial basis is the geometry's (fixed frequencies nπ/c, shared with every
block; the reference code trains them), and both bases are computed once per forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from e3nn import o3
from scipy.optimize import brentq
from scipy.special import spherical_jn
from torch import nn

from equipot.blocks.contract import BlockContext, Family, FamilyParts, chain_blocks
from equipot.nn.geometry import Geometry
from equipot.nn.irreps import require_irreps
from equipot.nn.readout import Readout
from equipot.nn.scatter import scatter_sum

# ---------------------------------------------------------------- bases

# j_l(x) is summed as its power series below x = max(l, 1) and by upward recurrence from j_0 and
# j_1 from there on: the recurrence (and the closed forms it starts from) loses ~ y_l(x)/j_l(x)
# in relative accuracy, which is large only for x < l (and x ≪ 1), and 18 terms of the series
# reach float64 round-off for x ≤ max(l, 1), l ≤ 6.
SERIES_TERMS = 18


def spherical_bessel(l: int, x: torch.Tensor) -> torch.Tensor:
    """j_l(x) of x > 0 (any shape), differentiable twice; values within ~1e-6 of max |j_l| in
    float32 and ~1e-15 in float64 for l ≤ 6."""
    switch = float(max(l, 1))
    # Power series j_l(x) = x^l Σ_k a_k x^{2k}, a_0 = 1/(2l+1)!!, a_k/a_{k-1} = −1/(2k(2l+2k+1)).
    small = torch.clamp(x, max=switch)
    coefficients = [1.0 / math.prod(range(1, 2 * l + 2, 2))]
    for k in range(1, SERIES_TERMS):
        coefficients.append(-coefficients[-1] / (2 * k * (2 * l + 2 * k + 1)))
    square = small * small
    series = torch.full_like(small, coefficients[-1])
    for coefficient in reversed(coefficients[:-1]):
        series = series * square + coefficient
    series = series * small**l
    # j_0 = sin x / x, j_1 = (j_0 − cos x) / x, j_{m+1}(x) = (2m+1)/x j_m(x) − j_{m−1}(x)
    large = torch.clamp(x, min=switch)
    previous = torch.sin(large) / large
    current = (previous - torch.cos(large)) / large if l else previous
    for m in range(1, l):
        previous, current = current, (2 * m + 1) / large * current - previous
    return torch.where(x < switch, series, current)


def spherical_bessel_roots(num_spherical: int, num_radial: int) -> np.ndarray:
    """z_ln [num_spherical, num_radial], the first num_radial positive roots of each j_l: those
    of j_0 are nπ, and those of j_l lie between consecutive roots of j_{l−1}."""
    points = np.arange(1, num_radial + num_spherical) * np.pi
    roots = [points[:num_radial]]
    for l in range(1, num_spherical):
        points = np.array([brentq(lambda x, order: spherical_jn(order, x), a, b, args=(l,),
                                  xtol=1e-15, rtol=1e-15)
                           for a, b in zip(points[:-1], points[1:])])
        roots.append(points[:num_radial])
    return np.stack(roots)


def legendre(num_orders: int, x: torch.Tensor) -> torch.Tensor:
    """P_l(x), l = 0 … num_orders − 1, [..., num_orders], by Bonnet's recurrence
    (l+1) P_{l+1} = (2l+1) x P_l − l P_{l−1} (stable for |x| ≤ 1)."""
    polynomials = [torch.ones_like(x), x][:num_orders]
    for l in range(1, num_orders - 1):
        polynomials.append(((2 * l + 1) * x * polynomials[l] - l * polynomials[l - 1]) / (l + 1))
    return torch.stack(polynomials, dim=-1)


def radial_basis(geometry: Geometry) -> torch.Tensor:
    """e_RBF(d) [E, N_rbf]: the geometry's Bessel basis times the envelope."""
    return geometry.shared("dimenet_radial_basis",
                           lambda: geometry.radial_basis * geometry.envelope.unsqueeze(-1))


class SphericalBasis(nn.Module):
    """a_SBF(d_kj, α_kji) [T, num_spherical · num_radial] (index l · num_radial + n − 1) of
    the geometry's triplets, computed once per forward pass for every block."""

    def __init__(self, cutoff: float, num_spherical: int, num_radial: int):
        super().__init__()
        self.cutoff, self.num_spherical, self.num_radial = cutoff, num_spherical, num_radial
        roots = spherical_bessel_roots(num_spherical, num_radial)
        normalisation = np.sqrt(2.0 / cutoff**3) / np.abs(
            spherical_jn(np.arange(1, num_spherical + 1)[:, None], roots))
        dtype = torch.get_default_dtype()
        self.register_buffer("roots", torch.tensor(roots, dtype=dtype), persistent=False)
        self.register_buffer("normalisation", torch.tensor(normalisation, dtype=dtype),
                             persistent=False)
        self.register_buffer("harmonic_normalisation", torch.tensor(
            [math.sqrt((2 * l + 1) / (4 * math.pi)) for l in range(num_spherical)], dtype=dtype),
            persistent=False)

    def forward(self, geometry: Geometry) -> torch.Tensor:
        key = ("dimenet_spherical_basis", self.cutoff, self.num_spherical, self.num_radial)
        return geometry.shared(key, lambda: self.evaluate(geometry))

    def evaluate(self, geometry: Geometry) -> torch.Tensor:
        # Radial part, per edge: √(2/(c³ j²_{l+1}(z_ln))) j_l(z_ln d/c) u(d)   [E, L, N]
        scaled = self.roots * (geometry.lengths / self.cutoff)[:, None, None]
        bessel = torch.stack([spherical_bessel(l, scaled[:, l]) for l in range(self.num_spherical)],
                             dim=1)
        radial = self.normalisation * bessel * geometry.envelope[:, None, None]
        # Angular part, per triplet: cos α_kji = (j → i)·(j → k) / (|j → i| |j → k|)   [T, L]
        triplets = geometry.triplets
        unit = geometry.unit_vectors
        cos = -(unit.index_select(0, triplets.edge_ji)
                * unit.index_select(0, triplets.edge_kj)).sum(dim=-1)
        harmonics = self.harmonic_normalisation * legendre(self.num_spherical, cos)
        basis = radial.index_select(0, triplets.edge_kj) * harmonics.unsqueeze(-1)
        return basis.reshape(-1, self.num_spherical * self.num_radial)


# ---------------------------------------------------------------- layers


class TripletSum(torch.autograd.Function):
    """out[e] = Σ_{t: edge_ji[t] = e} x[edge_kj[t]] ⊙ s[t]: x [E, C], s [T, C] → [E, C].

    The same as scatter_sum(x[edge_kj] * s, edge_ji, E), but the gathered x[edge_kj] [T, C] is
    not kept for the backward pass (it is gathered again there), which saves a third of each
    block's memory on a large periodic cell. The backward pass is made of differentiable
    operations, so the function is twice differentiable (forces in a training loss).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, s: torch.Tensor, edge_kj: torch.Tensor,
                edge_ji: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, s, edge_kj, edge_ji)
        return x.new_zeros(x.shape).index_add_(0, edge_ji, x.index_select(0, edge_kj).mul_(s))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, s, edge_kj, edge_ji = ctx.saved_tensors
        grad_ji = grad.index_select(0, edge_ji)
        grad_x = (scatter_sum(grad_ji * s, edge_kj, x.shape[0]) if ctx.needs_input_grad[0]
                  else None)
        grad_s = grad_ji * x.index_select(0, edge_kj) if ctx.needs_input_grad[1] else None
        return grad_x, grad_s, None, None


def glorot_orthogonal_(weight: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
    """An orthogonal matrix rescaled to variance scale / (fan_in + fan_out) (DimeNet's init)."""
    with torch.no_grad():
        nn.init.orthogonal_(weight)
        weight.mul_(math.sqrt(scale / ((weight.shape[0] + weight.shape[1]) * weight.var())))
    return weight


def dense(width_in: int, width_out: int, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(width_in, width_out, bias=bias)
    glorot_orthogonal_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class ResidualLayer(nn.Module):
    """x + σ(W₂ σ(W₁ x))."""

    def __init__(self, width: int):
        super().__init__()
        self.first, self.second = dense(width, width), dense(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + nn.functional.silu(self.second(nn.functional.silu(self.first(x))))


# ---------------------------------------------------------------- embedding, interaction, output


class DimeNetEmbedding(nn.Module):
    """Stage 0: m_ji = σ(W [h_j ‖ h_i ‖ σ(W_rbf e_RBF(d_ji))]), h = Emb(z); → [E, F]."""

    def __init__(self, num_species: int, num_features: int, num_radial: int):
        super().__init__()
        self.irreps_out = o3.Irreps(f"{num_features}x0e")
        self.embedding = nn.Embedding(num_species, num_features)
        nn.init.uniform_(self.embedding.weight, -math.sqrt(3.0), math.sqrt(3.0))
        self.rbf = dense(num_radial, num_features)
        self.mix = dense(3 * num_features, num_features)

    def forward(self, geometry: Geometry) -> torch.Tensor:
        h = self.embedding(geometry.species)
        rbf = nn.functional.silu(self.rbf(radial_basis(geometry)))
        return nn.functional.silu(self.mix(torch.cat(
            [h[geometry.neighbour], h[geometry.centre], rbf], dim=-1)))

    @torch.no_grad()
    def take_species(self, source: DimeNetEmbedding, rows: torch.Tensor) -> None:
        """``source``'s weights, its species s as species ``rows[s]`` here
        (``equipot.nn.species_rows``)."""
        self.embedding.weight[rows] = source.embedding.weight
        self.rbf.load_state_dict(source.rbf.state_dict())
        self.mix.load_state_dict(source.mix.state_dict())


class DimeNetPlusPlusInteraction(nn.Module):
    """m_ji [E, F] → m_ji [E, F]. ``avg_num_neighbors`` is not used (DimeNet++ does not
    normalise its sums)."""

    def __init__(self, irreps_in: o3.Irreps, num_features: int, num_radial: int,
                 avg_num_neighbors: float, cutoff: float, int_emb_size: int = 64,
                 basis_emb_size: int = 8, num_spherical: int = 7, num_before_skip: int = 1,
                 num_after_skip: int = 2):
        super().__init__()
        F = num_features
        self.irreps_in = self.irreps_out = require_irreps(self, irreps_in, f"{F}x0e")
        self.spherical_basis = SphericalBasis(cutoff, num_spherical, num_radial)
        self.rbf = nn.Sequential(dense(num_radial, basis_emb_size, bias=False),
                                 dense(basis_emb_size, F, bias=False))
        self.sbf = nn.Sequential(dense(num_spherical * num_radial, basis_emb_size, bias=False),
                                 dense(basis_emb_size, int_emb_size, bias=False))
        self.kj, self.ji = dense(F, F), dense(F, F)
        self.down = dense(F, int_emb_size, bias=False)
        self.up = dense(int_emb_size, F, bias=False)
        self.before_skip = nn.Sequential(*(ResidualLayer(F) for _ in range(num_before_skip)))
        self.skip = dense(F, F)
        self.after_skip = nn.Sequential(*(ResidualLayer(F) for _ in range(num_after_skip)))

    def forward(self, messages: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        silu = nn.functional.silu
        x_kj = silu(self.kj(messages)) * self.rbf(radial_basis(geometry))
        x_kj = silu(self.down(x_kj))
        # Σ_k over the triplets k → j → i of each edge j → i, weighted by W_sbf2 W_sbf1 a_SBF
        triplets = geometry.triplets
        sbf = self.sbf(self.spherical_basis(geometry))
        t_ji = silu(self.up(TripletSum.apply(x_kj, sbf, triplets.edge_kj, triplets.edge_ji)))
        y_ji = self.before_skip(silu(self.ji(messages)) + t_ji)
        return self.after_skip(messages + silu(self.skip(y_ji)))


class DimeNetOutput(Readout):
    """ε_i = W_out σ(W_L … σ(W_1 W_up Σ_j (W_rbf e_RBF(d_ji)) ⊙ m_ji)): [E, F] → [N]."""

    def __init__(self, irreps_in: o3.Irreps | str, num_radial: int, out_emb_size: int,
                 num_layers: int):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        F = self.irreps_in.dim
        self.rbf = dense(num_radial, F, bias=False)
        self.up = dense(F, out_emb_size, bias=False)
        self.layers = nn.Sequential(*(layer for _ in range(num_layers) for layer in (
            dense(out_emb_size, out_emb_size), nn.SiLU())))
        self.out = dense(out_emb_size, 1, bias=False)

    @property
    def last_layer(self) -> nn.Linear:
        return self.out

    @property
    def num_inputs(self) -> int:
        return self.up.out_features

    def inputs(self, messages: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        t = scatter_sum(self.rbf(radial_basis(geometry)) * messages, geometry.centre,
                        geometry.num_atoms)
        return self.up(t)

    def hidden_layers(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@dataclass(frozen=True)
class DimeNetOptions:
    int_emb_size: int = 64  # width of the triplet interaction (W_down → W_up)
    basis_emb_size: int = 8  # width of the bases' projections W_rbf1, W_sbf1
    num_spherical: int = 7  # N_sbf, spherical harmonics l = 0 … N_sbf − 1
    num_before_skip: int = 1  # residual layers before the skip connection
    num_after_skip: int = 2  # residual layers after it
    out_emb_size: int = 256  # width of the output blocks
    num_output_layers: int = 3  # their hidden layers


def build_dimenet(context: BlockContext, options: DimeNetOptions) -> FamilyParts:
    """Messages on edges from the embedding on; an output block after every stage (the
    output blocks' width is ``out_emb_size``: ``readout_hidden`` is not used)."""
    F, B = context.num_features, context.num_radial
    embedding = DimeNetEmbedding(context.num_species, F, B)
    blocks = chain_blocks(context, embedding.irreps_out, lambda irreps, _: (
        DimeNetPlusPlusInteraction(irreps, F, B, context.avg_num_neighbors, context.cutoff,
                                   options.int_emb_size, options.basis_emb_size,
                                   options.num_spherical, options.num_before_skip,
                                   options.num_after_skip)))
    readouts = {stage: DimeNetOutput(embedding.irreps_out, B, options.out_emb_size,
                                     options.num_output_layers)
                for stage in range(context.num_blocks + 1)}
    return FamilyParts(embedding, blocks, readouts)


DIMENET = Family("dimenet", build_dimenet, DimeNetOptions, features_on="edges")
