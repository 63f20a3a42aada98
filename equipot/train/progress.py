"""One line per epoch on stdout, for runs without a progress bar (``make demo``, batch jobs).

An epoch's line is printed when the next one starts (or training ends), so that it holds
everything the epoch logged: its training loss, the validation loss (and which weights gave
it), the validation energy and force MAE (and a fine-tuning run's on its source's data) and the
learning rate.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import pytorch_lightning as pl

# Validation metrics shown, in meV units: metric name, label, unit.
SHOWN = (("energy_mae", "E MAE", "meV"), ("forces_mae", "F MAE", "meV/Å"),
         ("stress_mae", "σ MAE", "meV/Å³"))


def format_errors(metrics: Mapping[str, float]) -> list[str]:
    """The MAEs of ``metrics`` (eV, eV/Å, eV/Å³) that are there, as "F MAE 21.3 meV/Å"."""
    return [f"{label} {1000 * metrics[name]:.1f} {unit}" for name, label, unit in SHOWN
            if name in metrics]


class EpochPrinter(pl.Callback):
    def __init__(self):
        self.epoch: int | None = None  # the epoch running, not printed yet
        self.started = time.monotonic()

    def on_train_epoch_start(self, trainer, pl_module):
        self._print(trainer)
        self.epoch = trainer.current_epoch

    def on_train_end(self, trainer, pl_module):
        self._print(trainer)

    def _print(self, trainer) -> None:
        if self.epoch is None or not trainer.is_global_zero:
            return
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
        parts = [f"epoch {self.epoch + 1}/{trainer.max_epochs}",
                 f"{time.monotonic() - self.started:.0f} s"]
        if "train/loss" in metrics:
            parts.append(f"train loss {metrics['train/loss']:.4g}")
        if "val/loss" in metrics:
            weights = ("EMA" if metrics.get("val/ema_loss") == metrics["val/loss"] else "raw")
            parts.append(f"val loss {metrics['val/loss']:.4g} ({weights})")
        parts += format_errors({name.removeprefix("val/"): value
                                for name, value in metrics.items() if name.startswith("val/")})
        source = format_errors({name.removeprefix("source/"): value
                                for name, value in metrics.items() if name.startswith("source/")})
        if source:  # a fine-tuning run's source data (equipot.finetune.replay)
            parts.append("source data: " + ", ".join(source))
        parts.append(f"lr {trainer.optimizers[0].param_groups[0]['lr']:.3g}")
        print(" · ".join(parts), flush=True)
        self.epoch = None
