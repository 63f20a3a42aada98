"""A second training stage with other loss weights and learning rate (MACE's "stage two").

Forces carry most of the signal early in training; once they are learned, a larger energy
weight and a smaller step can refine the energies without undoing them. When training has
used ``start`` of its budget (epochs or wall clock, whichever runs out first, as the cosine
schedule counts it) the loss weights given here replace the first stage's, and the learning
rate becomes ``lr``: held there by the plateau schedule (which starts afresh), or, under the
cosine schedule, the cosine continues from ``lr`` down to its ``min_lr`` at the end.

The validation loss is then a different sum, not comparable with the first stage's, so the
best checkpoint and early stopping start afresh too: the saved model is the best of stage two.
"""

from __future__ import annotations

import math

import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from torch.optim.lr_scheduler import ReduceLROnPlateau

from equipot.train.loss import label_weights
from equipot.train.schedule import BudgetCallback, BudgetCosineSchedule


class StageTwo(BudgetCallback):
    """``start``: fraction of the budget in (0, 1); ``weights``: the loss weights of stage two,
    ``<label>_weight=w`` as for ``WeightedLoss`` (those not given keep the first stage's);
    ``lr``: its learning rate (None keeps the schedule's); ``schedule``: the run's cosine
    schedule, if it has one."""

    def __init__(self, start: float, lr: float | None = None, max_seconds: float | None = None,
                 schedule: BudgetCosineSchedule | None = None, **weights: float | None):
        super().__init__(max_seconds)
        if not 0.0 < start < 1.0:
            raise ValueError(f"stage_two.start is a fraction of the budget in (0, 1), got {start}")
        self.start, self.lr, self.schedule = start, lr, schedule
        self.weights = label_weights(weights)
        self.active = False

    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        if self.active:  # resumed in stage two: the module was rebuilt with stage one's weights
            pl_module.loss.weights.update(self.weights)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self.active and self.progress(trainer) >= self.start:
            self.begin(trainer, pl_module)

    def begin(self, trainer, pl_module) -> None:
        """Switch loss weights and learning rate; restart model selection."""
        self.active = True
        pl_module.loss.weights.update(self.weights)
        if self.lr is not None:
            self._set_learning_rate(trainer)
        for callback in trainer.callbacks:
            if isinstance(callback, ModelCheckpoint):
                callback.best_model_score = None
                callback.best_k_models = {}
                callback.kth_best_model_path = ""
                callback.kth_value = torch.tensor(math.inf)
            elif isinstance(callback, EarlyStopping):
                callback.wait_count = 0
                callback.best_score = torch.tensor(math.inf)
        if trainer.is_global_zero:
            print(f"stage two from epoch {trainer.current_epoch}, step {trainer.global_step}: "
                  f"loss weights {pl_module.loss.weights}"
                  + (f", learning rate {self.lr:g}" if self.lr is not None else ""), flush=True)

    def _set_learning_rate(self, trainer) -> None:
        groups = trainer.optimizers[0].param_groups
        if self.schedule is not None:  # the cosine from here on starts at lr
            decay = max(self.schedule.decay(self.schedule.progress(trainer)), 1e-12)
            for group in groups:
                group["initial_lr"] = (self.schedule.min_lr
                                       + (self.lr - self.schedule.min_lr) / decay)
        for group in groups:
            group["lr"] = self.lr
        for config in trainer.lr_scheduler_configs:  # the plateau schedule starts afresh
            scheduler = config.scheduler
            if isinstance(scheduler, ReduceLROnPlateau):
                scheduler.best, scheduler.num_bad_epochs = scheduler.mode_worse, 0
                scheduler.cooldown_counter = 0

    def state_dict(self) -> dict:
        return {**super().state_dict(), "active": self.active}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.active = bool(state_dict.get("active", False))
