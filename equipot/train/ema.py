"""Exponential moving average (EMA) of the weights, with a warm-up.

    θ̄ ← d_t θ̄ + (1 − d_t) θ,    d_t = min(d, (1 + t) / (10 + t)),

t the number of averages taken so far (the first one copies θ). A plain EMA (d_t = d) still
holds d^(t−1) of the weights of its first step after t steps: 47 % after 75 steps at
d = 0.99, so short runs validated and saved a nearly untrained average. With the warm-up the
average follows the weights closely at first (d_1 = 0.18, d_10 = 0.55) and reaches d after
(10d − 1)/(1 − d) = 890 steps; what is left of the first step's weights after t steps is
Π_{k<t} d_k = 10! t! / (t + 9)!, 3·10⁻¹¹ at t = 75.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def warmup_decay(decay: float, num_averaged: int) -> float:
    """d_t above, for t = ``num_averaged``."""
    return min(decay, (1.0 + num_averaged) / (10.0 + num_averaged))


def warmup_ema_update(decay: float) -> Callable:
    """The ``multi_avg_fn`` of ``torch.optim.swa_utils.AveragedModel`` for the EMA above."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor],
               num_averaged: torch.Tensor) -> None:
        weight = 1.0 - warmup_decay(decay, int(num_averaged))
        torch._foreach_lerp_(averaged, current, weight)

    return update


def exponential_moving_average(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA of ``model``'s parameters (buffers are not averaged), updated by
    ``update_parameters(model)``; ``.module`` holds the averaged weights."""
    return AveragedModel(model, multi_avg_fn=warmup_ema_update(decay),
                         use_buffers=False).requires_grad_(False)
