"""Radial bases (of edge lengths, and of |k| in reciprocal space) and the smooth envelope that
takes everything to zero at the cutoff."""

from __future__ import annotations

import math

import torch
from torch import nn


class BesselBasis(nn.Module):
    """e_n(r) = sqrt(2/c) sin(nπr/c) / r, n = 1 … num_basis (DimeNet, Gasteiger 2020).

    Input r [E] Å, output [E, num_basis]. Zero at r = c for every n.
    """

    def __init__(self, cutoff: float, num_basis: int = 8):
        super().__init__()
        self.cutoff = cutoff
        self.register_buffer("frequencies", torch.arange(1, num_basis + 1) * math.pi / cutoff)
        self.prefactor = math.sqrt(2.0 / cutoff)

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        lengths = lengths.unsqueeze(-1)
        return self.prefactor * torch.sin(self.frequencies * lengths) / lengths


class PolynomialEnvelope(nn.Module):
    """u(x) = 1 − (p+1)(p+2)/2 xᵖ + p(p+2) xᵖ⁺¹ − p(p+1)/2 xᵖ⁺², x = r/c, 0 beyond the cutoff.

    u and its first two derivatives vanish at the cutoff (Gasteiger 2020), so energies,
    forces and force derivatives are continuous when atoms cross it. Input and output [E].
    """

    def __init__(self, cutoff: float, exponent: int = 6):
        super().__init__()
        self.cutoff = cutoff
        self.p = exponent

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        p, x = self.p, lengths / self.cutoff
        u = (1.0 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1)
             - p * (p + 1) / 2 * x ** (p + 2))
        return torch.where(x < 1.0, u, torch.zeros_like(u))


class GaussianBasis(nn.Module):
    """g_n(x) = exp(−(x − μ_n)² / 2σ²), μ_n evenly spaced from 0 to ``stop``, σ their spacing.

    Input [...] (any length unit, e.g. |k| in Å⁻¹), output [..., num_basis].
    """

    def __init__(self, stop: float, num_basis: int = 16):
        super().__init__()
        self.register_buffer("centres", torch.linspace(0.0, stop, num_basis))
        self.width = stop / (num_basis - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * ((x.unsqueeze(-1) - self.centres) / self.width) ** 2)
