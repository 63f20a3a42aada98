"""The fine-tuning options as the command line gives them: invalid choices and unknown keys
fail before any data is read, and ``finetune.source=…`` alone takes the fine-tuning recipe."""

from __future__ import annotations

import sys

import pytest

from equipot.cli import train as train_cli
from equipot.errors import EquipotInputError
from equipot.train.config import check_config, composed


def test_invalid_fine_tuning_options_are_refused_with_the_choices():
    settings = composed("data.train=x.xyz", "finetune.shift=bogus",
                        "+finetune.replay.per_batches=2")
    with pytest.raises(EquipotInputError) as error:
        check_config(settings)
    message = str(error.value)
    assert "finetune.shift=bogus is not one of: keep, refit" in message
    assert "did you mean finetune.replay.per_batch?" in message


def test_the_recipe_lowers_the_learning_rate():
    assert composed("data.train=x.xyz", "recipe=finetune")["optimizer"]["lr"] < \
        composed("data.train=x.xyz")["optimizer"]["lr"]


@pytest.mark.parametrize("arguments, recipe", [
    (["finetune.source=m.pt", "data.train=x.xyz"], ["recipe=finetune"]),
    (["finetune.source=m.pt", "recipe=short_budget"], []),
    (["data.train=x.xyz"], []),
])
def test_a_fine_tuning_command_takes_the_fine_tuning_recipe(arguments, recipe, monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "argv", ["equipot-train", *arguments])
    monkeypatch.setattr(train_cli, "hydra_main", lambda: seen.append(list(sys.argv[1:])))
    train_cli.main()
    assert seen == [arguments + recipe]
