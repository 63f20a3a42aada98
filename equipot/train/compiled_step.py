"""Compiled training steps: the loss and its gradient with respect to every parameter as one
traced, compiled graph.

A loss on forces differentiates a derivative, which ``torch.compile`` cannot take as it is.
So the step's forward pass, its forces (with their graph), the loss and the backward pass to
the parameters are traced together into one graph of aten operators over symbolic batch sizes
(``equipot.model.compiled.Trace``, the parameters as inputs), and compiled. The gradients reach
the parameters through ``PrecomputedGradients`` when Lightning calls ``backward`` on the loss,
so gradient clipping, the optimiser and the EMA run as they do without it. A batch outside the
trace's sizes (say, an epoch's last and smaller one with a size equal to another count) runs
eager; a model that cannot be traced (DimeNet++, Ewald terms) trains eager, with a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from equipot import keys
from equipot.model.compiled import Trace, trace_or_warn, traceable

DIMERS = "dimers/"  # the prefix of the appended dimers' batch fields


class PrecomputedGradients(torch.autograd.Function):
    """``loss`` whose backward hands ``gradients`` (×grad_output) to ``parameters``."""

    @staticmethod
    def forward(ctx, loss, gradients, *parameters):
        ctx.gradients = gradients
        return loss.detach().clone()

    @staticmethod
    def backward(ctx, grad_output):
        return None, None, *(grad_output * gradient for gradient in ctx.gradients)


class CompiledStep:
    """``step(model, fields)`` → (losses: dict of scalars, predicted: dict), a training step's
    computation written as a function of a model and a batch's fields (``keys``; the
    dimer-repulsion's batch under ``DIMERS``), called through a compiled trace: the losses are
    detached but for ``"total"``, whose backward fills the model's parameter gradients."""

    def __init__(self, model: torch.nn.Module, step: Callable, backend: str = "inductor"):
        self.model, self.step, self.backend = model, step, backend
        self.trace: Trace | None = None
        self.failure: str | None = None
        self.compiled_calls = 0  # steps that ran compiled

    def __call__(self, fields: Mapping[str, torch.Tensor]
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        detached = [p.detach() for p in parameters]
        if self.trace is None and self.failure is None and traceable(fields):
            self.trace, self.failure = trace_or_warn(
                self._traceable_step, detached, fields, self.backend,
                "this model's training step")
        if self.trace is None or not self.trace.admits(detached, fields):
            return self.step(self.model, fields)
        values = self.trace(detached, fields)
        self.compiled_calls += 1
        losses, predicted, gradients = ({key[1]: value for key, value in values.items()
                                         if key[0] == part}
                                        for part in ("loss", "predicted", "gradient"))
        losses["total"] = PrecomputedGradients.apply(
            losses["total"], [gradients[k] for k in range(len(parameters))], *parameters)
        return losses, predicted

    def _traceable_step(self, parameters: list[torch.Tensor], fields: dict) -> dict:
        """The step with the parameters as inputs: its losses, predictions and gradients,
        keyed ("loss", name), ("predicted", name) and ("gradient", k)."""
        trainable = [name for name, p in self.model.named_parameters() if p.requires_grad]
        losses, predicted = torch.func.functional_call(
            StepModule(self.model, self.step), {f"model.{name}": parameter for name, parameter
                                               in zip(trainable, parameters)}, (fields,),
            strict=False)
        gradients = torch.autograd.grad(losses["total"], parameters, allow_unused=True,
                                        materialize_grads=True)
        return {**{("loss", name): value.detach() for name, value in losses.items()},
                ("loss", "total"): losses["total"],
                **{("predicted", name): value.detach() for name, value in predicted.items()},
                **{("gradient", k): gradient for k, gradient in enumerate(gradients)}}


class StepModule(torch.nn.Module):
    """``step(model, fields)`` as a module whose parameters are the model's (for
    ``torch.func.functional_call``)."""

    def __init__(self, model: torch.nn.Module, step: Callable):
        super().__init__()
        self.model, self.step = model, step

    def forward(self, fields):
        return self.step(self.model, fields)


def batch_fields(batch, prefix: str = "") -> dict[str, torch.Tensor]:
    """The registered fields of a batch (``keys.FIELDS``), by name with ``prefix``."""
    return {prefix + name: batch[name] for name in batch.keys()
            if name in keys.FIELDS and isinstance(batch[name], torch.Tensor)}
