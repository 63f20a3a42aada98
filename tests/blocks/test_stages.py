"""The Potential's chain of stages: readouts after any stage add up, and misfits fail early."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

from equipot import keys
from equipot.data.graph import atoms_to_graph
from equipot.model.potential import Potential
from equipot.nn.readout import LinearReadout, ScalarReadout

from conftest import MODEL_CONFIG, make_ethanol, make_model


def rebuilt_with_readouts(model: Potential, readouts: dict) -> Potential:
    """``model``'s modules with other readouts (stage → module)."""
    return Potential(config=model.config, species=model.species, cutoff=model.cutoff,
                     embedding=model.embedding,
                     radial_basis=model.radial_basis, envelope=model.envelope,
                     blocks=list(model.blocks), readouts=readouts,
                     reference_energies=[0.0] * 4, shift=0.0, scale=1.0).eval()


def test_readouts_of_several_stages_add_up():
    model = make_model()
    irreps = model.embedding.irreps_out
    readouts = {0: LinearReadout(irreps).double(), 1: LinearReadout(irreps).double(),
                2: model.readouts["2"]}
    batch = Batch.from_data_list([atoms_to_graph(make_ethanol(), model.cutoff)])
    energies = {stage: rebuilt_with_readouts(model, {stage: readout})(
        batch, compute_forces=False)[keys.ENERGY] for stage, readout in readouts.items()}
    combined = rebuilt_with_readouts(model, readouts)(batch, compute_forces=False)[keys.ENERGY]
    assert all(energy.abs() > 1e-3 for energy in energies.values())
    torch.testing.assert_close(combined, sum(energies.values()), rtol=1e-12, atol=1e-12)


def test_readout_of_a_stage_the_model_lacks_is_refused():
    model = make_model()
    with pytest.raises(ValueError, match="stages within 0 … 2, got \\[3\\]"):
        rebuilt_with_readouts(model, {3: ScalarReadout(model.embedding.irreps_out, 8)})


def test_readout_that_does_not_fit_its_stage_is_refused():
    model = make_model({**MODEL_CONFIG, "block": "painn"})
    with pytest.raises(ValueError, match="block 2 \\(PaiNNInteraction\\) gives irreps "
                                         "16x0e\\+16x1o, but readout 2 takes 16x0e"):
        rebuilt_with_readouts(model, {2: ScalarReadout("16x0e", 8)})
