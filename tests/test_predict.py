"""Batch prediction (``equipot.predict``, ``equipot-predict``): per structure what the
calculator gives, whatever the batching; bad input named and nothing written."""

import ase.io
import numpy as np
import pytest
from ase.build import molecule

from equipot import EquipotCalculator, predict
from equipot.cli.predict import main
from equipot.errors import EquipotInputError
from equipot.model.checkpoint import save_model
from equipot.model.ensemble import Ensemble, EnsembleOptions
from equipot.predict import batches_by_atoms

from conftest import MODEL_CONFIG, make_cu_cell, make_cu_slab, make_ethanol, make_model


def mixed_structures():
    """Molecules of 9, 5 and 1 atoms, a triclinic Cu cell (stress), a slab, another cell."""
    water_in_box = molecule("H2O")
    water_in_box.cell = [6.0, 6.0, 6.0]  # a cell but no periodicity: no stress
    methane = molecule("CH4")
    methane.rattle(0.05, seed=4)
    return [make_ethanol(1), methane, make_cu_cell(2), molecule("H2O")[:1], make_cu_slab(3),
            water_in_box, make_cu_cell(5), make_ethanol(6)]


def calculator_results(model, structures):
    calculator = EquipotCalculator(model)
    results = []
    for atoms in structures:
        calculator.calculate(atoms.copy(), ["energy"])
        results.append(dict(calculator.results))
    return results


@pytest.mark.parametrize("batch_size", [1, 12, 10_000])
def test_every_structure_gets_the_calculators_results(batch_size):
    model = make_model({**MODEL_CONFIG, "energy_terms": [{"name": "zbl"}]})
    structures = mixed_structures()
    expected = calculator_results(model, structures)
    predicted = predict(model, structures, batch_size=batch_size)
    assert len(predicted) == len(structures)
    for atoms, got, want in zip(structures, predicted, expected):
        assert set(got) == set(want), atoms.get_chemical_formula()
        assert ("stress" in got) == (bool(atoms.pbc.any()) and atoms.cell.volume > 0)
        for name, value in want.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-10, atol=1e-12, err_msg=name)


def test_an_ensembles_uncertainties_come_per_structure():
    members = [make_model(seed=seed) for seed in (0, 1)]
    ensemble = Ensemble(members[0].config, members, EnsembleOptions(size=2)).eval()
    structures = mixed_structures()
    expected = calculator_results(ensemble, structures)
    for got, want in zip(predict(ensemble, structures, batch_size=20), expected):
        assert want["energy_uncertainty"] > 0
        for name in ("energy_uncertainty", "forces_uncertainty", "energies_uncertainty"):
            np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12)


def test_batches_hold_whole_structures_up_to_the_atom_count_in_order():
    sizes = [3, 4, 2, 9, 1, 1, 5]
    batches = list(batches_by_atoms(sizes, 6))
    assert batches == [[0], [1, 2], [3], [4, 5], [6]]
    assert [index for batch in batches for index in batch] == list(range(len(sizes)))


def test_cli_writes_every_prediction_and_keeps_the_labels(tmp_path):
    model = make_model()
    save_model(tmp_path / "model.pt", model)
    structures = mixed_structures()
    structures[0].info["energy"] = -1.5  # a label of the input: kept as it was
    ase.io.write(tmp_path / "in.xyz", structures)
    main([str(tmp_path / "model.pt"), str(tmp_path / "in.xyz"), "-o", str(tmp_path / "out.xyz"),
          "--batch-size", "7", "--dtype", "float64", "--no-progress"])
    written = ase.io.read(tmp_path / "out.xyz", ":")
    expected = calculator_results(model, ase.io.read(tmp_path / "in.xyz", ":"))
    assert written[0].calc.results["energy"] == -1.5  # ASE reads labels into a calculator
    for atoms, want in zip(written, expected):  # extended XYZ keeps arrays to 8 decimals
        assert atoms.info["equipot_energy"] == pytest.approx(want["energy"], rel=1e-12)
        np.testing.assert_allclose(atoms.arrays["equipot_forces"], want["forces"], atol=1e-8)
        np.testing.assert_allclose(atoms.arrays["equipot_energies"], want["energies"],
                                   atol=1e-8)
        if "stress" in want:
            np.testing.assert_allclose(atoms.info["equipot_stress"], want["stress"], atol=1e-10)
        else:
            assert "equipot_stress" not in atoms.info


@pytest.mark.parametrize("problem", ["overlap", "element"])
def test_a_bad_structure_is_named_and_nothing_is_written(tmp_path, problem):
    model = make_model()
    save_model(tmp_path / "model.pt", model)
    structures = mixed_structures()
    if problem == "overlap":
        structures[4].positions[1] = structures[4].positions[0] + 0.01
    else:
        structures[4].numbers[0] = 79  # gold: unknown to the model
    ase.io.write(tmp_path / "in.xyz", structures)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "model.pt"), str(tmp_path / "in.xyz"), "-o",
              str(tmp_path / "out.xyz"), "--no-progress"])
    message = str(exit_info.value)
    assert "in.xyz" in message and "structure 4" in message, message
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.xyz", "model.pt"]


def test_batch_size_must_be_a_positive_number_of_atoms():
    with pytest.raises(ValueError, match="atoms"):
        predict(make_model(), [make_ethanol()], batch_size=0)


def test_errors_name_the_source_and_index():
    structures = [make_ethanol(), make_ethanol()]
    structures[1].positions[0, 0] = np.nan
    with pytest.raises(EquipotInputError, match="structure 1"):
        predict(make_model(), structures, source="frames.xyz")
