"""Small multilayer perceptrons and the smooth activation they use."""

from __future__ import annotations

import math

import torch
from torch import nn


class ShiftedSoftplus(nn.Module):
    """ssp(x) = ln(1 + eˣ) − ln 2: smooth (forces and their derivatives stay continuous),
    ssp(0) = 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(x) - math.log(2.0)


def mlp(*sizes: int, activation: type[nn.Module] = ShiftedSoftplus, bias: bool = True
        ) -> nn.Sequential:
    """Linear layers of the given widths with ``activation`` between them (none at the end)."""
    layers = []
    for index, (width_in, width_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if index:
            layers.append(activation())
        layers.append(nn.Linear(width_in, width_out, bias=bias))
    return nn.Sequential(*layers)
