"""The model a fine-tuning run starts from (``equipot.finetune``): with every statistic kept it
predicts exactly what the source predicts (float64, 1e-12); refitted reference energies, shift
and scale recover the values that generated the labels (the network fixed, labels made by the
model itself with known changes); a new element's E0 is fitted without touching the old ones."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from equipot import keys
from equipot.data.dataset import GraphDataset
from equipot.errors import EquipotInputError
from equipot.finetune.source import starting_model
from equipot.finetune.species import with_species
from equipot.finetune.statistics import refit_statistics, with_statistics
from equipot.model.checkpoint import save_model

from conftest import MODEL_CONFIG, evaluate, make_model

KEEP = {"reference_energies": "keep", "shift": "keep", "scale": "keep"}
CONFIG = {**MODEL_CONFIG, "species": [8, 29], "reference_energies": [-3.0, -4.0],
          "energy_terms": [{"name": "zbl"}]}


def structures(count: int = 8, gold: bool = False) -> list[Atoms]:
    """Rattled fcc Cu cells with an O interstitial (and an Au atom: ``gold``)."""
    rng = np.random.default_rng(7)
    made = []
    for index in range(count):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms += Atoms("O", positions=[[0.9, 0.9, 0.9]])
        if gold and index % 2:
            atoms.numbers[1] = 79
        atoms.rattle(0.05, seed=int(rng.integers(1 << 20)))
        made.append(atoms)
    return made


def labelled_by(model, atoms_list, energy_offset=lambda atoms: 0.0) -> GraphDataset:
    """``atoms_list`` labelled with ``model``'s energies (plus ``energy_offset``) and forces."""
    for atoms in atoms_list:
        out = evaluate(model, atoms)
        atoms.calc = SinglePointCalculator(atoms, energy=float(out[keys.ENERGY][0])
                                           + energy_offset(atoms), forces=out[keys.FORCES])
    return GraphDataset.from_atoms(atoms_list, model.cutoff)


@pytest.fixture(scope="module")
def source():
    return make_model(CONFIG)


def test_kept_statistics_predict_exactly_what_the_source_predicts(source, tmp_path):
    path = tmp_path / "source.pt"
    save_model(path, source, {"dtype": "float64", "data": {"train": "old.xyz"}})
    new = labelled_by(source, structures(), lambda atoms: 0.5 * len(atoms))  # any labels
    start = starting_model({"source": str(path), **KEEP}, new, None, "float64")
    for atoms in structures(3):
        before, after = evaluate(source, atoms, stress=True), evaluate(start, atoms, stress=True)
        for name in (keys.ENERGY, keys.FORCES, keys.STRESS):
            np.testing.assert_allclose(after[name], before[name], rtol=1e-12, atol=1e-12)
    lineage = start.metadata["finetune"]
    assert lineage["source"]["path"] == str(path.resolve())
    assert lineage["source"]["data"] == {"train": "old.xyz"} and lineage["added_species"] == []


def test_refitted_reference_energies_shift_and_scale_recover_the_labels_changes(source):
    offsets = {8: 0.7, 29: -0.2}  # eV per atom of each element
    target = with_statistics(source, scale=1.3 * source.scale)
    data = labelled_by(target, structures(),
                       lambda atoms: sum(offsets[z] for z in atoms.numbers) + 0.05 * len(atoms))
    refit = refit_statistics(source, data, {"reference_energies": "refit", "shift": "refit",
                                            "scale": "refit"})
    assert refit.scale == pytest.approx(1.3 * source.scale, rel=1e-9)
    # E0 absorbs the per-atom constant too: one O and four Cu per cell, so only the sums
    # E0(O) + 4 E0(Cu) (and the energies) are determined; the shift residual is then zero.
    for atoms in structures(3):
        np.testing.assert_allclose(evaluate(refit, atoms)[keys.ENERGY],
                                   evaluate(target, atoms)[keys.ENERGY]
                                   + sum(offsets[z] for z in atoms.numbers) + 0.05 * 5,
                                   rtol=0, atol=1e-8)
    shifted = refit_statistics(source, labelled_by(source, structures(),
                                                   lambda atoms: 0.05 * len(atoms)),
                               {**KEEP, "shift": "refit"})
    assert shifted.shift == pytest.approx(source.shift + 0.05, abs=1e-10)
    assert shifted.config["reference_energies"] == source.config["reference_energies"]


def test_reference_energies_from_isolated_atoms(source):
    data = labelled_by(source, structures(4))
    taken = refit_statistics(source, data, {**KEEP, "reference_energies": "isolated_atoms"},
                             isolated_atoms={8: -1.5, 29: -2.5})
    assert taken.config["reference_energies"] == [-1.5, -2.5]
    with pytest.raises(EquipotInputError, match="no isolated-atom energy for atomic numbers"):
        refit_statistics(source, data, {**KEEP, "reference_energies": "isolated_atoms"},
                         isolated_atoms={8: -1.5})


def test_a_new_elements_reference_energy_is_fitted_and_the_old_ones_kept(source):
    extended = with_species(source, [79])
    truth = with_statistics(extended, reference_energies=[-3.0, -4.0, -6.25])
    data = labelled_by(truth, structures(gold=True))
    fitted = refit_statistics(extended, data, KEEP, new_species=(79,))
    np.testing.assert_allclose(fitted.config["reference_energies"], [-3.0, -4.0, -6.25],
                               atol=1e-9)
