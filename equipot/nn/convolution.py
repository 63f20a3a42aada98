"""The channel-wise tensor product of atom features with the edges' spherical harmonics, the
convolution NequIP and MACE share:

    out_ij = x_j ⊗_w Y(r̂_ij),   one "uvu" path per (l_in, l_Y, l_out) allowed by the selection
                                 rules with l_out among the targets; weights w per edge

Each path keeps the channels of its input irrep (no mixing, "uvu"), so the output holds one
block of mul(l_in) channels per path, sorted by irrep. The per-edge weights [E, weight_numel]
come from a radial network of the edge length.
"""

from __future__ import annotations

from collections.abc import Collection

from e3nn import o3


def edge_tensor_product(irreps_in: o3.Irreps, irreps_sh: o3.Irreps,
                        targets: Collection[o3.Irrep]) -> o3.TensorProduct:
    """``o3.TensorProduct(irreps_in, irreps_sh → every reachable irrep in targets)``, uvu,
    with external per-edge weights."""
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
