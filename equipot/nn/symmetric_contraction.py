"""MACE's symmetric contraction (Batatia et al., NeurIPS 2022): many-body features of each atom.

From the one-particle basis A of atom i (C channels, each holding the irreps ``irreps_in``, e.g.
0e + 1o + 2e) and its species z_i, for every output irrep L and channel c:

    B^{(ν)}_{i,c,LM,η} = Σ_{k1…kν} U^{(ν,L)}_{k1…kν,M,η} A_{i,c,k1} ⋯ A_{i,c,kν}
    m_{i,c,LM}        = Σ_{ν=1..ν_max} Σ_η W^{(ν,L)}_{z_i,c,η} B^{(ν)}_{i,c,LM,η}

k runs over the d = dim(irreps_in) components (l, m) of ``irreps_in``. The generalised
Clebsch–Gordan coefficients U^{(ν,L)} are a basis (paths η = 1…P_{ν,L}) of the equivariant maps
from the ν-th tensor power of ``irreps_in`` to L that are symmetric in k1…kν: the ν factors are
the same A, so an antisymmetric part would vanish. e3nn's ``o3.ReducedTensorProducts`` finds
them, reducing the tensor with the symmetries "ij=ji", "ijk=jik=ikj", … into irreps, each
normalised to Σ_k U_{k,M,η} U_{k,M',η} = δ_{MM'}. W: learnable, per species and channel.

Forward: as U is symmetric, the sum over k1…kν runs over the monomials k1 ≤ … ≤ kν only, with
U summed over the orderings of each: (d+ν−1 choose ν) terms instead of d^ν (165 instead of 729
for 0e+1o+2e at ν = 3). The monomials of order ν are those of order ν−1 times one more component
of A. The monomials of each order meet their rows of the precomputed coupling in one matrix
product with their own columns of the precomputed coupling (the paths of that order); the
highest order contracts U with the monomials of the order below first, one slice per component
of A, so its own monomials (816 rows for 0e+1o+2e+3o at ν = 3) are never formed. The weights
of each atom's species, gathered as W[z] (no loop over species), then sum the paths η of all
orders into m.

Initialisation: W_η ~ N(0, 1/(P_L ⟨B_η²⟩)), P_L = Σ_ν P_{ν,L} the paths into L and ⟨B_η²⟩ the
mean square of B_η when the components of A are independent standard normals (exact, from the
Gaussian moments of the monomials: ν! for a traceless coupling, more when traces like |A_l|² add
their mean). Then m has unit variance for such A, on average over initialisations.
"""

from __future__ import annotations

import itertools
import math

import torch
from e3nn import o3
from torch import nn


def symmetric_formula(order: int) -> str:
    """e3nn's index formula of a tensor symmetric in its ``order`` indices, e.g. "ijk=jik=ikj".

    Swaps of neighbouring indices generate every permutation.
    """
    indices = "ijklmnopqrstuvwxyz"[:order]
    swaps = [indices[:k] + indices[k + 1] + indices[k] + indices[k + 2:] for k in range(order - 1)]
    return "=".join([indices, *swaps])


def symmetric_couplings(irreps_in: o3.Irreps, targets: list[o3.Irrep],
                        order: int) -> dict[o3.Irrep, torch.Tensor]:
    """U^{(ν,L)} for ν = ``order`` and each target L, as float64 [d^ν, 2L+1, P_{ν,L}].

    Axis 0 runs over k1…kν in row-major order. P_{ν,L} is 0 where L is out of reach.
    """
    # e3nn fails if it finds none of filter_ir_out, so ask for one irrep that is always there
    # too: A_{l,m=l}^ν, of the first irrep l of A, is symmetric and of the highest weight ν l.
    first = irreps_in[0].ir
    always_there = o3.Irrep(order * first.l, first.p ** order)
    reduced = o3.ReducedTensorProducts(symmetric_formula(order),
                                       filter_ir_out=[*targets, always_there], i=irreps_in)
    # Its output holds each irrep once, as mul copies of 2L+1 components.
    found = {ir: reduced.change_of_basis[rows].reshape(mul, ir.dim, -1).permute(2, 1, 0)
             for (mul, ir), rows in zip(reduced.irreps_out, reduced.irreps_out.slices())}
    return {ir: found.get(ir, torch.zeros(irreps_in.dim ** order, ir.dim, 0)).double()
            for ir in targets}


def gaussian_moments(monomials: list[tuple[int, ...]], dim: int) -> torch.Tensor:
    """E[x_a x_b] of the monomials x_a = a_{k1} ⋯ a_{kν} of d independent standard normals a_k.

    Π_k (n_k − 1)!!, with n_k how often a_k appears in x_a and x_b together; 0 if any n_k is odd.
    [number of monomials, number of monomials], float64.
    """
    powers = torch.tensor([[monomial.count(k) for k in range(dim)] for monomial in monomials])
    highest = 2 * int(powers.max())
    normal_moments = torch.tensor([math.prod(range(n - 1, 0, -2)) if n % 2 == 0 else 0
                                   for n in range(highest + 1)], dtype=torch.float64)
    moments = torch.ones(len(monomials), len(monomials), dtype=torch.float64)
    for k in range(dim):
        moments *= normal_moments[powers[:, k, None] + powers[None, :, k]]
    return moments


class SymmetricContraction(nn.Module):
    """[N, C, dim(irreps_in)] one-particle basis A and [N] species → [N, C, dim(irreps_out)].

    Layout: the last axis of A holds one channel's ``irreps_in`` in e3nn order (the irreps one
    after the other, m = −l…l within each), alike for every channel; the output's likewise holds
    ``irreps_out``, in which each irrep must appear once. (Features in e3nn's "Cx0e+Cx1o+…"
    layout have to be rearranged channel-major first.) Species: int64 in 0…S−1.

    ``weights``: [S, C, Σ_L P_L], the paths of each L in ``irreps_out``'s order, within one L
    by increasing order ν; ``path_order``: [Σ_L P_L], the ν of each path.
    """

    def __init__(self, irreps_in: o3.Irreps | str, irreps_out: o3.Irreps | str,
                 num_channels: int, num_species: int, correlation: int = 3):
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        targets = [ir for _, ir in self.irreps_out]
        if any(mul != 1 for mul, _ in self.irreps_out) or len(set(targets)) != len(targets):
            raise ValueError(f"irreps_out must hold each irrep once, got {self.irreps_out}")
        if correlation < 1:
            raise ValueError(f"correlation must be at least 1, got {correlation}")
        self.correlation = correlation
        dim = self.irreps_in.dim

        # Monomials k1 ≤ … ≤ kν of each order ν. From order 2 on, each is a monomial of order
        # ν−1 (its index in that order's list) times component kν of A.
        monomials = [list(itertools.combinations_with_replacement(range(dim), order))
                     for order in range(1, correlation + 1)]
        for order in range(2, correlation + 1):
            position = {monomial: index for index, monomial in enumerate(monomials[order - 2])}
            steps = [(position[monomial[:-1]], monomial[-1]) for monomial in monomials[order - 1]]
            self.register_buffer(f"monomial_steps_{order}", torch.tensor(steps).T)
        self.monomial_counts = [len(monomials_of_order) for monomials_of_order in monomials]

        couplings = [symmetric_couplings(self.irreps_in, targets, order)
                     for order in range(1, correlation + 1)]
        unreachable = [ir for ir in targets if all(c[ir].shape[-1] == 0 for c in couplings)]
        if unreachable:
            raise ValueError(f"no product of at most {correlation} x ({self.irreps_in}) couples "
                             f"to {unreachable}")

        # The coupling matrix: rows, the monomials of all orders one after the other; columns,
        # (L, M, η), η running over the paths into L of all orders. A monomial's row sums U over
        # all the orderings k1…kν of its components.
        blocks, path_order = [], []
        for ir in targets:
            block = torch.zeros(sum(map(len, monomials)), ir.dim,
                                sum(c[ir].shape[-1] for c in couplings), dtype=torch.float64)
            row, column = 0, 0
            for order, coupling in enumerate(couplings, start=1):
                paths = coupling[ir].shape[-1]
                row_of = {monomial: row + index
                          for index, monomial in enumerate(monomials[order - 1])}
                rows = torch.tensor([row_of[tuple(sorted(k))]
                                     for k in itertools.product(range(dim), repeat=order)])
                block[:, :, column:column + paths].index_add_(0, rows, coupling[ir])
                row, column = row + len(monomials[order - 1]), column + paths
                path_order += [order] * paths
            blocks.append(block)
        coupling = torch.cat([block.flatten(1) for block in blocks], dim=1)
        self.register_buffer("coupling", coupling.to(torch.get_default_dtype()))
        self.register_buffer("path_order", torch.tensor(path_order))
        self.num_paths = [block.shape[-1] for block in blocks]  # P_L
        self.basis_sizes = [block.shape[1:].numel() for block in blocks]  # (2L+1) P_L

        # The highest order ν skips its own monomials: as m^{(ν)} = m^{(ν−1)}_prev A_k with
        # prev's last component ≤ k, B^{(ν)} = Σ_k A_k ⊙ (V_kᵀ m^{(ν−1)}_{prev ≤ k}), V_k[prev] =
        # U's row of the monomial (prev, k), zero where prev's last component exceeds k. In
        # colex order (last component first) the monomials prev ≤ k are a prefix of order
        # ν−1's. The components k go in ⌈√d⌉ groups, each one product of the V_k of its k side
        # by side with the prefix its last k needs: 1040 multiply-adds per channel and column
        # for d = 16 (0e+1o+2e+3o) against 2176 for all prev with every k, and 816 for one
        # product per k, which in eager mode costs more in the number of ops than it saves.
        column_order = torch.cat([orders.repeat(ir.dim) for ir, orders in
                                  zip(targets, torch.tensor(path_order).split(self.num_paths))])
        self.contract_last = correlation > 1
        if self.contract_last:
            previous = monomials[correlation - 2]
            colex = sorted(range(len(previous)), key=lambda index: previous[index][::-1])
            position = {monomial: index for index, monomial in enumerate(monomials[-1])}
            missing = len(monomials[-1])  # the index of a zero row appended to U's rows
            size = math.ceil(math.sqrt(dim))
            self.last_order_groups = []  # (first k, last k + 1, prefix length)
            rows = []
            for first in range(0, dim, size):
                last = min(first + size, dim)
                prefix = sum(previous[index][-1] < last for index in colex)
                self.last_order_groups.append((first, last, prefix))
                rows += [position.get(previous[index] + (k,), missing)
                         for index in colex[:prefix] for k in range(first, last)]
            self.register_buffer("last_order_previous", torch.tensor(colex), persistent=False)
            self.register_buffer("last_order_rows", torch.tensor(rows), persistent=False)
        # The monomials of order ν couple only to the columns of order-ν paths, so each order
        # multiplies its own columns of U (``order_columns_ν``), not all of them; the basis,
        # built order after order, returns to U's column order by ``column_place``.
        order_columns = [torch.nonzero(column_order == order).flatten()
                         for order in range(1, correlation + 1)]
        for order, columns in enumerate(order_columns, start=1):
            self.register_buffer(f"order_columns_{order}", columns, persistent=False)
        self.register_buffer("column_place", torch.argsort(torch.cat(order_columns)),
                             persistent=False)

        # W_η ~ N(0, 1/(P_L ⟨B_η²⟩)), ⟨B_η²⟩ alike for all M.
        all_monomials = list(itertools.chain(*monomials))
        mean_squares = (coupling * (gaussian_moments(all_monomials, dim) @ coupling)).sum(0)
        variances = [1 / (paths * squares.reshape(ir.dim, paths).mean(0))
                     for ir, paths, squares in zip(targets, self.num_paths,
                                                   mean_squares.split(self.basis_sizes))]
        self.weights = nn.Parameter(torch.randn(num_species, num_channels, len(path_order))
                                    * torch.cat(variances).sqrt().to(torch.get_default_dtype()))

        # What the forward pass multiplies with, cut from U once: here, and again whenever a
        # state dict (a model file's U) is loaded.
        for name, value in self.derived_couplings().items():
            self.register_buffer(name, value, persistent=False)
        self.register_load_state_dict_post_hook(lambda module, _: module.derive_couplings())

    def derived_couplings(self) -> dict[str, torch.Tensor]:
        """From U (``coupling``): ``order_coupling_ν`` [columns of order ν, monomials of
        order ν], U's block of the order-ν monomials and paths transposed; with
        ``contract_last``, ``last_coupling_g`` [k of group g × columns of order ν, its prefix],
        the V_k of group g's k side by side, transposed."""
        blocks = [rows.index_select(1, getattr(self, f"order_columns_{order}"))
                  for order, rows in enumerate(self.coupling.split(self.monomial_counts), 1)]
        derived = {f"order_coupling_{order}": block.T.contiguous()
                   for order, block in enumerate(blocks, 1)}
        if self.contract_last:
            padded = torch.cat([blocks[-1], blocks[-1].new_zeros(1, blocks[-1].shape[1])])
            rows = padded.index_select(0, self.last_order_rows).split(
                [prefix * (end - first) for first, end, prefix in self.last_order_groups])
            for group, ((_, _, prefix), block) in enumerate(zip(self.last_order_groups, rows)):
                derived[f"last_coupling_{group}"] = block.view(prefix, -1).T.contiguous()
        return derived

    @torch.no_grad()
    def derive_couplings(self) -> None:
        """Cut the forward pass's matrices from U again (after U was loaded)."""
        for name, value in self.derived_couplings().items():
            getattr(self, name).copy_(value)

    @torch.no_grad()
    def take_species(self, source: SymmetricContraction, rows: torch.Tensor) -> None:
        """``source``'s weights of species s as those of species ``rows[s]`` here
        (``equipot.nn.species_rows``)."""
        self.weights[rows] = source.weights

    def forward(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        # The components of A as rows, [d, N C]: gathering monomials then copies whole rows.
        components = features.flatten(0, 1).T.contiguous()
        monomials = components  # [number of monomials of the order, N C]
        parts = [self.order_coupling_1 @ monomials]  # B of the order-1 paths [columns, N C]
        highest_monomials = self.correlation - 1 if self.contract_last else self.correlation
        for order in range(2, highest_monomials + 1):
            previous, component = getattr(self, f"monomial_steps_{order}")
            monomials = (monomials.index_select(0, previous)
                         * components.index_select(0, component))
            parts.append(getattr(self, f"order_coupling_{order}") @ monomials)
        if self.contract_last:  # Σ_k A_k ⊙ (V_kᵀ m^{(ν−1)}_{prev ≤ k}), k in groups
            previous = monomials.index_select(0, self.last_order_previous)  # colex order
            last = 0.0
            for group, (first, end, prefix) in enumerate(self.last_order_groups):
                partial = (getattr(self, f"last_coupling_{group}") @ previous[:prefix]
                           ).unflatten(0, (end - first, -1))  # [k, columns, N C]
                last = last + (partial * components[first:end].unsqueeze(1)).sum(0)
            parts.append(last)
        basis = torch.cat(parts).index_select(0, self.column_place)  # [Σ_L (2L+1) P_L, N C]
        basis = basis.T.unflatten(0, features.shape[:2])
        weights = self.weights[species]  # [N, C, Σ_L P_L], basis: [N, C, Σ_L (2L+1) P_L]
        outputs = [torch.einsum("ncmp,ncp->ncm", basis_l.unflatten(-1, (ir.dim, paths)), weights_l)
                   for (_, ir), paths, basis_l, weights_l in zip(
                       self.irreps_out, self.num_paths, basis.split(self.basis_sizes, dim=-1),
                       weights.split(self.num_paths, dim=-1))]
        return torch.cat(outputs, dim=-1)  # [N, C, dim(irreps_out)]
