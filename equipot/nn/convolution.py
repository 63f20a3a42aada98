"""The convolution NequIP and MACE share: the channel-wise tensor product of the neighbours'
features with the edges' spherical harmonics, summed over the neighbours of each atom:

    m_i = Σ_j x_j ⊗_w Y(r̂_ij),   one "uvu" path per (l_in, l_Y, l_out) allowed by the selection
                                  rules with l_out among the targets; weights w per edge

Each path keeps the channels of its input irrep (no mixing, "uvu"), so the output holds one
block of C channels per path, sorted by irrep: e3nn's ``o3.TensorProduct`` with these
instructions (``edge_tensor_product``), whose numbers, weight layout and normalisation this
module reproduces. The per-edge weights [E, weight_numel] come from a radial network of the
edge length.

Why not e3nn's own: it computes every path with its own handful of ops on slices of the edge
tensors, and on a CPU at these sizes the number of passes over (and fresh allocations of)
[E, ...] tensors, not the arithmetic, sets the time; slices also cost zero-filled gradient
buffers in the double backward of force training. Here, with channels last ([E, rows, C]) and

    x_j ⊗_w Y = w ⊙ (T(Y) x_j),   T(Y)_{k,a} = Σ_b Y_b · c_p C^{l_in l_Y l_out}_{a b k}

(C: Wigner 3j symbols, c_p: e3nn's path normalisation, k an output component of path p, a an
input component), all paths take one matrix product per edge, with T(Y) [E, K, rows] from one
product of Y with a precomputed coupling matrix, one product with the weights, and one sum into
the atoms; only the atoms' [N, ...] tensors are rearranged to e3nn's layout.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from e3nn import o3
from torch import nn

from equipot.nn.scatter import scatter_sum


def edge_tensor_product(irreps_in: o3.Irreps, irreps_sh: o3.Irreps,
                        targets: Collection[o3.Irrep]) -> o3.TensorProduct:
    """``o3.TensorProduct(irreps_in, irreps_sh → every reachable irrep in targets)``, uvu,
    with external per-edge weights: the definition ``EdgeConvolution`` computes."""
    mid, instructions = [], []
    for i_in, (mul, ir_in) in enumerate(irreps_in):
        for i_sh, (_, ir_sh) in enumerate(irreps_sh):
            for ir_out in ir_in * ir_sh:
                if ir_out in targets:
                    instructions.append((i_in, i_sh, len(mid), "uvu", True))
                    mid.append((mul, ir_out))
    irreps_out, permutation, _ = o3.Irreps(mid).sort()
    instructions = [(i_in, i_sh, permutation[i_out], mode, train)
                    for i_in, i_sh, i_out, mode, train in instructions]
    return o3.TensorProduct(irreps_in, irreps_sh, irreps_out, instructions,
                            shared_weights=False, internal_weights=False)


class EdgeConvolution(nn.Module):
    """Σ_j x_j ⊗_w Y(r̂_ij) into each atom i:

    features [N, dim(irreps_in)], spherical_harmonics [E, dim(irreps_sh)], weights
    [E, weight_numel], centre i and neighbour j [E] → [N, dim(irreps_out)], e3nn layouts;
    equal to ``scatter_sum(edge_tensor_product(...)(features[j], Y, weights), i, N)``.

    Every irrep of ``irreps_in`` must have the same number of channels C (as in NequIP's and
    MACE's features).
    """

    def __init__(self, irreps_in: o3.Irreps | str, irreps_sh: o3.Irreps | str,
                 targets: Collection[o3.Irrep]):
        super().__init__()
        definition = edge_tensor_product(o3.Irreps(irreps_in), o3.Irreps(irreps_sh), targets)
        self.irreps_in, self.irreps_sh = definition.irreps_in1, definition.irreps_in2
        self.irreps_out, self.weight_numel = definition.irreps_out, definition.weight_numel
        channels = {mul for mul, _ in self.irreps_in}
        if len(channels) != 1:
            raise ValueError(f"EdgeConvolution needs the same number of channels in every irrep, "
                             f"got {self.irreps_in}")
        self.num_channels = channels.pop()
        paths = definition.instructions  # weights: C per path, in this order
        self.num_paths = len(paths)

        # Output components k: the paths in output order (each has its own irrep of irreps_out),
        # m = −l…l within each. Rows a of the per-edge product: one per input component, or,
        # where every input is a scalar, one per path, so that the weights multiply the
        # P-row input rather than the K-column output (P < K: fewer passes over [E, ·, C]).
        self.weights_first = all(ir.l == 0 for _, ir in self.irreps_in)
        in_start = [s.start for s in self.irreps_in.slices()]
        sh_start = [s.start for s in self.irreps_sh.slices()]
        out_start = [s.start // self.num_channels for s in self.irreps_out.slices()]
        if self.weights_first:
            row_start = list(range(self.num_paths))
            rows = [(in_start[path.i_in1], 1) for path in paths]
        else:
            row_start = [s.start // self.num_channels for s in self.irreps_in.slices()]
            rows = [(start, ir.dim) for start, (_, ir) in zip(in_start, self.irreps_in)]
        num_rows = sum(dim for _, dim in rows)
        num_columns = self.irreps_out.dim // self.num_channels
        coupling = torch.zeros(self.irreps_sh.dim, num_columns, num_rows, dtype=torch.float64)
        column_path = torch.zeros(num_columns, dtype=torch.long)
        for p, path in enumerate(paths):
            l_in, l_sh, l_out = (self.irreps_in[path.i_in1].ir.l, self.irreps_sh[path.i_in2].ir.l,
                                 self.irreps_out[path.i_out].ir.l)
            a = row_start[p] if self.weights_first else row_start[path.i_in1]
            b, k = sh_start[path.i_in2], out_start[path.i_out]
            coupling[b:b + 2 * l_sh + 1, k:k + 2 * l_out + 1, a:a + 2 * l_in + 1] = (
                path.path_weight * o3.wigner_3j(l_in, l_sh, l_out, dtype=torch.float64)
                .permute(1, 2, 0))
            column_path[k:k + 2 * l_out + 1] = p
        self.num_rows, self.num_columns = num_rows, num_columns
        self.register_buffer("coupling", coupling.flatten(1).to(torch.get_default_dtype()),
                             persistent=False)  # [dim(irreps_sh), K · rows]
        self.register_buffer("column_path", column_path, persistent=False)  # [K]
        # e3nn layout (per irrep: C channels of 2l+1) → rows × C, and [K, C] → e3nn layout.
        self.register_buffer("input_rows", torch.tensor(
            [start + channel * dim + m for start, dim in rows for m in range(dim)
             for channel in range(self.num_channels)]), persistent=False)
        self.register_buffer("output_order", torch.tensor(
            [(start + m) * self.num_channels + channel
             for start, (_, ir) in zip(out_start, self.irreps_out)
             for channel in range(self.num_channels) for m in range(ir.dim)]), persistent=False)

    def forward(self, features: torch.Tensor, spherical_harmonics: torch.Tensor,
                weights: torch.Tensor, centre: torch.Tensor,
                neighbour: torch.Tensor) -> torch.Tensor:
        aggregated = self.channels_last(features, spherical_harmonics, weights, centre, neighbour)
        return aggregated.flatten(1)[:, self.output_order]

    def channels_last(self, features: torch.Tensor, spherical_harmonics: torch.Tensor,
                      weights: torch.Tensor, centre: torch.Tensor,
                      neighbour: torch.Tensor) -> torch.Tensor:
        """The same sums as [N, K, C]: K the components of ``irreps_out`` (its irreps one after
        the other, m = −l…l within each), C the channels."""
        num_edges = spherical_harmonics.shape[0]
        x = features.index_select(1, self.input_rows).index_select(0, neighbour)
        x = x.view(num_edges, self.num_rows, self.num_channels)  # [E, rows, C]
        weights = weights.view(num_edges, self.num_paths, self.num_channels)
        coupled = (spherical_harmonics @ self.coupling).view(num_edges, self.num_columns,
                                                             self.num_rows)
        if self.weights_first:
            messages = torch.bmm(coupled, x * weights)  # [E, K, C]
        else:
            messages = torch.bmm(coupled, x) * weights.index_select(1, self.column_path)
        return scatter_sum(messages, centre, features.shape[0])
