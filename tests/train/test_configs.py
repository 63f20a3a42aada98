"""The Hydra configs compose: model configs hold the architecture, the physics group the
energy terms (keyed, so they merge), the recipe group how to train."""

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from equipot.cli import train as train_cli
from equipot.model.build import listed_energy_terms
from equipot.train.config import check_config

CONFIGS = Path(train_cli.CONFIG_DIR)
EXPERIMENTS = sorted(path.stem for path in (CONFIGS / "experiment").glob("*.yaml"))


def composed(*overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        config = compose("train", overrides=["data.train=x.xyz", *overrides])
    return OmegaConf.to_container(config, resolve=True)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_into_a_valid_config(experiment):
    check_config(composed(f"experiment={experiment}"))


def test_model_configs_hold_the_architecture_only():
    for path in sorted((CONFIGS / "model").glob("*.yaml")):
        keys = set(yaml.safe_load(path.read_text()))
        assert not keys & {"energy_terms", "network_floor_factor", "distance_floor_width",
                           "loss", "optimizer"}, path.name


def test_energy_terms_merge_term_by_term():
    assert listed_energy_terms(composed()["model"]["energy_terms"]) == [
        {"name": "zbl", "inner_factor": 0.5, "outer_factor": 0.8}]
    both = composed("model=painn", "experiment=electrostatics")["model"]["energy_terms"]
    assert [term["name"] for term in listed_energy_terms(both)] == ["zbl", "electrostatics"]
    changed = composed("model.energy_terms.zbl.outer_factor=0.7")["model"]["energy_terms"]
    assert listed_energy_terms(changed)[0]["outer_factor"] == 0.7
    assert listed_energy_terms(composed("model.energy_terms.zbl=null")["model"]
                               ["energy_terms"]) == []
    bare = composed("physics=none")["model"]
    assert listed_energy_terms(bare["energy_terms"]) == [] and bare["network_floor_factor"] is None


def test_the_recipe_group_sets_how_to_train():
    default, short = composed(), composed("recipe=short_budget")
    assert default["scheduler"]["name"] == "plateau" and default["data"]["batch_size"] == 16
    assert short["scheduler"]["name"] == "cosine" and short["data"]["batch_size"] == 8
    assert short["trainer"]["max_time"] == "00:00:06:30"
    assert composed("experiment=ethanol_schnet")["optimizer"] == short["optimizer"]
