"""Data paths a model file records: a bundled file is recorded as ``bundled:<name>`` so that
another installation of equipot finds its own copy (fine-tuning replays the source's data from
this record); any other path as given."""

from __future__ import annotations

from equipot.datasets import bundled, located, portable
from equipot.finetune.replay import source_data

NAME = "acac/train_300K.xyz"


def test_a_bundled_file_is_recorded_by_name_and_found_again():
    recorded = portable(bundled(NAME))
    assert recorded == f"bundled:{NAME}"
    assert located(recorded) == bundled(NAME)


def test_other_paths_are_recorded_as_given(tmp_path):
    for path in ("train.xyz", str(tmp_path / "train.xyz"), None):
        assert portable(path) == path
        assert located(path) == path


def test_replay_finds_the_bundled_file_a_source_recorded():
    lineage = {"source": {"data": {"train": f"bundled:{NAME}"}}}
    assert source_data({"replay": {"data": None}}, lineage) == bundled(NAME)
    assert source_data({"replay": {"data": "mine.xyz"}}, lineage) == "mine.xyz"
