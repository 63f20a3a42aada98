"""Every registered interaction-block family keeps the block contract
(``equipot.testing.block_contract``): no table per family, a new family is checked as soon as
it is registered."""

import pytest

from equipot.blocks.registry import FAMILIES
from equipot.testing.block_contract import CHECKS, contract_model

_models = {}


def model_of(block):
    if block not in _models:
        _models[block] = contract_model(block)
    return _models[block]


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("block", sorted(FAMILIES))
def test_every_family_keeps_the_block_contract(block, check):
    CHECKS[check](model_of(block))


def test_the_contract_fails_a_model_that_breaks_it():
    """The checks can fail: a model whose forces are not the energy's derivative."""
    model = contract_model("schnet")
    forward = model.forward

    def wrong_forces(batch, **options):
        out = dict(forward(batch, **options))
        if "forces" in out:
            out["forces"] = 1.01 * out["forces"]
        return out

    model.forward = wrong_forces
    with pytest.raises(AssertionError, match="forces"):
        CHECKS["forces_and_stress_are_derivatives"](model)
