"""Sums of edge or atom values into atoms or structures (differentiable twice)."""

from __future__ import annotations

import torch


def scatter_sum(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """out[k] = Σ values[m] over m with index[m] = k; values [M, ...] → out [size, ...]."""
    out = values.new_zeros((size, *values.shape[1:]))
    return out.index_add(0, index, values)


def scatter_mean(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """out[k] = the mean of values[m] over m with index[m] = k (0 where there is none)."""
    counts = torch.bincount(index, minlength=size).clamp_min(1).to(values.dtype)
    return scatter_sum(values, index, size) / counts.view(-1, *(1,) * (values.dim() - 1))


def scatter_max(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """out[k] = the largest values[m] over m with index[m] = k; values [M] → out [size]
    (−inf where there is none)."""
    out = values.new_full((size,), -torch.inf)
    return out.scatter_reduce(0, index, values, reduce="amax")
