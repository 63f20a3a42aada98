"""Sums of edge or atom values into atoms or structures (differentiable twice)."""

from __future__ import annotations

import torch


def scatter_sum(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """out[k] = Σ values[m] over m with index[m] = k; values [M, ...] → out [size, ...]."""
    out = values.new_zeros((size, *values.shape[1:]))
    return out.index_add(0, index, values)
