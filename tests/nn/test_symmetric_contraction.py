"""MACE's symmetric contraction: equivariance, its first two correlation orders written out by
hand, species dependence, gradients.

    m_{i,c,LM} = Σ_ν Σ_η W^{(ν,L)}_{z_i,c,η} Σ_k U^{(ν,L)}_{k1…kν,M,η} A_{i,c,k1} ⋯ A_{i,c,kν}

ν = 1 must be a linear map per species and channel, w_{z,c,L} A_{c,L}; ν = 2 must span the
same functions as the Clebsch–Gordan products C^{LM}_{l1m1,l2m2} A_{l1m1} A_{l2m2}, l1 ≤ l2.
"""

from __future__ import annotations

import pytest
import torch
from e3nn import o3
from torch.func import functional_call

from equipot.nn.symmetric_contraction import SymmetricContraction

# Wigner D-matrices and couplings in float64 for every test of this file.
pytestmark = pytest.mark.usefixtures("float64_default_dtype")


def random_inputs(module: SymmetricContraction, num_atoms: int, num_channels: int,
                  num_species: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A: [N, C, dim(irreps_in)] standard normal, species: [N]."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(num_atoms, num_channels, module.irreps_in.dim, generator=generator)
    return features, torch.randint(0, num_species, (num_atoms,), generator=generator)


@pytest.mark.parametrize("l_max, correlation, irreps_out", [
    (1, 1, "0e+1o"), (1, 2, "0e+1o+2e"), (1, 3, "0e+1o+2e+3o"),
    (2, 1, "0e+1o+2e"), (2, 2, "0e+1o+2e+2o"), (2, 3, "0e+1o+2e+1e+2o"),
])
def test_output_transforms_by_wigner_d(l_max, correlation, irreps_out):
    """m(D_in(Q) A) = D_out(Q) m(A) for a rotation Q and the rotoinversion −Q."""
    torch.manual_seed(correlation)
    module = SymmetricContraction(o3.Irreps.spherical_harmonics(l_max), irreps_out,
                                  num_channels=4, num_species=3, correlation=correlation)
    features, species = random_inputs(module, num_atoms=6, num_channels=4, num_species=3)
    out = module(features, species)
    assert out.shape == (6, 4, module.irreps_out.dim)
    for sign in (1.0, -1.0):
        rotation = sign * o3.rand_matrix()
        rotated = module(features @ module.irreps_in.D_from_matrix(rotation).T, species)
        expected = out @ module.irreps_out.D_from_matrix(rotation).T
        assert torch.abs(rotated - expected).max() < 1e-9
    for ir_slice in module.irreps_out.slices():  # every output irrep is reached
        assert out[..., ir_slice].abs().max() > 1e-3


def test_paths_per_order():
    """P_{ν,L} for A = 0e+1o+2e. 0e: ν=2 pairs (0,0),(1,1),(2,2); ν=3 triples (0,0,0),
    (0,1,1),(0,2,2),(1,1,2),(2,2,2). 1o: ν=2 pairs (0,1),(1,2) (1o⊗1o→1 is odd in the swap and
    even in parity); ν=3 (0,0,1),(0,1,2),(1,1,1) → Sym³(1o) ∋ 1o once, (1,2,2) → 1o ⊗ Sym²(2e)
    = 1o ⊗ (0e+2e+4e) ∋ 1o twice."""
    module = SymmetricContraction("0e+1o+2e", "0e+1o", num_channels=2, num_species=2)
    assert module.path_order.tolist() == [1] + [2] * 3 + [3] * 5 + [1] + [2] * 2 + [3] * 5
    assert module.weights.shape == (2, 2, 17)


@pytest.mark.parametrize("irreps_out", ["0e+1o+2e", "2e+0e"])
def test_first_order_is_linear_per_species_and_channel(irreps_out):
    """Correlation 1: m_{i,c,L} = w_{z_i,c,L} A_{i,c,L}, one weight per output irrep."""
    irreps_in = o3.Irreps("0e+1o+2e")
    module = SymmetricContraction(irreps_in, irreps_out, num_channels=3, num_species=4,
                                  correlation=1)
    features, species = random_inputs(module, num_atoms=10, num_channels=3, num_species=4)
    input_slice = {ir: ir_slice for (_, ir), ir_slice in zip(irreps_in, irreps_in.slices())}
    weights = module.weights.detach()[species]  # [N, C, number of output irreps]
    expected = torch.cat([weights[:, :, position, None] * features[:, :, input_slice[ir]]
                          for position, (_, ir) in enumerate(o3.Irreps(irreps_out))], dim=-1)
    assert torch.abs(module(features, species) - expected).max() < 1e-12


def clebsch_gordan_products(features: torch.Tensor, irreps: o3.Irreps,
                            ir_out: o3.Irrep) -> torch.Tensor:
    """[n, 2L+1, pairs]: Σ_{m1 m2} C^{LM}_{l1m1,l2m2} A_{l1m1} A_{l2m2} for l1 ≤ l2 of A [n, d].

    A pair of equal irreps couples to L only symmetrically: C^{LM}_{lm1,lm2} = (−1)^{2l+L}
    C^{LM}_{lm2,lm1}, so odd 2l+L vanishes.
    """
    products = []
    blocks = list(zip(irreps, irreps.slices()))
    for first, ((_, ir1), slice1) in enumerate(blocks):
        for (_, ir2), slice2 in blocks[first:]:
            if ir_out in ir1 * ir2 and not (ir1 == ir2 and (2 * ir1.l + ir_out.l) % 2):
                cg = o3.wigner_3j(ir1.l, ir2.l, ir_out.l)
                products.append(torch.einsum("abM,na,nb->nM", cg, features[:, slice1],
                                             features[:, slice2]))
    return torch.stack(products, dim=-1)


def test_second_order_spans_the_clebsch_gordan_products():
    """Each ν = 2 basis function of the module, for every L, is a fixed combination of the
    hand-built CG products of pairs, and there are as many as independent products: same span."""
    irreps_in = o3.Irreps("0e+1o+2e")
    module = SymmetricContraction(irreps_in, "0e+1o+2e", num_channels=1, num_species=1,
                                  correlation=2)
    features, species = random_inputs(module, num_atoms=30, num_channels=1, num_species=1)

    # One ν = 2 path at a time: its basis function B_η, in the one output irrep it feeds.
    module_basis = {ir: [] for _, ir in module.irreps_out}
    with torch.no_grad():
        for path in torch.nonzero(module.path_order == 2).flatten():
            module.weights.zero_()
            module.weights[..., path] = 1.0
            out = module(features, species)[:, 0]
            for (_, ir), ir_slice in zip(module.irreps_out, module.irreps_out.slices()):
                if out[:, ir_slice].abs().max() > 0:
                    module_basis[ir].append(out[:, ir_slice].flatten())

    expected_paths = {"0e": 3, "1o": 2, "2e": 3}
    for ir, basis in module_basis.items():
        by_hand = clebsch_gordan_products(features[:, 0], irreps_in, ir).flatten(0, 1)
        assert len(basis) == by_hand.shape[1] == expected_paths[str(ir)]
        assert torch.linalg.matrix_rank(by_hand) == by_hand.shape[1]
        basis = torch.stack(basis, dim=-1)  # [n (2L+1), P_L]
        assert torch.linalg.matrix_rank(basis) == basis.shape[1]
        combination = torch.linalg.lstsq(by_hand, basis).solution
        assert torch.abs(by_hand @ combination - basis).max() < 1e-10


def test_weights_depend_on_species_not_on_atom_order():
    module = SymmetricContraction("0e+1o+2e", "0e+1o", num_channels=4, num_species=3)
    features, _ = random_inputs(module, num_atoms=1, num_channels=4, num_species=3)
    out = module(features.expand(3, -1, -1), torch.tensor([0, 1, 0]))
    assert torch.equal(out[0], out[2])
    assert torch.abs(out[0] - out[1]).max() > 1e-3

    features, species = random_inputs(module, num_atoms=8, num_channels=4, num_species=3)
    permutation = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    permuted = module(features[permutation], species[permutation])
    assert torch.abs(permuted - module(features, species)[permutation]).max() < 1e-12


def test_unit_variance_at_initialisation():
    """Standard normal A: every output component has variance ≈ 1."""
    torch.manual_seed(0)
    module = SymmetricContraction("0e+1o+2e", "0e+1o+2e", num_channels=64, num_species=4)
    features, species = random_inputs(module, num_atoms=500, num_channels=64, num_species=4)
    with torch.no_grad():
        variance = module(features, species).var(dim=(0, 1))
    assert torch.all((variance > 0.7) & (variance < 1.3)), variance


def test_unreachable_output_is_refused():
    with pytest.raises(ValueError, match="couples"):
        SymmetricContraction("0e+1o", "2e", num_channels=2, num_species=2, correlation=1)


def test_first_and_second_derivatives():
    """Forces come by autograd through the module, and training differentiates them again."""
    module = SymmetricContraction("0e+1o+2e", "0e+1o", num_channels=2, num_species=2)
    features, species = random_inputs(module, num_atoms=2, num_channels=2, num_species=2)
    features.requires_grad_(True)
    weights = module.weights.detach().clone().requires_grad_(True)

    def contraction(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return functional_call(module, {"weights": weights}, (features, species))

    assert torch.autograd.gradcheck(contraction, (features, weights))
    assert torch.autograd.gradgradcheck(contraction, (features, weights))
