"""Compiled training steps (equipot/train/compiled_step.py): the traced step's losses,
predictions and parameter gradients equal the eager step's, with and without the dimers of
the dimer-repulsion penalty, and a model that cannot be traced trains eager."""

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from equipot import keys
from equipot.data.graph import atoms_to_graph
from equipot.train.compiled_step import DIMERS, CompiledStep, batch_fields
from equipot.train.module import PotentialModule

from conftest import MODEL_CONFIG, make_ethanol, run_defaults


def module(dimers: bool, dtype: str = "float64", config=MODEL_CONFIG) -> PotentialModule:
    torch.manual_seed(0)
    return PotentialModule(config, labels=[keys.ENERGY, keys.FORCES], dtype=dtype,
                           loss=run_defaults("loss"), optimizer=run_defaults("optimizer"),
                           scheduler=run_defaults("scheduler"), ema_decay=None,
                           dimer_repulsion=run_defaults("dimer_repulsion") if dimers else None)


def training_fields(lightning: PotentialModule, count: int = 4) -> dict[str, torch.Tensor]:
    """A batch of ``count`` rattled ethanols with made-up labels, and the dimers appended."""
    graphs = []
    for seed in range(count):
        atoms = make_ethanol(seed=seed)
        rng = np.random.default_rng(seed)
        graphs.append(atoms_to_graph(atoms, lightning.model.cutoff, {
            keys.ENERGY: np.array(rng.normal()), keys.FORCES: rng.normal(size=(9, 3))}))
    batch = Batch.from_data_list(graphs)
    fields = batch_fields(batch)
    if lightning.dimer_repulsion is not None:
        fields.update(batch_fields(lightning.dimer_repulsion.append_to(batch), DIMERS))
    return fields


def step_and_gradients(lightning, step, fields):
    lightning.model.zero_grad()
    losses, predicted = step(fields)
    losses["total"].backward()
    return losses, predicted, [p.grad.clone() for p in lightning.model.parameters()]


def assert_steps_agree(lightning, compiled, fields, rtol):
    eager = step_and_gradients(lightning, lambda f: lightning._step(lightning.model, f), fields)
    traced = step_and_gradients(lightning, compiled, fields)
    for expected, actual in zip(eager[:2], traced[:2]):
        assert sorted(actual) == sorted(expected)
        for name in expected:
            torch.testing.assert_close(actual[name].detach(), expected[name].detach(),
                                       rtol=rtol, atol=rtol * float(expected[name].abs().max()))
    for expected, actual in zip(eager[2], traced[2]):
        assert float(expected.abs().max()) > 0
        torch.testing.assert_close(actual, expected, rtol=0,
                                   atol=rtol * float(expected.abs().max()))


@pytest.mark.parametrize("dimers", [False, True], ids=["plain", "with-dimers"])
def test_traced_step_equals_eager(dimers):
    lightning = module(dimers).train()
    compiled = CompiledStep(lightning.model, lightning._step, backend="eager")
    assert_steps_agree(lightning, compiled, training_fields(lightning), 1e-10)
    assert compiled.trace is not None
    # Another batch size (and fresh dimer distances) reuses the trace.
    assert_steps_agree(lightning, compiled, training_fields(lightning, count=6), 1e-10)
    assert compiled.compiled_calls == 2


def test_inductor_compiled_step_equals_eager_in_float32():
    lightning = module(True, dtype="float32").train()
    compiled = CompiledStep(lightning.model, lightning._step)
    assert_steps_agree(lightning, compiled, training_fields(lightning), 1e-5)
    assert compiled.failure is None


def test_a_step_that_cannot_be_traced_runs_eager():
    lightning = module(False, config={**MODEL_CONFIG, "block": "dimenet"}).train()
    compiled = CompiledStep(lightning.model, lightning._step, backend="eager")
    with pytest.warns(UserWarning, match="training step cannot be compiled"):
        assert_steps_agree(lightning, compiled, training_fields(lightning), 0.0)
    assert compiled.trace is None and compiled.failure is not None
