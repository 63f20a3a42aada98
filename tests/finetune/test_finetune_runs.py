"""``equipot-train finetune.source=…`` end to end, on EMT-labelled Cu (the source) and Cu–Au
cells (the new data, with an element the source lacks): the run takes the source's
architecture, refuses model overrides, keeps frozen parameters bit for bit, replays the
source's data in every batch and scores it at every validation, records its lineage, and
gives a model that loads, saves and runs MD; ``equipot-evaluate --against source`` scores both
side by side."""

from __future__ import annotations

import csv
import json

import ase.io
import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

import equipot
from equipot.data.dataset import GraphDataset
from equipot.data.replay import ReplayCollater, aligned
from equipot.datasets.emt import label_with_emt
from equipot.errors import EquipotInputError
from equipot.model.checkpoint import read_checkpoint

from conftest import enter_workdir, train_here, write_copper_splits

SMALL = ["trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "data.batch_size=4",
         "short_range.fail_on_error=false", "dimer_repulsion=null"]
SOURCE = [*SMALL, "model.cutoff=4.0", "model.num_features=16", "model.num_blocks=1",
          "model.block_options.num_filters=16", "trainer.max_epochs=2",
          "data.train=train.xyz", "data.valid=valid.xyz", "data.test=test.xyz"]
TUNE = [*SMALL, "recipe=finetune", "finetune.source=source/model.pt", "data.train=cuau.xyz",
        "data.valid=cuau_valid.xyz", "trainer.max_epochs=3"]


def copper_gold(count: int, seed: int) -> list:
    """Rattled 4-atom fcc cells, one atom Au, EMT labels."""
    rng = np.random.default_rng(seed)
    made = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
        atoms.numbers[0] = 79
        atoms.rattle(0.08, seed=int(rng.integers(1 << 20)))
        made.append(label_with_emt(atoms))
    return made


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    directory = write_copper_splits(tmp_path_factory.mktemp("finetune"))
    ase.io.write(directory / "cuau.xyz", copper_gold(12, seed=0))
    ase.io.write(directory / "cuau_valid.xyz", copper_gold(4, seed=1))
    with pytest.MonkeyPatch.context() as patch:
        enter_workdir(directory, patch)
        train_here(SOURCE, directory / "source")
        train_here([*TUNE, "finetune.freeze=[blocks.0.*]", "finetune.replay.per_batch=2",
                    "finetune.replay.reported=4"], directory / "tuned")
    return directory


@pytest.fixture(autouse=True)
def in_workdir(workdir, monkeypatch):
    enter_workdir(workdir, monkeypatch)


def test_frozen_parameters_are_bit_identical_and_the_others_trained(workdir):
    source = read_checkpoint(workdir / "source" / "model.pt")["state_dict"]
    tuned = read_checkpoint(workdir / "tuned" / "model.pt")["state_dict"]
    frozen = [name for name in source if name.startswith("blocks.0.")]
    assert frozen
    for name in frozen:
        assert torch.equal(tuned[name], source[name]), name
    readout = [name for name in source if name.startswith("readouts.")]
    assert any(not torch.equal(tuned[name], source[name]) for name in readout)


def test_the_run_records_its_lineage_and_takes_the_source_architecture(workdir):
    tuned = equipot.load(workdir / "tuned" / "model.pt")
    lineage = tuned.metadata["finetune"]
    assert lineage["source"]["path"] == str((workdir / "source" / "model.pt").resolve())
    assert lineage["source"]["data"]["train"].endswith("train.xyz")
    assert lineage["added_species"] == [79] and tuned.species == [29, 79]
    assert lineage["options"]["freeze"] == ["blocks.0.*"]
    source = equipot.load(workdir / "source" / "model.pt")
    assert tuned.config["num_features"] == source.config["num_features"] == 16
    assert json.loads((workdir / "tuned" / "finetune.json").read_text()) == lineage


def test_the_source_data_is_scored_at_every_validation(workdir):
    rows = list(csv.DictReader(open(workdir / "tuned" / "logs" / "metrics.csv")))
    scored = [row["source/forces_mae"] for row in rows if row.get("source/forces_mae")]
    assert len(scored) == 3 and all(float(value) > 0 for value in scored)


def test_replayed_structures_join_every_batch_with_their_weight(workdir):
    new = GraphDataset.from_atoms(copper_gold(3, seed=2), 4.0)
    pool = GraphDataset.from_atoms(ase.io.read(workdir / "train.xyz", ":5"), 4.0)
    del pool.tensors["stress"], pool.tensors["has_stress"]  # a label the pool lacks
    collate = ReplayCollater(aligned(pool, new, weight=0.25), per_batch=2)
    batch = collate([new[0], new[1]])
    assert batch.num_graphs == 4
    assert batch["weight"].tolist() == [1.0, 1.0, 0.25, 0.25]
    assert batch["has_stress"].tolist() == [True, True, False, False]


def test_a_model_override_is_refused(workdir):
    with pytest.raises(EquipotInputError, match="takes its model from"):
        train_here([*TUNE, "model.num_features=8"], workdir / "refused")


def test_the_tuned_model_with_a_new_element_loads_saves_and_runs_md(workdir, tmp_path):
    tuned = equipot.load(workdir / "tuned" / "model.pt", dtype=torch.float64)
    equipot.save_model(tmp_path / "again.pt", tuned, tuned.metadata)
    atoms = copper_gold(1, seed=3)[0].repeat(2)
    atoms.calc = equipot.EquipotCalculator(equipot.load(tmp_path / "again.pt",
                                                         dtype=torch.float64))
    start = atoms.get_total_energy()
    VelocityVerlet(atoms, 0.5 * units.fs).run(40)
    assert abs(atoms.get_total_energy() - start) / len(atoms) < 1e-3


def test_evaluate_scores_the_source_beside_the_tuned_model(workdir, capsys):
    from equipot.cli.evaluate import main

    main(["tuned/model.pt", "test.xyz", "--against", "source", "--output-dir", "compared"])
    report = json.loads((workdir / "compared" / "metrics.json").read_text())
    assert report["against"]["model"] == str((workdir / "source" / "model.pt").resolve())
    assert report["metrics"]["forces_mae"] != report["against"]["metrics"]["forces_mae"]
    assert "source/model.pt" in capsys.readouterr().out


def test_a_resumed_fine_tuning_run_keeps_its_lineage_and_replay(workdir, capsys):
    import shutil

    shutil.copytree(workdir / "tuned", workdir / "resumed")
    train_here(["resume=resumed", "trainer.max_epochs=4"], workdir / "resumed")
    assert "replaying 2 of" in capsys.readouterr().out
    tuned = equipot.load(workdir / "resumed" / "model.pt")
    assert tuned.metadata["finetune"]["source"]["path"].endswith("source/model.pt")
    assert tuned.metadata["epochs"] == 4


def test_evaluate_compares_on_the_structures_the_source_knows(workdir, capsys):
    from equipot.cli.evaluate import main

    ase.io.write(workdir / "mixed.xyz", ase.io.read(workdir / "test.xyz", ":3")
                 + copper_gold(2, seed=4))
    main(["tuned/model.pt", "mixed.xyz", "--against", "source", "--output-dir", "mixed_out"])
    report = json.loads((workdir / "mixed_out" / "metrics.json").read_text())
    assert report["num_structures"] == 5 and report["against"]["num_structures"] == 3
    assert "side by side on the 3 structures" in capsys.readouterr().out


def test_a_float64_source_fine_tunes_in_float64(workdir):
    train_here([*SOURCE, "dtype=float64", "trainer.max_epochs=1"], workdir / "source64")
    tune = [item for item in TUNE if not item.startswith(("finetune.source=", "trainer.max"))]
    train_here([*tune, "finetune.source=source64/model.pt", "trainer.max_epochs=1"],
               workdir / "tuned64")
    assert equipot.load(workdir / "tuned64" / "model.pt").dtype == torch.float64
