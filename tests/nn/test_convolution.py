"""EdgeConvolution (equipot/nn/convolution.py) against its definition, e3nn's uvu
``o3.TensorProduct`` summed over the neighbours: the same numbers, first and second derivatives
and weight layout, for the irreps NequIP's and MACE's blocks use."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from equipot.nn.convolution import EdgeConvolution, edge_tensor_product
from equipot.nn.scatter import scatter_sum

pytestmark = pytest.mark.usefixtures("float64_default_dtype")

NUM_ATOMS, NUM_EDGES = 7, 40

# (irreps_in, l_max of Y, targets): the first block reads scalars only; NequIP with and without
# parity and its scalar-output last block; MACE's A up to l_max 3; an input irrep (2e) that
# reaches no target.
CASES = {
    "mace-first": ("8x0e", 2, "0e+1o+2e"),
    "mace": ("8x0e+8x1o", 2, "0e+1o+2e"),
    "mace-l3": ("4x0e+4x1o+4x2e", 3, "0e+1o+2e+3o"),
    "nequip": ("8x0e+8x1o", 1, "0e+1o"),
    "nequip-parity": ("4x0e+4x0o+4x1o+4x1e+4x2e+4x2o", 2, "0e+0o+1o+1e+2e+2o"),
    "nequip-scalar-output": ("8x0e+8x1o", 1, "0e"),
    "unreachable-input": ("4x0e+4x1o+4x2e", 1, "0e"),
}


def reference(tensor_product, features, spherical_harmonics, weights, centre, neighbour):
    """The definition: e3nn's tensor product on every edge, summed into the centre atoms."""
    messages = tensor_product(features[neighbour], spherical_harmonics, weights)
    return scatter_sum(messages, centre, features.shape[0])


def random_inputs(convolution, seed=0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(NUM_ATOMS, convolution.irreps_in.dim, generator=generator)
    spherical_harmonics = torch.randn(NUM_EDGES, convolution.irreps_sh.dim, generator=generator)
    weights = torch.randn(NUM_EDGES, convolution.weight_numel, generator=generator)
    centre = torch.randint(0, NUM_ATOMS, (NUM_EDGES,), generator=generator)
    neighbour = torch.randint(0, NUM_ATOMS, (NUM_EDGES,), generator=generator)
    return features, spherical_harmonics, weights, centre, neighbour


def build(case):
    irreps_in, l_max, targets = CASES[case]
    args = (o3.Irreps(irreps_in), o3.Irreps.spherical_harmonics(l_max),
            {ir for _, ir in o3.Irreps(targets)})
    return EdgeConvolution(*args), edge_tensor_product(*args)


@pytest.mark.parametrize("case", CASES)
def test_same_numbers_and_layout_as_e3nn(case):
    convolution, tensor_product = build(case)
    assert convolution.irreps_out == tensor_product.irreps_out
    assert convolution.weight_numel == tensor_product.weight_numel
    inputs = random_inputs(convolution)
    expected = reference(tensor_product, *inputs)
    assert expected.abs().max() > 1.0
    torch.testing.assert_close(convolution(*inputs), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", ["mace-first", "mace", "nequip-parity"])
def test_same_first_and_second_derivatives_as_e3nn(case):
    """Force training differentiates the convolution twice: compare ∂L/∂(x, Y, w) and the
    gradient of a function of ∂L/∂Y with respect to all three."""
    convolution, tensor_product = build(case)
    features, spherical_harmonics, weights, centre, neighbour = random_inputs(convolution, seed=1)
    probe = torch.randn(NUM_ATOMS, convolution.irreps_out.dim)

    def derivatives(module):
        inputs = [t.clone().requires_grad_() for t in (features, spherical_harmonics, weights)]
        out = module(*inputs, centre, neighbour) if module is convolution else reference(
            module, *inputs, centre, neighbour)
        first = torch.autograd.grad((out * probe).sum(), inputs, create_graph=True)
        second = torch.autograd.grad(first[1].pow(2).sum(), inputs, allow_unused=True,
                                     materialize_grads=True)
        return first + second

    for ours, theirs in zip(derivatives(convolution), derivatives(tensor_product)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)


def test_channels_last_is_the_output_rearranged():
    """[N, K, C]: per irrep of irreps_out, its 2l+1 components (rows), channels last."""
    convolution, _ = build("mace")
    inputs = random_inputs(convolution)
    channels_last = convolution.channels_last(*inputs)
    blocks = convolution(*inputs).split([mul * ir.dim for mul, ir in convolution.irreps_out], 1)
    rows = channels_last.split([ir.dim for _, ir in convolution.irreps_out], dim=1)
    for (mul, ir), block, row in zip(convolution.irreps_out, blocks, rows):
        torch.testing.assert_close(block.view(NUM_ATOMS, mul, ir.dim).transpose(1, 2), row,
                                   rtol=0, atol=0)


def test_irreps_with_different_channel_counts_are_refused():
    with pytest.raises(ValueError, match="same number of channels"):
        EdgeConvolution(o3.Irreps("8x0e+4x1o"), o3.Irreps.spherical_harmonics(1),
                        {o3.Irrep("0e"), o3.Irrep("1o")})
