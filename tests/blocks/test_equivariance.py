"""Every block's output features transform by their Wigner D-matrices under O(3).

For a rotation (and a rotation times inversion) Q, the features of the rotated structure must
equal D(Q) applied to the features of the original: f(Q x) = f(x) D(Q)ᵀ, where D is the
block's declared ``irreps_out``. Scalars (0e) must not change at all, vectors (1o) rotate and
flip sign under inversion, l = 2 features rotate by their 5×5 D-matrix.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from e3nn import o3
from torch_geometric.data import Batch

from equipot import keys
from equipot.blocks.registry import FAMILIES
from equipot.data.graph import atoms_to_graph

from conftest import MODEL_CONFIG, make_cu_cell, make_ethanol, make_model

# Wigner D-matrices and couplings in float64 for every test of this file.
pytestmark = pytest.mark.usefixtures("float64_default_dtype")


def block_outputs(model, atoms) -> tuple[list[torch.Tensor], dict]:
    """Output features of every block, and the model's energy and forces."""
    features = []
    handles = [block.register_forward_hook(lambda _, __, out: features.append(out.detach()))
               for block in model.blocks]
    try:
        out = model(Batch.from_data_list([atoms_to_graph(atoms, MODEL_CONFIG["cutoff"])]))
    finally:
        for handle in handles:
            handle.remove()
    return features, out


def transformed(atoms, matrix: np.ndarray):
    copy = atoms.copy()
    copy.positions = atoms.positions @ matrix.T
    copy.set_cell(atoms.cell.array @ matrix.T, scale_atoms=False)
    return copy


def assert_equivariant(model, atoms, rotation: torch.Tensor) -> None:
    """Block features follow their D-matrices, energy is invariant, forces rotate."""
    features, out = block_outputs(model, atoms)
    rotated_features, rotated_out = block_outputs(model, transformed(atoms, rotation.numpy()))
    for layer, (original, rotated) in enumerate(zip(features, rotated_features)):
        wigner = model.blocks[layer].irreps_out.D_from_matrix(rotation)
        expected = original @ wigner.T
        assert torch.abs(rotated - expected).max() < 1e-9, f"block {layer}"
        assert original.abs().max() > 1e-3  # features are not trivially zero
    assert abs(rotated_out[keys.ENERGY] - out[keys.ENERGY]).max() < 1e-10
    forces = out[keys.FORCES] @ rotation.T  # forces are polar vectors: sign flips with inversion
    assert torch.abs(rotated_out[keys.FORCES] - forces).max() < 1e-9


def random_rotation(inversion: bool, seed: int = 3) -> torch.Tensor:
    torch.manual_seed(seed)
    return o3.rand_matrix(dtype=torch.float64) * (-1.0 if inversion else 1.0)


@pytest.mark.parametrize("block", sorted(FAMILIES))
@pytest.mark.parametrize("inversion", [False, True], ids=["rotation", "rotoinversion"])
@pytest.mark.parametrize("make_structure", [make_ethanol, make_cu_cell], ids=["ethanol", "Cu"])
def test_features_transform_by_wigner_d(block, inversion, make_structure):
    model = make_model({**MODEL_CONFIG, "block": block})
    assert_equivariant(model, make_structure(), random_rotation(inversion))


@pytest.mark.parametrize("l_max", [0, 1, 2, 3])
@pytest.mark.parametrize("parity", [False, True])
def test_nequip_is_equivariant_for_every_l_max(l_max, parity):
    config = {**MODEL_CONFIG, "block": "nequip", "num_features": 4, "num_blocks": 3,
              "block_options": {"l_max": l_max, "parity": parity}}
    model = make_model(config)
    assert max(ir.l for _, ir in model.blocks[-2].irreps_out) == l_max
    assert_equivariant(model, make_ethanol(), random_rotation(inversion=True))


@pytest.mark.parametrize("block", sorted(FAMILIES))
def test_declared_irreps_are_what_the_block_gives(block):
    model = make_model({**MODEL_CONFIG, "block": block})
    features, _ = block_outputs(model, make_ethanol())
    for layer, output in enumerate(features):
        assert output.shape[1] == model.blocks[layer].irreps_out.dim


@pytest.mark.parametrize("block, orders", [("painn", {0, 1}), ("nequip", {0, 1, 2})])
def test_equivariant_blocks_carry_higher_order_features(block, orders):
    """The Wigner-D test is not vacuous: PaiNN carries l = 1 vectors, NequIP up to l = 2 of
    both parities (so the rotoinversion test checks pseudo-vectors and pseudo-scalars too)."""
    model = make_model({**MODEL_CONFIG, "block": block, "num_blocks": 3})
    irreps = model.blocks[1].irreps_out
    assert {ir.l for _, ir in irreps} == orders
    if block == "nequip":
        assert {ir.p for _, ir in irreps if ir.l == 1} == {1, -1}


def test_last_nequip_block_computes_only_the_invariants_the_readout_reads():
    model = make_model({**MODEL_CONFIG, "block": "nequip", "num_blocks": 3})
    assert [str(block.irreps_out) for block in model.blocks] == [
        "16x0e+16x1o+16x2e", "16x0e+16x1e+16x1o+16x2e+16x2o", "16x0e"]
    assert [block.residual for block in model.blocks] == [False, False, False]
    with_resnet = make_model({**MODEL_CONFIG, "block": "nequip", "num_blocks": 3,
                              "block_options": {"resnet": True}})
    assert [block.residual for block in with_resnet.blocks] == [False, False, True]


def test_a_stack_whose_irreps_do_not_fit_fails_at_build_time():
    from equipot.blocks.schnet import SchNetInteraction

    with pytest.raises(ValueError, match="SchNetInteraction takes features 16x0e, but the "
                                         "module before it gives 16x0e\\+16x1o"):
        SchNetInteraction(o3.Irreps("16x0e+16x1o"), num_features=16, num_radial=8,
                          avg_num_neighbors=10.0)
