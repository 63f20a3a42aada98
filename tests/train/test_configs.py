"""The Hydra configs compose: model configs hold the architecture, the physics group the
energy terms (keyed, so they merge), the recipe group how to train."""

from dataclasses import asdict
from inspect import Parameter, signature
from pathlib import Path

import pytest
import yaml

from equipot.blocks.registry import FAMILIES
from equipot.data.datamodule import AtomisticDataModule
from equipot.data.reading import WeightKeys
from equipot.errors import EquipotInputError
from equipot.model.build import listed_energy_terms
from equipot.physics.distance_floor import DistanceFloorOptions
from equipot.physics.registry import ENERGY_TERMS
from equipot.train import config as train_config
from equipot.train.config import check_config
from equipot.train.dimer_repulsion import DimerRepulsion
from equipot.train.loss import WeightedLoss
from equipot.train.module import PotentialModule

CONFIGS = Path(train_config.CONFIG_DIR)
EXPERIMENTS = sorted(str(path.relative_to(CONFIGS / "experiment").with_suffix(""))
                     for path in (CONFIGS / "experiment").rglob("*.yaml"))


def composed(*overrides):
    return train_config.composed("data.train=x.xyz", *overrides)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_into_a_valid_config(experiment):
    check_config(composed(f"experiment={experiment}"))


def test_model_configs_hold_the_architecture_only():
    for path in sorted((CONFIGS / "model").glob("*.yaml")):
        keys = set(yaml.safe_load(path.read_text()))
        assert not keys & {"energy_terms", "distance_floor",
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
    assert listed_energy_terms(bare["energy_terms"]) == [] and bare["distance_floor"] is None


def test_the_recipe_group_sets_how_to_train():
    default, short = composed(), composed("recipe=short_budget")
    assert default["scheduler"]["name"] == "plateau" and default["data"]["batch_size"] == 16
    assert short["scheduler"]["name"] == "cosine" and short["data"]["batch_size"] == 8
    assert short["trainer"]["max_time"] == "00:00:06:30"
    assert composed("experiment=ethanol_schnet")["optimizer"] == short["optimizer"]


def python_defaults(component) -> set[str]:
    return {name for name, parameter in signature(component).parameters.items()
            if parameter.default is not Parameter.empty}


def test_the_defaults_of_a_run_are_written_in_the_yaml_only():
    run = composed()
    for section, component in [("loss", WeightedLoss), ("dimer_repulsion", DimerRepulsion),
                               ("data", AtomisticDataModule)]:
        assert not python_defaults(component) & set(run[section]), section
    assert not python_defaults(PotentialModule) & {
        "dtype", "loss", "optimizer", "scheduler", "ema_decay", "dimer_repulsion"}


def raw_options(tree, path=()):
    """(where, name, options) of every block_options and energy term a YAML file writes."""
    if not isinstance(tree, dict):
        return
    for key, value in tree.items():
        if key == "block_options" and isinstance(value, dict):
            yield path, None, value
        elif key == "energy_terms" and isinstance(value, dict):
            for term, options in value.items():
                yield path, term, options or {}
        else:
            yield from raw_options(value, (*path, key))


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda path: path.name)
def test_no_config_restates_an_option_it_would_have_anyway(path):
    """Block and term options default in their Options dataclasses; a model or physics YAML
    states only what differs from them, an experiment only what differs from its model's."""
    group, *rest = path.relative_to(CONFIGS).parts
    name = str(Path(*rest).with_suffix("")) if rest else None
    selection = {"model": f"model={name}", "experiment": f"experiment={name}"}
    block = composed(selection[group])["model"]["block"] if group in selection else None
    for _, term, options in raw_options(yaml.safe_load(path.read_text()) or {}):
        if term is not None:
            defaults = asdict(ENERGY_TERMS[term].Options())
        elif group == "experiment":
            defaults = composed(f"model={block}")["model"]["block_options"]
        else:
            defaults = asdict(FAMILIES[block].options())
        restated = {name for name, value in options.items() if defaults.get(name) == value}
        assert not restated, f"{path.name} restates {sorted(restated)}"


def test_block_and_term_options_come_from_their_dataclasses():
    for name, family in FAMILIES.items():
        assert composed(f"model={name}")["model"]["block_options"].keys() \
            == asdict(family.options()).keys()
    charged = composed("experiment=electrostatics")["model"]["energy_terms"]
    assert charged["electrostatics"] == asdict(ENERGY_TERMS["electrostatics"].Options())
    assert charged["zbl"] == asdict(ENERGY_TERMS["zbl"].Options())


def test_named_studies_share_an_equal_budget_arm_and_never_inherit_the_demo():
    for path in (CONFIGS / "experiment").rglob("*.yaml"):
        defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults", [])
        assert not [entry for entry in defaults
                    if isinstance(entry, str) and entry.startswith("ethanol_")], path.name
    for study in ("acac_mace", "3bpa_dimenet", "ethanol_schnet"):
        data, family = study.split("_")
        assert composed(f"experiment={study}") == composed(f"experiment=equal_budget/{family}",
                                                           f"data={data}")


def test_one_distance_floor_option_from_its_dataclass():
    assert composed()["model"]["distance_floor"] == asdict(DistanceFloorOptions())
    training = composed("model.distance_floor.at=training")["model"]["distance_floor"]
    assert training == {**asdict(DistanceFloorOptions()), "at": "training"}
    assert composed("model.distance_floor=null")["model"]["distance_floor"] is None
    with pytest.raises(EquipotInputError, match=r"model.distance_floor.at=wall is not one of"):
        check_config(composed("model.distance_floor.at=wall"))
    with pytest.raises(EquipotInputError, match=r"did you mean model.distance_floor.width"):
        check_config(composed("+model.distance_floor.widht=0.1"))


def test_weight_keys_come_from_their_dataclass():
    data = composed()["data"]
    assert (data["weight_key"], data["config_type_key"]) == (WeightKeys.weight,
                                                             WeightKeys.config_type)
