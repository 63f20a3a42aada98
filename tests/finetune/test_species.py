"""A model that gains elements (``equipot.finetune.species``): every family, with the ZBL
prior, the distance floor and learned charges, predicts on structures of its old elements
exactly what it predicted before (float64, 1e-10), although the new elements shift the old
ones' species indices; the new elements' predictions are finite and their forces are the
derivatives of their energy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from torch import nn

from equipot import keys
from equipot.blocks.registry import FAMILIES
from equipot.finetune.species import with_species
from equipot.nn.species_rows import take_species_from

from conftest import MODEL_CONFIG, evaluate, fd_forces, make_model

OLD = [1, 8, 29]
PHYSICS = {"energy_terms": [{"name": "zbl"}], "distance_floor": {},
           "shortest_distances": [[0.7, 0.9, 1.5], [0.9, 1.2, 1.8], [1.5, 1.8, 2.3]]}
VARIANTS = {**{family: {} for family in sorted(FAMILIES)},
            "painn+charges": {"block": "painn",
                              "energy_terms": [{"name": "zbl"}, {"name": "electrostatics"}]}}


def old_structures() -> list[Atoms]:
    water = molecule("H2O")
    water.rattle(0.05, seed=4)
    cluster = Atoms("Cu3O", positions=[[0, 0, 0], [2.4, 0, 0], [1.2, 2.0, 0], [1.2, 0.7, 1.6]])
    cell = bulk("Cu", "fcc", a=3.6, cubic=True)
    cell += Atoms("OH", positions=[[0.9, 0.9, 0.9], [1.5, 1.2, 1.3]])
    cell.rattle(0.05, seed=5)
    return [water, cluster, cell]


def source_model(variant: str) -> torch.nn.Module:
    options = VARIANTS[variant]
    config = {**MODEL_CONFIG, **PHYSICS, "block": options.get("block", variant),
              "species": OLD, "reference_energies": [-1.0, -3.0, -4.0],
              "energy_terms": options.get("energy_terms", PHYSICS["energy_terms"])}
    model = make_model(config)
    if "electrostatics" in variant or "charges" in variant:
        with torch.no_grad():  # non-zero q_0, so that their rows must move with the species
            model.energy_terms[1].species_charges.copy_(torch.tensor([0.3, -0.5, 0.2]))
    return model


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_adding_elements_leaves_old_predictions_unchanged(variant):
    source = source_model(variant)
    extended = with_species(source, [6, 79], shortest_distances=[[1.1]], distances_species=[6])
    assert extended.species == [1, 6, 8, 29, 79]
    assert extended.config["reference_energies"] == [-1.0, 0.0, -3.0, -4.0, 0.0]
    assert extended.config["shortest_distances"][1][1] == 1.1  # C–C, from the new data
    assert extended.config["shortest_distances"][3][2] == 1.8  # Cu–O, the source's
    for atoms in old_structures():
        before = evaluate(source, atoms, stress=atoms.pbc.any())
        after = evaluate(extended, atoms, stress=atoms.pbc.any())
        for name in (keys.ENERGY, keys.FORCES, keys.STRESS):
            if name in before:
                np.testing.assert_allclose(after[name], before[name], rtol=1e-10, atol=1e-10,
                                           err_msg=f"{variant}: {name}")


@pytest.mark.parametrize("variant", ["mace", "nequip"])
def test_a_new_element_gets_finite_energies_and_true_forces(variant):
    extended = with_species(source_model(variant), [6])
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=6)
    out = evaluate(extended, atoms)
    assert np.isfinite(out[keys.ENERGY]).all()
    scale = np.abs(out[keys.FORCES]).max()  # the scaled-up test weights: up to 100 eV/Å
    np.testing.assert_allclose(out[keys.FORCES], fd_forces(extended, atoms), atol=1e-6 * scale)
    with_carbon = evaluate(extended, atoms)[keys.ATOMIC_ENERGIES][atoms.numbers == 6]
    assert np.abs(with_carbon).max() > 0  # the new rows are initialised, not zero


def test_a_per_species_parameter_without_take_species_is_refused():
    class Undeclared(nn.Module):
        def __init__(self, num_species):
            super().__init__()
            self.table = nn.Parameter(torch.zeros(num_species, 4))

    with pytest.raises(ValueError, match="parameter table .* declares no take_species"):
        take_species_from(Undeclared(4), Undeclared(3), torch.tensor([0, 2, 3]))
