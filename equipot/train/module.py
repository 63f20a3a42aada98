"""Lightning module: trains a Potential on energies, forces and stress.

Validation and the saved model use an exponential moving average (EMA) of the weights, which
is smoother and more accurate than the last optimiser step. Test metrics come from
``equipot.evaluation``, which scores the saved model exactly as the ASE calculator runs it.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytorch_lightning as pl
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from equipot import keys
from equipot.model.build import DTYPES, build_potential
from equipot.model.potential import Potential
from equipot.train.dimer_repulsion import DimerRepulsion
from equipot.train.loss import WeightedLoss
from equipot.train.metrics import ErrorMetrics

# plateau: ReduceLROnPlateau on the validation loss (configure_optimizers);
# cosine: cosine decay over the epoch or wall-clock budget (equipot.train.schedule, a callback).
SCHEDULERS = ("plateau", "cosine")

class PotentialModule(pl.LightningModule):
    """``model_config`` as for ``build_potential``; ``labels``: fields the training data has."""

    def __init__(self, model_config: Mapping, labels: list[str], dtype: str = "float32",
                 loss: Mapping | None = None, optimizer: Mapping | None = None,
                 scheduler: Mapping | None = None, ema_decay: float | None = 0.99,
                 dimer_repulsion: Mapping | None = None):
        """``dimer_repulsion``: options of ``DimerRepulsion`` (weight, margin,
        samples_per_pair), None for no such penalty."""
        super().__init__()
        self.save_hyperparameters()
        self.model_config = dict(model_config)
        self.model = build_potential(self.model_config, dtype=DTYPES[dtype])
        self.loss = WeightedLoss(**(loss or {}))
        self.labels = set(labels)
        self.dimer_repulsion = (
            DimerRepulsion(self.model.species, self.model_config.get("shortest_distances"),
                           floors=getattr(self.model.distance_floor, "floor", None),
                           **dimer_repulsion) if dimer_repulsion else None)
        self.optimizer_config = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0,
                                 **(optimizer or {})}
        self.scheduler_config = {"name": "plateau", "factor": 0.8, "patience": 10,
                                 "min_lr": 1e-6, **(scheduler or {})}
        if self.scheduler_config["name"] not in SCHEDULERS:
            raise ValueError(f"unknown scheduler '{self.scheduler_config['name']}'; "
                             f"available: {sorted(SCHEDULERS)}")
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay),
                                  use_buffers=False).requires_grad_(False)
                    if ema_decay else None)
        # Keyed "<stage>_errors": a ModuleDict key may not shadow nn.Module.train.
        self.errors = torch.nn.ModuleDict({f"{stage}_errors": ErrorMetrics()
                                           for stage in ("train", "val")})

    @property
    def averaged_model(self) -> Potential:
        """The weights used for validation and the saved model."""
        return self.ema.module if self.ema is not None else self.model

    def _predict(self, model: Potential, batch, for_loss_only: bool,
                 forces: bool = False) -> dict:
        """Training computes what the loss needs; evaluation every labelled quantity."""
        wanted = {field for field in self.labels
                  if not for_loss_only or self.loss.needs(field)}
        return model(batch, compute_forces=forces or keys.FORCES in wanted,
                     compute_stress=keys.STRESS in wanted)

    def training_step(self, batch, batch_idx):
        if self.dimer_repulsion is None:
            predicted = self._predict(self.model, batch, for_loss_only=True)
        else:  # the dimers ride along in the same forward pass
            predicted, repulsion = self.dimer_repulsion(
                self._predict(self.model, self.dimer_repulsion.append_to(batch),
                              for_loss_only=True, forces=True), batch)
        losses = self.loss(predicted, batch)
        if self.dimer_repulsion is not None:
            losses["total"] = losses["total"] + repulsion
            self.log("train/dimer_repulsion", repulsion.detach(), batch_size=batch.num_graphs,
                     on_step=False, on_epoch=True)
        self.errors["train_errors"].update(predicted, batch)
        self.log("train/loss", losses["total"].detach(), batch_size=batch.num_graphs,
                 on_step=False, on_epoch=True, prog_bar=True)
        return losses["total"]

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def _evaluate(self, batch, stage: str) -> None:
        with torch.enable_grad():
            predicted = self._predict(self.averaged_model, batch, for_loss_only=False)
        losses = self.loss(predicted, batch)
        self.errors[f"{stage}_errors"].update(predicted, batch)
        self.log(f"{stage}/loss", losses["total"].detach(), batch_size=batch.num_graphs,
                 on_epoch=True, prog_bar=stage == "val", sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def _log_metrics(self, stage: str) -> None:
        values = self.errors[f"{stage}_errors"].compute()
        for name, value in values.items():
            self.log(f"{stage}/{name}", value, prog_bar=stage == "val" and name == "forces_mae")
        self.errors[f"{stage}_errors"].reset()

    def on_train_epoch_end(self):
        self._log_metrics("train")

    def on_validation_epoch_end(self):
        self._log_metrics("val")

    def configure_optimizers(self):
        name = self.optimizer_config["name"].lower()
        optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
        if name not in optimizers:
            raise ValueError(f"unknown optimizer '{name}'; available: {sorted(optimizers)}")
        optimizer = optimizers[name](self.model.parameters(), lr=self.optimizer_config["lr"],
                                     weight_decay=self.optimizer_config["weight_decay"])
        if self.scheduler_config["name"] == "cosine":  # driven by BudgetCosineSchedule
            return optimizer
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=self.scheduler_config["factor"],
            patience=self.scheduler_config["patience"], min_lr=self.scheduler_config["min_lr"])
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}
