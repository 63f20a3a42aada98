"""One line per epoch on stdout, for runs without a progress bar (``make demo``, batch jobs).

An epoch's line is printed when the next one starts (or training ends), so that it holds
everything the epoch logged: its training loss, the validation loss (and which weights gave
it), the validation energy and force MAE and the learning rate.
"""

from __future__ import annotations

import time

import pytorch_lightning as pl


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
        for name, label, unit in (("energy_mae", "E MAE", "meV"),
                                  ("forces_mae", "F MAE", "meV/Å")):
            if f"val/{name}" in metrics:
                parts.append(f"{label} {1000 * metrics[f'val/{name}']:.1f} {unit}")
        parts.append(f"lr {trainer.optimizers[0].param_groups[0]['lr']:.3g}")
        print(" · ".join(parts), flush=True)
        self.epoch = None
