"""SymmetricContraction's two ways to the highest order ν (equipot/nn/symmetric_contraction.py):
through the monomials of order ν (the reference, ``contract_last = False``), or through those of
order ν−1 contracted with U first, one slice per component (what it does). Both give the same
B, values and derivatives."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from equipot.nn.symmetric_contraction import SymmetricContraction

pytestmark = pytest.mark.usefixtures("float64_default_dtype")


@pytest.mark.parametrize("l_max, irreps_out, correlation",
                         [(2, "0e", 3), (1, "0e", 2), (2, "0e", 4), (3, "0e", 3),
                          (3, "0e+1o", 3), (3, "0e+1o+2e", 3)])
def test_contracting_the_last_order_first_changes_nothing(l_max, irreps_out, correlation):
    torch.manual_seed(0)
    module = SymmetricContraction(o3.Irreps.spherical_harmonics(l_max), irreps_out,
                                  num_channels=3, num_species=2, correlation=correlation)
    assert module.contract_last
    features = torch.randn(5, 3, module.irreps_in.dim, requires_grad=True)
    species = torch.tensor([0, 1, 1, 0, 1])

    def values_and_derivatives():
        out = module(features, species)
        first, = torch.autograd.grad(out.pow(2).sum(), features, create_graph=True)
        second, = torch.autograd.grad(first.pow(2).sum(), features)
        return out, first, second

    contracted = values_and_derivatives()
    module.contract_last = False
    through_monomials = values_and_derivatives()
    assert through_monomials[0].abs().max() > 0.1
    for ours, reference in zip(contracted, through_monomials):
        torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)


def test_the_forward_pass_uses_the_coupling_of_a_loaded_state():
    """U is model state: a state dict's U (here 2U, which doubles every B and so m) must be
    what the forward pass multiplies with, in this module and inside a parent."""
    torch.manual_seed(1)
    module = SymmetricContraction(o3.Irreps.spherical_harmonics(2), "0e+1o", num_channels=3,
                                  num_species=2, correlation=3)
    features, species = torch.randn(4, 3, 9), torch.tensor([0, 1, 1, 0])
    expected = 2 * module(features, species)
    state = {**module.state_dict(), "coupling": 2 * module.coupling}
    module.load_state_dict(state)
    torch.testing.assert_close(module(features, species), expected, rtol=1e-12, atol=1e-12)
    parent = torch.nn.Sequential(SymmetricContraction(o3.Irreps.spherical_harmonics(2), "0e+1o",
                                                      num_channels=3, num_species=2,
                                                      correlation=3))
    parent.load_state_dict({f"0.{name}": value for name, value in state.items()})
    torch.testing.assert_close(parent[0](features, species), expected, rtol=1e-12, atol=1e-12)
