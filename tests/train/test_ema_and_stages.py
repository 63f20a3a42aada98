"""The EMA's warm-up, the divergence check and the second training stage, unit by unit."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from equipot import keys
from equipot.train.divergence import non_finite
from equipot.train.ema import exponential_moving_average, warmup_decay
from equipot.train.loss import WeightedLoss
from equipot.train.schedule import BudgetCosineSchedule
from equipot.train.stages import StageTwo

from conftest import run_defaults


def test_the_warm_up_leaves_nothing_of_the_first_weights_after_75_steps():
    """Observation 3 of issue 12: a plain EMA (0.99) kept ~47 % of its first weights after 75
    steps. The warm-up's decays (1 + t)/(10 + t) leave 10! 75! / 84!."""
    model = torch.nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = exponential_moving_average(model, decay=0.99)
    ema.update_parameters(model)  # the first update copies
    with torch.no_grad():
        model.weight.fill_(0.0)
    for _ in range(74):
        ema.update_parameters(model)
    left = float(ema.module.weight[0, 0])
    assert left == pytest.approx(math.factorial(10) * math.factorial(75) / math.factorial(84),
                                 rel=1e-6)
    assert left < 1e-10 < 0.99**74
    assert warmup_decay(0.99, 1) == pytest.approx(2 / 11)
    assert warmup_decay(0.99, 10**4) == 0.99
    assert model.weight.requires_grad and not ema.module.weight.requires_grad


def test_non_finite_loss_or_gradients_are_named():
    parameter = torch.nn.Parameter(torch.ones(3))
    parameter.grad = torch.ones(3)
    assert non_finite(torch.tensor(1.0), [parameter]) is None
    assert non_finite(torch.tensor(float("nan")), [parameter]) == "the training loss is nan"
    parameter.grad[1] = float("inf")
    assert non_finite(torch.tensor(1.0), [parameter]) == "the gradients are NaN or infinite"


def fake_trainer(total_steps: int):
    parameter = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([parameter], lr=1e-2)
    checkpoint = ModelCheckpoint(monitor="val/loss")
    checkpoint.best_model_score = torch.tensor(0.5)
    checkpoint.best_k_models = {"best.ckpt": torch.tensor(0.5)}
    stopping = EarlyStopping(monitor="val/loss", patience=3)
    stopping.wait_count, stopping.best_score = 2, torch.tensor(0.5)
    return SimpleNamespace(max_epochs=10, estimated_stepping_batches=total_steps, global_step=0,
                           current_epoch=0, optimizers=[optimizer], is_global_zero=False,
                           lr_scheduler_configs=[], callbacks=[checkpoint, stopping])


@pytest.mark.parametrize("cosine", [False, True])
def test_stage_two_switches_weights_and_rate_at_its_start_and_restarts_selection(cosine):
    trainer = fake_trainer(total_steps=100)
    module = SimpleNamespace(loss=WeightedLoss(**run_defaults("loss", energy_weight=1.0,
                                                              forces_weight=100.0)))
    schedule = BudgetCosineSchedule(None, min_lr=1e-5) if cosine else None
    stage = StageTwo(start=0.75, energy_weight=1000.0, lr=1e-3, schedule=schedule)
    for callback in filter(None, (schedule, stage)):
        callback.on_train_start(trainer, module)
    for step in range(101):
        trainer.global_step = step
        for callback in filter(None, (schedule, stage)):
            callback.on_train_batch_start(trainer, module, None, step)
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        if step == 74:
            assert not stage.active and module.loss.weights[keys.ENERGY] == 1.0
        if step == 75:
            assert stage.active and lr == pytest.approx(1e-3)
            assert module.loss.weights == {keys.ENERGY: 1000.0, keys.FORCES: 100.0,
                                           keys.STRESS: 0.0, keys.DIPOLE: 0.0}
            checkpoint, stopping = trainer.callbacks
            assert checkpoint.best_model_score is None and checkpoint.best_k_models == {}
            assert stopping.wait_count == 0 and math.isinf(stopping.best_score)
    # Under the cosine schedule the rate goes on decaying from 1e-3 to min_lr at the end.
    assert lr == pytest.approx(1e-5 if cosine else 1e-3)


def test_stage_two_resumes_in_stage_two():
    trainer = fake_trainer(total_steps=100)
    stage = StageTwo(start=0.5, forces_weight=10.0)
    stage.load_state_dict({"elapsed": 0.0, "active": True})
    # rebuilt with stage one's weights
    module = SimpleNamespace(loss=WeightedLoss(**run_defaults("loss")))
    stage.on_train_start(trainer, module)
    assert module.loss.weights[keys.FORCES] == 10.0
    with pytest.raises(ValueError, match="fraction of the budget"):
        StageTwo(start=1.5)
