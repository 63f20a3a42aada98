"""The learning-rate schedules of ``scheduler.name``, built here and nowhere else:

- ``plateau``: ReduceLROnPlateau on the validation loss, a Lightning scheduler
  (``plateau_schedule``, for ``configure_optimizers``);
- ``cosine``: cosine decay over the training budget, whether it is epochs or wall clock, a
  callback (``budget_schedule``, for the Trainer's callbacks):

    lr(p) = min_lr + (lr₀ − min_lr) · (1 + cos πp) / 2,
    p = max(steps / (max_epochs · steps per epoch), elapsed training time / max_time)

Under a wall-clock budget (``trainer.max_time``) the number of epochs is not known in advance,
so an epoch-based schedule cannot end where training ends. Progress p is whichever budget
runs out first; the rate reaches min_lr as training stops. Without decay, a short run ends at
its full learning rate, and its last weights carry the optimiser's noise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import timedelta

import pytorch_lightning as pl
import torch

SCHEDULERS = ("plateau", "cosine")


def plateau_schedule(optimizer: torch.optim.Optimizer, scheduler: Mapping) -> dict | None:
    """Lightning's scheduler config of the ``scheduler`` section {name, factor, patience,
    min_lr} (patience in epochs), or None where the schedule is a callback."""
    if scheduler["name"] != "plateau":
        return None
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=scheduler["factor"], patience=scheduler["patience"],
        min_lr=scheduler["min_lr"])
    return {"scheduler": plateau, "monitor": "val/loss"}


def budget_schedule(scheduler: Mapping, max_seconds: float | None
                    ) -> BudgetCosineSchedule | None:
    """The callback of the ``scheduler`` section under a wall-clock budget of ``max_seconds``
    (None: epochs only), or None where the schedule is Lightning's."""
    if scheduler["name"] != "cosine":
        return None
    return BudgetCosineSchedule(max_seconds, scheduler["min_lr"])


def duration_seconds(max_time: str | Mapping | timedelta | None) -> float | None:
    """Seconds in a ``trainer.max_time`` as Lightning takes it: "DD:HH:MM:SS", a dict of
    ``timedelta`` arguments, or a ``timedelta``; None for no time limit."""
    if max_time is None:
        return None
    if isinstance(max_time, str):
        days, hours, minutes, seconds = (int(part) for part in max_time.strip().split(":"))
        max_time = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    elif isinstance(max_time, Mapping):
        max_time = timedelta(**max_time)
    return max_time.total_seconds()


class BudgetCallback(pl.Callback):
    """A callback that knows how much of the training budget is used: ``progress(trainer)``.

    ``max_seconds``: the wall-clock budget (None: epochs only). Elapsed training time is kept
    in Lightning checkpoints, so a resumed run continues where it stopped.
    """

    def __init__(self, max_seconds: float | None):
        self.max_seconds = max_seconds
        self.elapsed_before = 0.0  # seconds trained before this process (resumed runs)
        self.started = None

    def elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self.started if self.started else 0.0)

    def progress(self, trainer: pl.Trainer) -> float:
        """Fraction of the budget used, in [0, 1]."""
        fractions = []
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            fractions.append(trainer.global_step / max(trainer.estimated_stepping_batches, 1))
        if self.max_seconds:
            fractions.append(self.elapsed() / self.max_seconds)
        return min(max(fractions, default=0.0), 1.0)

    def on_train_start(self, trainer, pl_module):
        self.started = time.monotonic()

    def state_dict(self) -> dict:
        return {"elapsed": self.elapsed()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.elapsed_before = float(state_dict["elapsed"])


class BudgetCosineSchedule(BudgetCallback):
    """Sets every parameter group's learning rate before each training step (lr(p) above).

    The rate decays from each group's ``initial_lr`` (its learning rate when training first
    started, kept in the optimiser's state; ``StageTwo`` may change it).
    """

    def __init__(self, max_seconds: float | None, min_lr: float):
        super().__init__(max_seconds)
        self.min_lr = min_lr

    def decay(self, progress: float) -> float:
        """(1 + cos πp) / 2."""
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        for group in trainer.optimizers[0].param_groups:
            group.setdefault("initial_lr", group["lr"])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        decay = self.decay(self.progress(trainer))
        for group in trainer.optimizers[0].param_groups:
            group["lr"] = self.min_lr + (group["initial_lr"] - self.min_lr) * decay
