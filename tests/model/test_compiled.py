"""Compiled calls (equipot/model/compiled.py) against eager calls of the same model: every
family traced (graph run without Inductor), SchNet compiled by Inductor in float32 and float64,
shapes the trace does not cover, models that cannot be traced, and the calculator's option."""

import warnings

import numpy as np
import pytest
import torch
from ase.build import molecule
from torch_geometric.data import Batch

from equipot import EquipotCalculator, keys
from equipot.data.graph import atoms_to_graph
from equipot.model.compiled import CompiledPotential

from conftest import MODEL_CONFIG, evaluate, make_cu_cell, make_ethanol, make_model


def copper_cell():
    """Four Cu atoms in a small triclinic cell (two atoms would be traced as the 2 of an edge
    index's first dimension, so they run eager)."""
    return make_cu_cell().repeat((2, 1, 1))


def batch_of(model, *structures):
    return Batch.from_data_list([atoms_to_graph(atoms, model.cutoff) for atoms in structures])


def assert_matches_eager(compiled, batch, stress, rtol):
    """Every output of the compiled call equals eager's to ``rtol`` of its largest value."""
    expected = compiled.model(batch, compute_forces=True, compute_stress=stress)
    actual = compiled(batch, compute_forces=True, compute_stress=stress)
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        scale = float(value.abs().max())
        assert scale > 0, name
        np.testing.assert_allclose(actual[name].detach().numpy(), value.detach().numpy(),
                                   rtol=0, atol=rtol * scale, err_msg=name)


def test_every_family_traces_to_eager_results(model, model_config):
    """The traced graph of each family (run without Inductor) gives eager's energies,
    forces and stress to 1e-10 in float64, and one trace serves molecules of other sizes.
    DimeNet++ builds its triplets in the forward pass, a number of them that depends on the
    data: it cannot be traced, runs eager and says so."""
    compiled = CompiledPotential(model, backend="eager")
    if model_config["block"] == "dimenet":
        with pytest.warns(UserWarning, match="cannot be compiled"):
            assert_matches_eager(compiled, batch_of(model, make_ethanol()), False, 0.0)
        return
    assert_matches_eager(compiled, batch_of(model, make_ethanol()), False, 1e-10)
    assert_matches_eager(compiled, batch_of(model, make_ethanol(seed=5)[:7]), False, 1e-10)
    assert compiled.failure is None and len(compiled.traces) == 1
    assert_matches_eager(compiled, batch_of(model, copper_cell()), True, 1e-10)
    assert len(compiled.traces) == 2


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_inductor_compiled_schnet_matches_eager(dtype, rtol):
    model = make_model(MODEL_CONFIG, dtype=dtype)
    compiled = CompiledPotential(model)
    for atoms in (make_ethanol(), molecule("CH3CH2OH"), molecule("H2O")):
        assert_matches_eager(compiled, batch_of(model, atoms), False, rtol)
    assert compiled.failure is None and len(compiled.traces) == 1


def test_shapes_outside_the_trace_run_eager():
    """A batch of several structures, an isolated atom and a structure without edges are not
    what a one-structure trace covers: they run eager, with eager's results."""
    model = make_model(MODEL_CONFIG)
    compiled = CompiledPotential(model, backend="eager")
    ethanol = make_ethanol()
    assert_matches_eager(compiled, batch_of(model, ethanol), False, 1e-10)
    isolated = molecule("H2O")[:1]
    far_apart = molecule("H2O")
    far_apart.positions *= 10.0
    for batch in (batch_of(model, ethanol, ethanol), batch_of(model, isolated),
                  batch_of(model, far_apart)):
        expected = model(batch, compute_forces=True)
        actual = compiled(batch, compute_forces=True)
        for name, value in expected.items():
            torch.testing.assert_close(actual[name], value, rtol=0, atol=0)
    assert len(compiled.traces) == 1


def test_a_model_that_cannot_be_traced_runs_eager_and_says_why():
    """Ewald's k-vectors are sized on the host: tracing fails, the call runs eager."""
    model = make_model({**MODEL_CONFIG, "energy_terms": [
        {"name": "electrostatics", "accuracy": 1e-6}]})
    compiled = CompiledPotential(model, backend="eager")
    batch = batch_of(model, copper_cell())
    with pytest.warns(UserWarning, match="cannot be compiled"):
        out = compiled(batch, compute_forces=True, compute_stress=True)
    assert compiled.failure is not None
    expected = model(batch, compute_forces=True, compute_stress=True)
    torch.testing.assert_close(out[keys.FORCES], expected[keys.FORCES], rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        compiled(batch, compute_forces=True, compute_stress=True)


def test_calculator_compile_option():
    """``EquipotCalculator(compile=True)`` gives the eager calculator's results (float64)."""
    model = make_model(MODEL_CONFIG)
    cell = copper_cell()
    results = []
    for compile_ in (False, True):
        atoms = cell.copy()
        atoms.calc = EquipotCalculator(model, compile=compile_)
        results.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()))
    for eager, compiled in zip(*results):
        np.testing.assert_allclose(compiled, eager, rtol=1e-10, atol=1e-12)
    assert evaluate(model, cell)[keys.ENERGY][0] == pytest.approx(results[0][0], rel=1e-12)


def test_inductor_compiles_on_two_threads():
    """Inductor's vectorised CPU code fails on the per-structure scatter-add when it runs on
    more than one thread (torch 2.13): on several threads it compiles without."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = make_model(MODEL_CONFIG, dtype=torch.float32)
        compiled = CompiledPotential(model)
        assert_matches_eager(compiled, batch_of(model, make_ethanol()), False, 1e-5)
        assert compiled.failure is None
    finally:
        torch.set_num_threads(threads)
