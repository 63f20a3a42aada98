"""Lightning module: trains a Potential on energies, forces and stress.

An exponential moving average (EMA) of the weights (``equipot.train.ema``) is smoother and
usually more accurate than the last optimiser step, but not always: early in a run it lags.
So validation scores both weight sets every epoch. ``val/loss``, which picks the best
checkpoint, drives early stopping and the plateau schedule, is the better of the two
(``val/ema_loss``, ``val/raw_loss``), and the module records which one it was in
``validation``, which travels with every checkpoint, so that the model saved from the best
checkpoint is the one validated. Test
metrics come from ``equipot.analysis.evaluation``, which scores the saved model exactly as the ASE
calculator runs it. Non-finite losses or gradients stop training (``TrainingDiverged``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial

import pytorch_lightning as pl
import torch
from torchmetrics import MeanMetric

from equipot import keys
from equipot.model.build import DTYPES, build_potential
from equipot.model.potential import Potential
from equipot.train.compiled_step import DIMERS, CompiledStep, batch_fields
from equipot.train.dimer_repulsion import DimerRepulsion
from equipot.train.divergence import TrainingDiverged, non_finite
from equipot.train.ema import exponential_moving_average
from equipot.train.freezing import freeze as freeze_parameters
from equipot.train.loss import WeightedLoss
from equipot.train.metrics import ErrorMetrics
from equipot.train.schedule import SCHEDULERS, plateau_schedule

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
WEIGHT_SETS = ("ema", "raw")


class PotentialModule(pl.LightningModule):
    """``model_config`` as for ``build_potential``; ``labels``: fields the training data has."""

    def __init__(self, model_config: Mapping, labels: list[str], *, dtype: str,
                 loss: Mapping, optimizer: Mapping, scheduler: Mapping,
                 ema_decay: float | None, dimer_repulsion: Mapping | None,
                 compile: bool = False, initial_weights: Mapping | None = None,
                 freeze: Sequence[str] = ()):
        """The root config's sections (``configs/recipe``): ``loss``, options of
        ``WeightedLoss``; ``optimizer`` {name, lr, weight_decay}; ``scheduler`` {name, factor,
        patience, min_lr}; ``ema_decay``, None for no EMA; ``dimer_repulsion``, options of
        ``DimerRepulsion`` (weight, margin, samples_per_pair), None for no such penalty;
        ``compile``: training steps as compiled graphs (``equipot.train.compiled_step``);
        ``initial_weights``: a state dict to start from instead of a fresh initialisation
        (fine-tuning); ``freeze``: parameters that do not train (``equipot.train.freezing``).

        A second validation loader, where the data module has one (the fine-tuning source's
        data), is scored with the selected weights and logged as ``source/<metric>``."""
        super().__init__()
        self.save_hyperparameters(ignore=["initial_weights"])
        self.model = build_potential(model_config, dtype=DTYPES[dtype])
        if initial_weights is not None:
            self.model.load_state_dict(initial_weights)
        self.frozen = freeze_parameters(self.model, freeze)
        self.loss = WeightedLoss(**loss)
        self.labels = set(labels)
        self.dimer_repulsion = (
            DimerRepulsion(self.model.species, self.model.config.get("shortest_distances"),
                           floors=getattr(self.model.distance_floor, "floor", None),
                           **dimer_repulsion) if dimer_repulsion else None)
        self.compiled_step = CompiledStep(self.model, self._step) if compile else None
        self.optimizer_config, self.scheduler_config = dict(optimizer), dict(scheduler)
        if self.scheduler_config["name"] not in SCHEDULERS:
            raise ValueError(f"unknown scheduler '{self.scheduler_config['name']}'; "
                             f"available: {sorted(SCHEDULERS)}")
        if self.optimizer_config["name"].lower() not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer '{self.optimizer_config['name']}'; "
                             f"available: {sorted(OPTIMIZERS)}")
        self.ema = exponential_moving_average(self.model, ema_decay) if ema_decay else None
        self.weight_sets = WEIGHT_SETS if self.ema is not None else ("raw",)
        # Keyed "<stage>_errors": a ModuleDict key may not shadow nn.Module.train.
        self.errors = torch.nn.ModuleDict(
            {"train_errors": ErrorMetrics(),
             **{f"val_{name}_errors": ErrorMetrics() for name in self.weight_sets},
             "source_errors": ErrorMetrics()})
        self.validation_losses = torch.nn.ModuleDict(
            {name: MeanMetric(nan_strategy="disable") for name in self.weight_sets})
        # The latest validation: epoch, which weights won, their losses and metrics.
        self.validation: dict = {}
        self._last_loss: torch.Tensor | None = None

    def weights(self, name: str) -> Potential:
        """The model with the ``"ema"`` or the ``"raw"`` weights."""
        return self.ema.module if name == "ema" else self.model

    @property
    def selected_weights(self) -> str:
        """The weights that scored better at the latest validation (the EMA before any)."""
        return self.validation.get("weights", self.weight_sets[0])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["validation"] = self.validation

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.validation = checkpoint.get("validation", {})

    def _predict(self, model: Potential, batch, for_loss_only: bool,
                 forces: bool = False) -> dict:
        """Training computes what the loss needs; evaluation every labelled quantity."""
        wanted = {field for field in self.labels
                  if not for_loss_only or self.loss.needs(field)}
        return model(batch, compute_forces=forces or keys.FORCES in wanted,
                     compute_stress=keys.STRESS in wanted)

    def _step(self, model: Potential, fields: Mapping[str, torch.Tensor]
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(losses with ``"total"``, predictions) of a training batch's ``fields``
        (``batch_fields``; the dimers appended under ``DIMERS``): the step compiled or not."""
        own = keys.GraphFields({name: value for name, value in fields.items()
                                if not name.startswith(DIMERS)})
        if self.dimer_repulsion is None:
            predicted = self._predict(model, own, for_loss_only=True)
        else:  # the dimers ride along in the same forward pass
            with_dimers = keys.GraphFields({name.removeprefix(DIMERS): value
                                            for name, value in fields.items()
                                            if name.startswith(DIMERS)})
            predicted, repulsion = self.dimer_repulsion(
                self._predict(model, with_dimers, for_loss_only=True, forces=True), own)
        losses = self.loss(predicted, own)
        if self.dimer_repulsion is not None:
            losses["dimer_repulsion"] = repulsion
            losses["total"] = losses["total"] + repulsion
        return losses, predicted

    def training_step(self, batch, batch_idx):
        fields = batch_fields(batch)
        if self.dimer_repulsion is not None:
            fields.update(batch_fields(self.dimer_repulsion.append_to(batch), DIMERS))
        losses, predicted = (self.compiled_step or partial(self._step, self.model))(fields)
        if self.dimer_repulsion is not None:
            self.log("train/dimer_repulsion", losses["dimer_repulsion"].detach(),
                     batch_size=batch.num_graphs, on_step=False, on_epoch=True, sync_dist=True)
        self.errors["train_errors"].update(predicted, batch)
        self.log("train/loss", losses["total"].detach(), batch_size=batch.num_graphs,
                 on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self._last_loss = losses["total"]
        return losses["total"]

    def on_before_optimizer_step(self, optimizer):
        """Stop, on every rank alike, before a step that would make the weights non-finite."""
        problem = non_finite(self._last_loss, self.model.parameters())
        if not self.trainer.strategy.reduce_boolean_decision(problem is None, all=True):
            raise TrainingDiverged(problem or "the loss or gradients on another rank are NaN "
                                   "or infinite", self.current_epoch, self.global_step)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        if dataloader_idx == 1:  # the fine-tuning source's data: how much is forgotten
            with torch.enable_grad():
                predicted = self._predict(self.weights(self.selected_weights), batch,
                                          for_loss_only=False)
            self.errors["source_errors"].update(predicted, batch)
            return
        for name in self.weight_sets:
            with torch.enable_grad():
                predicted = self._predict(self.weights(name), batch, for_loss_only=False)
            self.validation_losses[name].update(self.loss(predicted, batch)["total"].detach(),
                                                weight=batch.num_graphs)
            self.errors[f"val_{name}_errors"].update(predicted, batch)

    def on_validation_epoch_end(self):
        losses = {name: float(self.validation_losses[name].compute())
                  for name in self.weight_sets}
        errors = {name: self.errors[f"val_{name}_errors"].compute()
                  for name in self.weight_sets}
        for name in self.weight_sets:
            self.validation_losses[name].reset()
            self.errors[f"val_{name}_errors"].reset()
        finite = [name for name in self.weight_sets if math.isfinite(losses[name])]
        if not finite:
            raise TrainingDiverged(
                f"the validation loss is {losses}" + (" before training started" if
                                                      self.trainer.sanity_checking else ""),
                self.current_epoch, self.global_step)
        best = min(finite, key=losses.get)
        self.validation = {"epoch": self.current_epoch, "weights": best, "losses": losses,
                           "metrics": {name: float(value) for name, value in errors[best].items()}}
        self.log("val/loss", losses[best], prog_bar=True, sync_dist=True)
        for name in self.weight_sets:
            self.log(f"val/{name}_loss", losses[name], sync_dist=True)
        for name, value in errors[best].items():
            self.log(f"val/{name}", value, prog_bar=name == "forces_mae", sync_dist=True)
        if self.errors["source_errors"].update_called:
            for name, value in self.errors["source_errors"].compute().items():
                self.log(f"source/{name}", value, sync_dist=True)
            self.errors["source_errors"].reset()

    def on_train_epoch_end(self):
        for name, value in self.errors["train_errors"].compute().items():
            self.log(f"train/{name}", value, sync_dist=True)
        self.errors["train_errors"].reset()

    def configure_optimizers(self):
        optimizer = OPTIMIZERS[self.optimizer_config["name"].lower()](
            [p for p in self.model.parameters() if p.requires_grad],
            lr=self.optimizer_config["lr"],
            weight_decay=self.optimizer_config["weight_decay"])
        schedule = plateau_schedule(optimizer, self.scheduler_config)
        return optimizer if schedule is None else {"optimizer": optimizer,
                                                   "lr_scheduler": schedule}
