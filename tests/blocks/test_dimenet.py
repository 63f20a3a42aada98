"""DimeNet++ (equipot.blocks.dimenet): its bases against scipy, and the model against a direct,
edge-by-edge evaluation of the paper's equations.

The physics tests (forces, stress, symmetries, batching, MD) run for DimeNet++ through BLOCKS.
"""

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from scipy.integrate import quad
from scipy.special import eval_legendre, spherical_jn
from torch_geometric.data import Batch

from equipot import keys
from equipot.blocks import dimenet
from equipot.blocks.dimenet import (
    DimeNetOutput,
    SphericalBasis,
    legendre,
    spherical_bessel,
    spherical_bessel_roots,
)
from equipot.blocks.registry import FAMILIES
from equipot.data.graph import atoms_to_graph
from equipot.nn import geometry as geometry_module
from equipot.nn.scatter import scatter_sum
from equipot.nn.triplets import triplet_angles

from conftest import MODEL_CONFIG, make_ethanol, make_model

pytestmark = pytest.mark.usefixtures("float64_default_dtype")

CONFIG = {**MODEL_CONFIG, "block": "dimenet"}
CUTOFF = CONFIG["cutoff"]
NUM_SPHERICAL, NUM_RADIAL = 7, CONFIG["num_radial"]  # the published l < 7; the test's 8 radial


def random_cluster(seed=0, num_atoms=10, box=4.5, closest=0.8) -> Atoms:
    """H, C and O at random positions at least ``closest`` Å apart: random lengths and angles."""
    rng = np.random.default_rng(seed)
    positions = []
    while len(positions) < num_atoms:
        candidate = rng.uniform(0.0, box, 3)
        if all(np.linalg.norm(candidate - p) > closest for p in positions):
            positions.append(candidate)
    return Atoms(numbers=rng.choice([1, 6, 8], num_atoms), positions=positions)


def geometry_of(model, atoms):
    """The Geometry the model's forward pass builds for ``atoms`` (captured by a hook)."""
    captured = []
    handle = model.embedding.register_forward_hook(lambda _, args, __: captured.append(args[0]))
    try:
        model(Batch.from_data_list([atoms_to_graph(atoms, model.cutoff)]), compute_forces=False)
    finally:
        handle.remove()
    return captured[0]


def envelope(d, p=6):
    x = d / CUTOFF
    return (1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1)
            - p * (p + 1) / 2 * x ** (p + 2)) * (x < 1)


def reference_rbf(d):
    """e_RBF,n(d) = √(2/c) sin(nπd/c)/d · u(d), [num_radial]."""
    n = np.arange(1, NUM_RADIAL + 1)
    return np.sqrt(2 / CUTOFF) * np.sin(n * np.pi * d / CUTOFF) / d * envelope(d)


def reference_sbf(d, alpha, roots):
    """a_SBF,ln(d, α) from scipy's j_l and P_l, flattened l-major: [num_spherical · num_radial]."""
    values = []
    for l in range(NUM_SPHERICAL):
        z = roots[l]
        normalisation = np.sqrt(2 / (CUTOFF**3 * spherical_jn(l + 1, z) ** 2))
        radial = normalisation * spherical_jn(l, z * d / CUTOFF)
        harmonic = np.sqrt((2 * l + 1) / (4 * np.pi)) * eval_legendre(l, np.cos(alpha))
        values.append(radial * harmonic * envelope(d))
    return np.concatenate(values)


# ---------------------------------------------------------------- bases


@pytest.mark.parametrize("l", range(7))
def test_spherical_bessel_matches_scipy(l):
    """Values and first derivatives in float64, near 0 and on both sides of the switch from
    series to recurrence at x = max(l, 1), and values in float32, relative to max |j_l|."""
    switch = max(l, 1)
    x = np.concatenate([[1e-9], np.linspace(1e-3, 30.0, 3001),
                        [switch - 1e-9, switch, switch + 1e-9]])
    scale = np.abs(spherical_jn(l, x)).max()
    argument = torch.tensor(x, requires_grad=True)
    values = spherical_bessel(l, argument)
    (derivative,) = torch.autograd.grad(values.sum(), argument)
    np.testing.assert_allclose(values.detach().numpy(), spherical_jn(l, x), rtol=0,
                               atol=1e-14 * scale)
    np.testing.assert_allclose(derivative.numpy(), spherical_jn(l, x, derivative=True), rtol=0,
                               atol=1e-12 * scale)
    single = spherical_bessel(l, torch.tensor(x, dtype=torch.float32))
    assert single.dtype == torch.float32
    x32 = torch.tensor(x, dtype=torch.float32).double().numpy()
    np.testing.assert_allclose(single.double().numpy(), spherical_jn(l, x32), rtol=0,
                               atol=2e-6 * scale)


def test_roots_are_the_first_roots_of_each_order():
    """j_l(z_ln) = 0, and z_ln is the n-th sign change of j_l (none is skipped)."""
    roots = spherical_bessel_roots(NUM_SPHERICAL, NUM_RADIAL)
    assert roots.shape == (NUM_SPHERICAL, NUM_RADIAL)
    np.testing.assert_allclose(roots[0], np.pi * np.arange(1, NUM_RADIAL + 1), rtol=1e-14)
    x = np.linspace(1e-3, roots.max() + 1.0, 200001)
    for l in range(NUM_SPHERICAL):
        np.testing.assert_allclose(spherical_jn(l, roots[l]), 0.0, atol=1e-14)
        sign_changes = x[1:][np.diff(np.sign(spherical_jn(l, x))) != 0]
        np.testing.assert_allclose(sign_changes[:NUM_RADIAL], roots[l], atol=1e-3)


def test_legendre_matches_scipy():
    x = torch.linspace(-1.0, 1.0, 201)
    expected = np.stack([eval_legendre(l, x.numpy()) for l in range(NUM_SPHERICAL)], axis=-1)
    np.testing.assert_allclose(legendre(NUM_SPHERICAL, x).numpy(), expected, rtol=0, atol=1e-14)


def test_radial_part_is_orthonormal():
    """√(2/(c³ j²_{l+1}(z_ln))) j_l(z_ln r/c) is orthonormal with weight r² on [0, c]: checks
    the normalisation the basis uses."""
    basis = SphericalBasis(CUTOFF, NUM_SPHERICAL, NUM_RADIAL)

    def radial(l, n, r):
        x = basis.roots[l, n] * torch.tensor(r) / CUTOFF
        return float(basis.normalisation[l, n] * spherical_bessel(l, x))

    for l in (0, 3, 6):
        for n, m in [(0, 0), (2, 2), (5, 5), (0, 1), (1, 4)]:
            overlap = quad(lambda r: radial(l, n, r) * radial(l, m, r) * r * r, 1e-9, CUTOFF,
                           limit=200)[0]
            assert overlap == pytest.approx(float(n == m), abs=1e-9), (l, n, m)


@pytest.mark.parametrize("seed", [0, 1])
def test_spherical_basis_matches_scipy_at_random_lengths_and_angles(seed):
    """Every triplet's a_SBF(d_kj, α_kji), with d_kj from the positions and α_kji from ASE."""
    model = make_model(CONFIG)
    atoms = random_cluster(seed)
    geometry = geometry_of(model, atoms)
    basis = model.blocks[0].spherical_basis.evaluate(geometry).numpy()
    triplets = geometry.triplets
    i, j, k = (index.numpy() for index in (triplets.atom_i, triplets.atom_j, triplets.atom_k))
    lengths = np.linalg.norm(atoms.positions[k] - atoms.positions[j], axis=1)
    angles = np.radians(atoms.get_angles(np.stack([i, j, k], axis=1)))
    assert basis.shape == (triplets.num_triplets, NUM_SPHERICAL * NUM_RADIAL)
    assert triplets.num_triplets > 200
    assert lengths.min() < 1.2 and lengths.max() > 3.5 and angles.min() < 0.4 and angles.max() > 2.7
    roots = spherical_bessel_roots(NUM_SPHERICAL, NUM_RADIAL)
    expected = np.stack([reference_sbf(d, a, roots) for d, a in zip(lengths, angles)])
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(basis, expected, rtol=0, atol=1e-12)
    # the same cos α_kji as equipot.nn.triplets
    cos, _ = triplet_angles(geometry.vectors, triplets)
    np.testing.assert_allclose(np.cos(angles), cos.numpy(), atol=1e-12)


def test_bases_vanish_at_the_cutoff():
    """a_SBF and e_RBF of an edge of length d = c(1 − δ) go to zero as δ⁴: the envelope as δ³,
    and j_l(z_ln d/c) and sin(nπd/c) have a root at d = c."""
    model = make_model(CONFIG)
    largest = {}
    for delta in (1e-2, 1e-3):
        d = CUTOFF * (1 - delta)
        atoms = Atoms("HCO", positions=[[1.1, 0.0, 0.0], [0.0, 0.0, 0.0],
                                        [d * math.cos(2.0), d * math.sin(2.0), 0.0]])
        geometry = geometry_of(model, atoms)
        sbf = model.blocks[0].spherical_basis.evaluate(geometry)
        triplets = geometry.triplets
        long = torch.isclose(geometry.lengths[triplets.edge_kj], torch.tensor(d))
        assert long.sum() == 1  # k = O → j = C → i = H only (O–H is beyond the cutoff)
        rbf = dimenet.radial_basis(geometry)[torch.isclose(geometry.lengths, torch.tensor(d))]
        largest[delta] = (sbf[long].abs().max().item(), rbf.abs().max().item())
        near = sbf[~long].abs().max().item()
        assert near > 1e-2  # the short edges' basis is not small
    for basis in (0, 1):
        assert largest[1e-3][basis] < 1e-9
        assert largest[1e-2][basis] / largest[1e-3][basis] > 0.5e4


# ---------------------------------------------------------------- the model


def test_triplet_sum_is_the_gather_multiply_scatter_and_twice_differentiable():
    """TripletSum (which recomputes its gather in the backward pass) against the plain ops,
    and its first and second derivatives against finite differences (gradcheck)."""
    model = make_model(CONFIG)
    triplets = geometry_of(model, make_ethanol()).triplets
    num_edges = int(triplets.edge_ji.max()) + 1
    torch.manual_seed(0)
    x = torch.randn(num_edges, 3, requires_grad=True)
    s = torch.randn(triplets.num_triplets, 3, requires_grad=True)
    fused = dimenet.TripletSum.apply(x, s, triplets.edge_kj, triplets.edge_ji)
    plain = scatter_sum(x[triplets.edge_kj] * s, triplets.edge_ji, num_edges)
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-14)
    assert not torch.equal(triplets.edge_kj, triplets.edge_ji)

    def function(x, s):
        return dimenet.TripletSum.apply(x, s, triplets.edge_kj, triplets.edge_ji)

    assert torch.autograd.gradcheck(function, (x, s))
    assert torch.autograd.gradgradcheck(function, (x, s))


def test_one_output_block_per_stage_each_read_once():
    model = make_model({**CONFIG, "num_blocks": 3})
    assert sorted(model.readouts) == ["0", "1", "2", "3"]
    stages = [model.embedding, *model.blocks]
    outputs = {}
    handles = [readout.register_forward_hook(
        lambda _, __, out, stage=stage: outputs.setdefault(stage, []).append(out))
        for stage, readout in model.readouts.items()]
    try:
        model(Batch.from_data_list([atoms_to_graph(make_ethanol(), CUTOFF)]), compute_forces=False)
    finally:
        for handle in handles:
            handle.remove()
    for stage, readout in model.readouts.items():
        assert isinstance(readout, DimeNetOutput)
        assert readout.irreps_in == stages[int(stage)].irreps_out == model.blocks[0].irreps_in
        assert len(outputs[stage]) == 1
        assert outputs[stage][0].shape == (9,) and outputs[stage][0].abs().max() > 1e-2


@pytest.mark.parametrize("block", sorted(FAMILIES))
def test_triplets_and_spherical_basis_only_for_dimenet_and_once(block, monkeypatch):
    """Other blocks never build triplets; DimeNet++ builds them and its spherical basis once
    per forward pass, however many blocks use them."""
    calls = {"triplets": 0, "basis": 0}
    build_triplets, evaluate = geometry_module.build_triplets, SphericalBasis.evaluate

    def counting_triplets(*args, **kwargs):
        calls["triplets"] += 1
        return build_triplets(*args, **kwargs)

    def counting_evaluate(self, geometry):
        calls["basis"] += 1
        return evaluate(self, geometry)

    monkeypatch.setattr(SphericalBasis, "evaluate", counting_evaluate)
    monkeypatch.setattr(geometry_module, "build_triplets", counting_triplets)
    model = make_model({**CONFIG, "block": block, "num_blocks": 3})
    calls.update(triplets=0, basis=0)  # building the test model evaluated it
    geometry = geometry_of(model, make_ethanol())
    is_dimenet = block == "dimenet"
    assert ("triplets" in geometry.__dict__) == is_dimenet
    assert calls == {"triplets": int(is_dimenet), "basis": int(is_dimenet)}


def test_model_follows_the_equations_edge_by_edge():
    """Stage-0 and stage-1 per-atom energies of a one-block model equal a direct evaluation of
    the paper's equations, one edge and one triplet (k ≠ i) at a time, with the model's
    weights and the bases from scipy."""
    model = make_model({**CONFIG, "num_blocks": 1})
    atoms = make_ethanol()
    graph = atoms_to_graph(atoms, CUTOFF)
    centre, neighbour = graph[keys.EDGE_INDEX].tolist()
    positions = atoms.positions
    species = [CONFIG["species"].index(z) for z in atoms.numbers]
    silu = torch.nn.functional.silu
    embedding, block = model.embedding, model.blocks[0]
    roots = spherical_bessel_roots(NUM_SPHERICAL, NUM_RADIAL)

    def length(a, b):
        return np.linalg.norm(positions[b] - positions[a])

    def residual(layers, x):
        for layer in layers:
            x = x + silu(layer.second(silu(layer.first(x))))
        return x

    with torch.no_grad():
        rbf = [torch.tensor(reference_rbf(length(i, j))) for i, j in zip(centre, neighbour)]
        h = embedding.embedding.weight[species]
        m0 = [silu(embedding.mix(torch.cat([h[j], h[i], silu(embedding.rbf(rbf[e]))])))
              for e, (i, j) in enumerate(zip(centre, neighbour))]
        m1, num_triplets = [], 0
        for e, (i, j) in enumerate(zip(centre, neighbour)):  # edge j → i
            total = torch.zeros(block.up.in_features)
            for f, (j_, k) in enumerate(zip(centre, neighbour)):  # edge k → j
                if j_ != j or k == i:
                    continue
                num_triplets += 1
                alpha = math.radians(atoms.get_angle(i, j, k))
                x_kj = silu(block.kj(m0[f])) * block.rbf(rbf[f])
                sbf = torch.tensor(reference_sbf(length(j, k), alpha, roots))
                total = total + silu(block.down(x_kj)) * block.sbf(sbf)
            y = residual(block.before_skip, silu(block.ji(m0[e])) + silu(block.up(total)))
            m1.append(residual(block.after_skip, m0[e] + silu(block.skip(y))))

        expected = {}
        for stage, messages in (("0", m0), ("1", m1)):
            readout = model.readouts[stage]
            t = torch.zeros(len(atoms), messages[0].shape[0])
            for e, i in enumerate(centre):
                t[i] += readout.rbf(rbf[e]) * messages[e]
            x = readout.up(t)
            for layer in readout.layers:
                if isinstance(layer, torch.nn.Linear):
                    x = silu(layer(x))
            expected[stage] = readout.out(x).squeeze(-1)

    outputs = {}
    handles = [readout.register_forward_hook(
        lambda _, __, out, stage=stage: outputs.__setitem__(stage, out))
        for stage, readout in model.readouts.items()]
    try:
        model(Batch.from_data_list([graph]), compute_forces=False)
    finally:
        for handle in handles:
            handle.remove()
    assert num_triplets == geometry_of(model, atoms).triplets.num_triplets > 100
    for stage in ("0", "1"):
        assert expected[stage].abs().max() > 1e-2
        torch.testing.assert_close(outputs[stage], expected[stage], rtol=0, atol=1e-10)


def test_unknown_option_fails_at_build_time():
    with pytest.raises(TypeError, match="int_emb"):
        make_model({**CONFIG, "block_options": {"int_emb": 32}})
