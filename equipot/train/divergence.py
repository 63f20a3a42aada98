"""A run whose loss, gradients or validation go non-finite stops at once, saying where.

Without the check, a diverged run (a learning rate far too high, a label that makes the loss
NaN) trained on NaN weights to the end, saved them as ``model.pt`` and exited 0. The check
runs before every optimiser step, after DDP has averaged the gradients, and all ranks take
the same decision; the weights at that moment are still those of the last finite step.
"""

from __future__ import annotations

import torch


class TrainingDiverged(RuntimeError):
    """Raised on every rank when training goes non-finite; ``what`` says which quantity."""

    def __init__(self, what: str, epoch: int, step: int):
        super().__init__(f"training diverged at epoch {epoch}, step {step}: {what}")
        self.what, self.epoch, self.step = what, epoch, step


def non_finite(loss: torch.Tensor, parameters) -> str | None:
    """What is NaN or infinite, the loss or the gradients of ``parameters``; None if neither.
    One host synchronisation."""
    gradients = [p.grad for p in parameters if p.grad is not None]
    loss_finite = torch.isfinite(loss.detach())
    gradients_finite = (torch.isfinite(torch.stack(torch._foreach_norm(gradients))).all()
                        if gradients else torch.ones((), dtype=torch.bool, device=loss.device))
    loss_ok, gradients_ok = torch.stack([loss_finite, gradients_finite]).tolist()
    if not loss_ok:
        return f"the training loss is {loss.item()}"
    if not gradients_ok:
        return "the gradients are NaN or infinite"
    return None
