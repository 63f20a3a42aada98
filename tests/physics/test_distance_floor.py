"""The distance floor (equipot/physics/distance_floor.py): the network reads no pair closer than the
training data had it, the priors read the true lengths, and nothing changes above the floor."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_forces

from equipot import EquipotCalculator
from equipot.analysis.short_range import check_short_range
from equipot.physics.distance_floor import blend_to_identity

from conftest import MODEL_CONFIG, make_ethanol, make_model

# H, C, O, Cu (MODEL_CONFIG's species): closest approaches as a training set might have them.
SHORTEST = [[1.40, 0.95, 0.90, None],
            [0.95, 1.30, 1.25, None],
            [0.90, 1.25, 2.20, None],
            [None, None, None, 2.20]]
WIDTH = 0.1
ZBL = [{"name": "zbl", "inner_factor": 0.5, "outer_factor": 0.8}]


def config(block="schnet", floor=True, terms=()):
    return {**MODEL_CONFIG, "block": block, "shortest_distances": SHORTEST,
            "distance_floor": {"at": "training", "width": WIDTH} if floor else None,
            "energy_terms": list(terms)}


def energy(model, atoms):
    atoms = atoms.copy()
    atoms.calc = EquipotCalculator(model)
    return atoms.get_potential_energy()


def test_blend_is_monotonic_and_twice_continuously_differentiable():
    u = torch.linspace(-0.5, 1.5, 4001, dtype=torch.float64, requires_grad=True)
    g = blend_to_identity(u)
    (dg,) = torch.autograd.grad(g.sum(), u, create_graph=True)
    (d2g,) = torch.autograd.grad(dg.sum(), u)
    assert torch.all(torch.diff(g) >= 0)
    for edge, value, slope in ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)):
        near = (u - edge).abs() < 2e-3
        assert torch.allclose(g[near], value + slope * (u[near] - edge), atol=1e-5)
        assert torch.allclose(dg[near], torch.full_like(dg[near], slope), atol=1e-2)
        # both one-sided second derivatives vanish: g'' falls linearly to 0 at the edge
        assert torch.all(d2g[near].abs() <= 40 * (u[near] - edge).abs() + 1e-9)


@pytest.mark.parametrize("block", ["schnet", "painn", "nequip", "mace"])
def test_network_energy_of_a_dimer_is_constant_below_the_shortest_distance(block):
    model = make_model(config(block))
    energies = [energy(model, Atoms("CO", positions=[[0, 0, 0], [0, 0, r]]))
                for r in (0.3, 0.7, 1.0, 1.2, 1.25)]
    assert np.ptp(energies) < 1e-10
    assert abs(energy(model, Atoms("CO", positions=[[0, 0, 0], [0, 0, 1.6]]))
               - energies[0]) > 1e-6  # the network still reads it where it has data


def test_nothing_changes_where_every_pair_is_beyond_the_floor():
    atoms = make_ethanol()
    distances = atoms.get_all_distances()[np.triu_indices(len(atoms), 1)]
    loose = [[0.8 if r is not None else None for r in row] for row in SHORTEST]
    assert distances.min() > 0.8 + WIDTH
    floored = make_model({**config("painn"), "shortest_distances": loose})
    plain = make_model(config("painn", floor=False))
    assert energy(floored, atoms) == pytest.approx(energy(plain, atoms), abs=1e-12)


def test_forces_match_finite_differences_inside_the_blend():
    """A compressed ethanol whose C–H and O–H pairs sit below and inside the blend."""
    atoms = make_ethanol()
    atoms.positions *= 0.85
    model = make_model(config("painn", terms=ZBL))
    atoms.calc = EquipotCalculator(model)
    assert np.allclose(atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-5),
                       atol=1e-6 * max(1.0, np.abs(atoms.get_forces()).max()))


@pytest.mark.parametrize("block", ["schnet", "painn", "nequip", "mace"])
def test_random_networks_pass_the_short_range_check_with_the_floor_and_the_prior(block,
                                                                                  tmp_path):
    report = check_short_range(make_model(config(block, terms=ZBL)), SHORTEST, tmp_path)
    assert report.passed, [pair.verdict for pair in report.pairs if not pair.passed]


def test_a_floor_without_shortest_distances_fails_at_build_time():
    with pytest.raises(ValueError, match="shortest_distances"):
        make_model({**config(), "shortest_distances": None})


def test_without_the_floor_the_prior_alone_lets_random_networks_fail(tmp_path):
    """The same models with ZBL and no floor: the check can fail, so the test above can too."""
    reports = [check_short_range(make_model(config(block, floor=False, terms=ZBL)), SHORTEST,
                                 tmp_path / block)
               for block in ("schnet", "painn", "nequip", "mace")]
    assert not all(report.passed for report in reports)


def test_the_covalent_floor_blinds_the_network_at_nuclear_distances_only():
    """distance_floor {at: covalent}, by default factor 0.5 and width 0.1 Å: C–O (covalent
    radii 0.76 + 0.66 Å) is floored at 0.71 Å, blended up to 0.81 Å; ethanol, whose closest
    pairs lie far above, is untouched."""
    covalent = make_model({**config("painn", floor=False), "distance_floor": {"at": "covalent"}})
    plain = make_model(config("painn", floor=False))
    energies = [energy(covalent, Atoms("CO", positions=[[0, 0, 0], [0, 0, r]]))
                for r in (0.2, 0.4, 0.6, 0.71)]
    assert np.ptp(energies) < 1e-10
    above = Atoms("CO", positions=[[0, 0, 0], [0, 0, 0.85]])
    assert abs(energy(covalent, above) - energies[0]) > 1e-6
    assert energy(covalent, above) == pytest.approx(energy(plain, above), abs=1e-12)
    assert energy(covalent, make_ethanol()) == pytest.approx(energy(plain, make_ethanol()),
                                                             abs=1e-12)
