"""The dimer-repulsion training penalty (equipot/train/dimer_repulsion.py).

Checked against independent numbers: the slopes it penalises against finite differences of the
dimer energy through ASE, the predictions it hands the loss against the model on the batch
alone; and that minimising it turns a model failing the short-range check into one passing it.
"""

import pytest
import torch
from ase import Atoms
from torch_geometric.data import Batch

from equipot import EquipotCalculator, keys
from equipot.analysis.short_range import check_short_range
from equipot.data.graph import MIN_DISTANCE, atoms_to_graph
from equipot.train.dimer_repulsion import DimerRepulsion

from conftest import MODEL_CONFIG, make_ethanol, run_defaults

SPECIES = [1, 6, 8]
CONFIG = {**MODEL_CONFIG, "species": SPECIES, "reference_energies": [-1.0, -2.0, -3.0]}
SHORTEST = [[1.5, 1.1, 1.0], [1.1, 1.3, 1.2], [1.0, 1.2, 1.4]]  # Å, as statistics give them
PAIRS = [(1, 1), (1, 6), (1, 8), (6, 6), (6, 8), (8, 8)]


def ethanol_batch(cutoff):
    return Batch.from_data_list([atoms_to_graph(make_ethanol(seed), cutoff) for seed in (1, 2)])


def test_dimers_are_drawn_per_pair_one_in_each_slice_below_r_min():
    penalty = DimerRepulsion(SPECIES, SHORTEST, None,
                             **run_defaults("dimer_repulsion", samples_per_pair=5))
    torch.manual_seed(0)
    distances = penalty.distances().view(len(PAIRS), 5)
    r_min = torch.tensor([SHORTEST[SPECIES.index(a)][SPECIES.index(b)] for a, b in PAIRS])
    fractions = (distances - MIN_DISTANCE) / (r_min.double() - MIN_DISTANCE).unsqueeze(1)
    assert ((fractions * 5).floor() == torch.arange(5)).all()
    assert penalty.numbers.view(-1, 5, 2)[:, 0].tolist() == [list(pair) for pair in PAIRS]
    assert not torch.equal(penalty.distances(), penalty.distances())  # drawn anew


def test_no_dimer_is_drawn_below_the_models_distance_floor(build_model):
    model = build_model({**CONFIG, "distance_floor": {"at": "covalent", "factor": 0.5}})
    floors = model.distance_floor.floor
    penalty = DimerRepulsion(SPECIES, SHORTEST, floors,
                             **run_defaults("dimer_repulsion", samples_per_pair=50))
    distances = penalty.distances().view(len(PAIRS), 50)
    r_f = torch.tensor([floors[SPECIES.index(a), SPECIES.index(b)] for a, b in PAIRS])
    assert (distances >= r_f.double().unsqueeze(1)).all()
    assert (distances.min(1).values < r_f.double() + 0.05).all()  # and down to it


def test_the_batch_keeps_its_predictions_and_the_slopes_are_finite_differences(build_model):
    model = build_model({**CONFIG, "energy_terms": [{"name": "zbl"}]})
    penalty = DimerRepulsion(SPECIES, SHORTEST, None,
                             **run_defaults("dimer_repulsion", weight=1.0, margin=0.0))
    batch = ethanol_batch(model.cutoff)
    torch.manual_seed(0)
    joined = penalty.append_to(batch)
    own, _ = penalty(model(joined), batch)
    alone = model(batch)
    assert set(own) == set(alone)
    for key, value in alone.items():
        torch.testing.assert_close(own[key], value, rtol=1e-10, atol=1e-10)

    distances = joined[keys.POSITIONS][batch.num_nodes + 1::2, 2]  # atom b of every dimer
    forces = model(joined)[keys.FORCES][batch.num_nodes:, 2].view(-1, 2)
    slopes = 0.5 * (forces[:, 0] - forces[:, 1])
    numbers = penalty.numbers.view(-1, 2)
    calculator, step = EquipotCalculator(model), 1e-5

    def energy(pair, r):
        atoms = Atoms(numbers=pair.tolist(), positions=[[0, 0, 0], [0, 0, r]])
        atoms.calc = calculator
        return atoms.get_potential_energy()

    for pair, r, slope in list(zip(numbers, distances.tolist(), slopes))[::3]:
        finite_difference = (energy(pair, r + step) - energy(pair, r - step)) / (2 * step)
        assert slope.item() == pytest.approx(finite_difference, rel=1e-6, abs=1e-6)
    hinge = penalty(model(joined), batch)[1]
    assert hinge.item() == pytest.approx(torch.relu(slopes).mean().item(), rel=1e-12)


def test_minimising_the_penalty_makes_a_failing_model_pass_the_check(build_model, tmp_path):
    """A random network with no prior attracts somewhere below r_min; the penalty alone,
    minimised on dimers riding along with ethanol, removes every dip."""
    model = build_model(CONFIG, seed=3).train()
    before = check_short_range(model.eval(), SHORTEST, tmp_path / "before")
    assert not before.passed
    penalty = DimerRepulsion(SPECIES, SHORTEST, None, **run_defaults(
        "dimer_repulsion", weight=1.0, margin=0.05, samples_per_pair=8))
    batch = ethanol_batch(model.cutoff)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    torch.manual_seed(0)
    for _ in range(300):
        optimizer.zero_grad()
        _, loss = penalty(model(penalty.append_to(batch)), batch)
        loss.backward()
        optimizer.step()
    after = check_short_range(model.eval(), SHORTEST, tmp_path / "after")
    assert after.passed, [check.verdict for check in after.pairs]
    assert loss.item() < 1e-3


