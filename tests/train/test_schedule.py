"""The cosine schedule ends where the budget ends: epochs, wall clock, or a resumed run."""

from __future__ import annotations

import math
from datetime import timedelta
from types import SimpleNamespace

import pytest
import torch

import equipot.train.schedule as schedule
from equipot.train.module import PotentialModule
from equipot.train.schedule import BudgetCosineSchedule, duration_seconds

from conftest import MODEL_CONFIG, run_defaults

LR, MIN_LR = 1e-2, 1e-4


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(schedule.time, "monotonic", clock)
    return clock


def fake_trainer(max_epochs: int, total_steps: int) -> SimpleNamespace:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=LR)
    return SimpleNamespace(max_epochs=max_epochs, estimated_stepping_batches=total_steps,
                           global_step=0, optimizers=[optimizer])


def lr_at(callback, trainer, step: int) -> float:
    trainer.global_step = step
    callback.on_train_batch_start(trainer, None, None, step)
    return trainer.optimizers[0].param_groups[0]["lr"]


def cosine(progress: float) -> float:
    return MIN_LR + (LR - MIN_LR) * 0.5 * (1 + math.cos(math.pi * progress))


def test_duration_formats():
    assert duration_seconds("00:00:05:30") == 330
    assert duration_seconds("01:02:00:00") == 93600
    assert duration_seconds({"minutes": 2, "seconds": 5}) == 125
    assert duration_seconds(timedelta(hours=1)) == 3600
    assert duration_seconds(None) is None


def test_epoch_budget(clock):
    trainer = fake_trainer(max_epochs=10, total_steps=200)
    callback = BudgetCosineSchedule(max_seconds=None, min_lr=MIN_LR)
    callback.on_train_start(trainer, None)
    assert lr_at(callback, trainer, 0) == pytest.approx(LR)
    assert lr_at(callback, trainer, 50) == pytest.approx(cosine(0.25))
    assert lr_at(callback, trainer, 100) == pytest.approx((LR + MIN_LR) / 2)
    assert lr_at(callback, trainer, 200) == pytest.approx(MIN_LR)


def test_time_budget_wins_when_it_runs_out_first(clock):
    trainer = fake_trainer(max_epochs=1000, total_steps=10**6)
    callback = BudgetCosineSchedule(max_seconds=300, min_lr=MIN_LR)
    callback.on_train_start(trainer, None)
    clock.now += 75
    assert lr_at(callback, trainer, 10) == pytest.approx(cosine(0.25), rel=1e-4)
    clock.now += 225
    assert lr_at(callback, trainer, 20) == pytest.approx(MIN_LR)
    clock.now += 100  # past the budget (validation, teardown): stays at min_lr
    assert lr_at(callback, trainer, 30) == pytest.approx(MIN_LR)


def test_resumed_run_continues_the_schedule(clock):
    trainer = fake_trainer(max_epochs=1000, total_steps=10**6)
    first = BudgetCosineSchedule(max_seconds=300, min_lr=MIN_LR)
    first.on_train_start(trainer, None)
    clock.now += 150
    lr_at(first, trainer, 10)
    state = first.state_dict()

    # A new process: the optimiser comes back from the checkpoint with its decayed rate.
    resumed = BudgetCosineSchedule(max_seconds=300, min_lr=MIN_LR)
    resumed.load_state_dict(state)
    resumed.on_train_start(trainer, None)
    assert trainer.optimizers[0].param_groups[0]["initial_lr"] == LR
    clock.now += 75
    assert lr_at(resumed, trainer, 11) == pytest.approx(cosine(0.75), rel=1e-4)


def test_unknown_scheduler_is_refused():
    config = {**MODEL_CONFIG}
    with pytest.raises(ValueError, match="unknown scheduler 'linear'"):
        PotentialModule(config, labels=["energy"], dtype="float32", loss=run_defaults("loss"),
                        optimizer=run_defaults("optimizer"), scheduler={"name": "linear"},
                        ema_decay=None, dimer_repulsion=None)
