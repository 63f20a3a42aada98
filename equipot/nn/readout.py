"""Per-atom energies from the invariant (0e) part of atom features.

Equivariant features are laid out as e3nn does (scalars first), so the invariant channels are
a prefix of the feature vector. Every readout is a ``Readout``: called as
readout(features, geometry) → [N], it reads an invariant vector per atom (``inputs``, [N, X]),
passes it through its hidden layers (``hidden_layers``) to its last-layer features
(``last_layer_features``, [N, H]) and applies a last linear layer (``last_layer``, H → 1). The
uncertainty of ``equipot.model.llpr`` reads the last-layer features, in which the energy is
linear, and the last readout's inputs.
"""

from __future__ import annotations

from itertools import islice

import torch
from e3nn import o3
from torch import nn

from equipot.nn.geometry import Geometry
from equipot.nn.mlp import ShiftedSoftplus, mlp


def leading_scalars(irreps: o3.Irreps | str) -> int:
    """The number of 0e channels that lead ``irreps``; an error if it does not start with 0e."""
    irreps = o3.Irreps(irreps)
    if not irreps or irreps[0].ir != o3.Irrep("0e"):
        raise ValueError(f"an energy readout needs scalar (0e) channels first, got {irreps}")
    return irreps[0].mul


class Readout(nn.Module):
    """e_i = last_layer(φ_i), φ_i = hidden_layers(x_i), x_i = inputs(features, geometry)_i: [N]
    from [N, dim(irreps_in)] (or a block's edge features), dimensionless."""

    has_hidden_layers = True  # False: the inputs are the last-layer features

    @property
    def last_layer(self) -> nn.Linear:
        """The final linear map H → 1 (its bias, if any, is a feature of constant 1)."""
        raise NotImplementedError

    @property
    def num_inputs(self) -> int:
        """X, the width of ``inputs``."""
        raise NotImplementedError

    def inputs(self, features: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        """x [N, X]: the invariant vector of each atom that the readout's layers start from."""
        raise NotImplementedError

    def hidden_layers(self, x: torch.Tensor) -> torch.Tensor:
        """φ [N, H] from x [N, X]: every layer but the last."""
        raise NotImplementedError

    def last_layer_features(self, features: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        """φ [N, H]: what ``last_layer`` reads."""
        return self.hidden_layers(self.inputs(features, geometry))

    def forward(self, features: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        return self.last_layer(self.last_layer_features(features, geometry)).squeeze(-1)


class ScalarsReadout(Readout):
    """A readout whose inputs are the leading scalar (0e) channels of [N, dim(irreps_in)]."""

    def __init__(self, irreps_in: o3.Irreps | str):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.num_scalars = leading_scalars(self.irreps_in)

    @property
    def num_inputs(self) -> int:
        return self.num_scalars

    def inputs(self, features: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        return features[:, : self.num_scalars]


class ScalarReadout(ScalarsReadout):
    """MLP of the leading scalar (0e) channels: [N, dim(irreps_in)] → [N] (dimensionless).
    ``activation`` and ``bias`` as in ``equipot.nn.mlp.mlp``."""

    def __init__(self, irreps_in: o3.Irreps | str, hidden: int,
                 activation: type[nn.Module] = ShiftedSoftplus, bias: bool = True):
        super().__init__(irreps_in)
        self.network = mlp(self.num_scalars, hidden, 1, activation=activation, bias=bias)

    @property
    def last_layer(self) -> nn.Linear:
        return self.network[-1]

    def hidden_layers(self, x: torch.Tensor) -> torch.Tensor:
        for layer in islice(self.network, len(self.network) - 1):  # no sliced copy per call
            x = layer(x)
        return x

    def forward(self, features: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        return self.network(features[:, : self.num_scalars]).squeeze(-1)  # as above, unsliced


class LinearReadout(ScalarsReadout):
    """Linear map of the leading scalar channels: [N, dim(irreps_in)] → [N] (dimensionless).
    The only equivariant linear map to an invariant reads the invariants."""

    has_hidden_layers = False

    def __init__(self, irreps_in: o3.Irreps | str):
        super().__init__(irreps_in)
        self.linear = nn.Linear(self.num_scalars, 1, bias=False)

    @property
    def last_layer(self) -> nn.Linear:
        return self.linear

    def hidden_layers(self, x: torch.Tensor) -> torch.Tensor:
        return x
