"""The training config, checked before any data is read.

Every key must be one that some component reads, and every choice one that exists: a typo
(``+model.num_featurs=64``), a dtype or optimizer that does not exist, fails at once with the
valid options listed, instead of being stored and ignored or failing after the data is loaded.
The keys a component reads are those its constructor takes (the arguments its caller fills in
itself excluded), or, for block families and energy terms, the fields of their declared
``Options``; the rest of the root config is listed here.

Every default is written once. A training run's settings (data, recipe, trainer): in the YAML
files under ``configs/``; the components they configure take each as a required argument, and
``composed()`` gives them to Python callers. The options of block families and energy terms:
in their ``Options`` dataclasses, which model files without an option also rely on; the configs
read them from there (``register_config_sources``) and state only where a model differs.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from inspect import signature
from pathlib import Path

import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from equipot.blocks.ewald_messages import EwaldMessagePassing
from equipot.blocks.registry import FAMILIES
from equipot.data.datamodule import AtomisticDataModule
from equipot.data.reading import LabelKeys, WeightKeys
from equipot.datasets import bundled
from equipot.errors import EquipotInputError
from equipot.model.build import ARCHITECTURE, DTYPES, STATISTICS, option_names
from equipot.physics.distance_floor import DEFAULT_WIDTHS, DistanceFloorOptions
from equipot.physics.registry import ENERGY_TERMS
from equipot.train.dimer_repulsion import DimerRepulsion
from equipot.train.loss import PENALTIES, WeightedLoss, weight_options
from equipot.train.module import OPTIMIZERS
from equipot.train.schedule import SCHEDULERS
from equipot.train.stages import StageTwo

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")  # a link to configs/
ROOT = ("seed", "dtype", "resume", "overwrite", "compile", "ema_decay", "loss", "optimizer",
        "scheduler", "dimer_repulsion", "stage_two", "short_range", "ensemble", "uncertainty",
        "model", "data", "trainer", "finetune")
OPTIMIZER = ("name", "lr", "weight_decay")
SCHEDULER = ("name", "factor", "patience", "min_lr")
SHORT_RANGE = ("fail_on_error",)
ENSEMBLE = ("size",)
UNCERTAINTY = ("llpr",)
FINETUNE = ("source", "reference_energies", "shift", "scale", "freeze", "replay")
REPLAY = ("data", "per_batch", "weight", "reported")
# How a fine-tuning run sets each statistic (equipot.finetune.statistics).
REFITS = {"reference_energies": ("keep", "refit", "isolated_atoms"),
          "shift": ("keep", "refit"), "scale": ("keep", "refit")}
TRAINER_EXTRA = ("early_stopping_patience",)  # read by equipot-train, not by pl.Trainer


def register_config_sources() -> None:
    """What the YAML configs read from Python: ``${bundled:name}``, the path of a file bundled
    with equipot; the config groups ``model/block_options/<family>`` and
    ``energy_term/<term>``, each the defaults of that family's or term's ``Options``;
    ``distance_floor/default``, the defaults of ``DistanceFloorOptions``;
    ``data/weight_keys/default``, those of ``WeightKeys``; and, for every label of the field
    registry, ``data/label_keys/default`` (``<label>_key``: under its
    own name) and ``loss_weights/zero`` (``<label>_weight``: 0), so a new label is a config
    option with no YAML line."""
    if not OmegaConf.has_resolver("bundled"):
        OmegaConf.register_new_resolver("bundled", bundled)
    store = ConfigStore.instance()
    for name, family in FAMILIES.items():
        store.store(group="model/block_options", name=name, node=asdict(family.options()))
    for name, term in ENERGY_TERMS.items():
        store.store(group="energy_term", name=name, node=asdict(term.Options()))
    store.store(group="distance_floor", name="default", node=asdict(DistanceFloorOptions()))
    store.store(group="data/weight_keys", name="default",
                node={"weight_key": WeightKeys.weight, "config_type_key": WeightKeys.config_type})
    store.store(group="data/label_keys", name="default",
                node={f"{name}_key": key for name, key in LabelKeys().items()})
    store.store(group="loss_weights", name="zero", node=dict.fromkeys(weight_options(), 0.0))


def composed(*overrides: str) -> dict:
    """The resolved root config of equipot-train under command-line ``overrides`` (e.g.
    ``"recipe=short_budget"``): every default of a run, as ``configs/`` writes it."""
    register_config_sources()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return OmegaConf.to_container(compose("train", overrides=list(overrides)), resolve=True)


def options(component: Callable, supplied: Iterable[str] = ()) -> list[str]:
    """The keyword arguments ``component`` takes, less those its caller ``supplied``."""
    return [name for name in signature(component).parameters if name not in set(supplied)]


def check_config(settings: Mapping) -> None:
    """Raise one error listing every unknown key and invalid choice of ``settings`` (the
    resolved root config of equipot-train), and a missing ``data.train``."""
    problems: list[str] = []
    check_keys(settings, ROOT, "", problems)
    check_choice(settings, "dtype", DTYPES, problems)
    sections = {
        "loss": options(WeightedLoss, ("weights",)) + list(weight_options()),
        "optimizer": OPTIMIZER, "scheduler": SCHEDULER,
        "dimer_repulsion": options(DimerRepulsion, ("species", "shortest_distances", "floors")),
        "stage_two": options(StageTwo, ("schedule", "max_seconds", "weights"))
                     + list(weight_options()),
        "short_range": SHORT_RANGE, "ensemble": ENSEMBLE, "uncertainty": UNCERTAINTY,
        "finetune": FINETUNE,
        "data": options(AtomisticDataModule, ("cutoff", "seed", "label_keys"))
                + list(LabelKeys.options()),
        "trainer": options(pl.Trainer) + list(TRAINER_EXTRA)}
    for section, allowed in sections.items():
        if isinstance(settings.get(section), Mapping):
            check_keys(settings[section], allowed, f"{section}.", problems)
    check_choice(settings.get("loss") or {}, "kind", PENALTIES, problems, "loss.")
    optimizer = dict(settings.get("optimizer") or {})
    if isinstance(optimizer.get("name"), str):
        optimizer["name"] = optimizer["name"].lower()
    check_choice(optimizer, "name", OPTIMIZERS, problems, "optimizer.")
    check_choice(settings.get("scheduler") or {}, "name", SCHEDULERS, problems, "scheduler.")
    if isinstance(settings.get("model"), Mapping):
        check_model(settings["model"], problems)
    finetune = settings.get("finetune") or {}
    for option, choices in REFITS.items():
        check_choice(finetune, option, choices, problems, "finetune.")
    if isinstance(finetune.get("replay"), Mapping):
        check_keys(finetune["replay"], REPLAY, "finetune.replay.", problems)
    size = (settings.get("ensemble") or {}).get("size", 1)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        problems.append(f"ensemble.size must be a whole number of members ≥ 1, got {size!r}")
    data = settings.get("data") or {}
    if data.get("train") in (None, "???") and not settings.get("resume"):
        problems.append("data.train is required: the file of training structures "
                        "(data.train=my.xyz)")
    if problems:
        raise EquipotInputError("invalid config:\n  " + "\n  ".join(problems))


def check_model(model: Mapping, problems: list[str]) -> None:
    """Keys of the model section, its block's options and its energy terms'."""
    check_keys(model, ARCHITECTURE + STATISTICS, "model.", problems)
    if not check_choice(model, "block", FAMILIES, problems, "model.", required=True):
        return
    block_options = model.get("block_options") or {}
    check_keys(block_options, option_names(FAMILIES[model["block"]].options),
               "model.block_options.", problems, f"the {model['block']} block")
    for term, where in energy_term_entries(model.get("energy_terms")):
        if not isinstance(term, Mapping):
            problems.append(f"{where.rstrip('.')} must be a mapping of options, got {term!r}")
        elif check_choice(term, "name", ENERGY_TERMS, problems, where, required=True):
            allowed = ["name"] + option_names(ENERGY_TERMS[term["name"]].Options)
            check_keys(term, allowed, where, problems, f"energy term {term['name']}")
    floor = model.get("distance_floor")
    if isinstance(floor, Mapping):
        check_keys(floor, option_names(DistanceFloorOptions), "model.distance_floor.", problems)
        check_choice(floor, "at", DEFAULT_WIDTHS, problems, "model.distance_floor.")
    if isinstance(model.get("long_range_messages"), Mapping):
        check_keys(model["long_range_messages"], options(EwaldMessagePassing, ("irreps",)),
                   "model.long_range_messages.", problems)


def energy_term_entries(terms) -> list[tuple[object, str]]:
    """(entry, where it is written) of every energy term, in the keyed form of the configs
    ({name: options}, null entries off) or the list form of model files ([{name, ...}])."""
    if isinstance(terms, Mapping):
        return [({"name": name, **options} if isinstance(options, Mapping) else options,
                 f"model.energy_terms.{name}.")
                for name, options in terms.items() if options is not None]
    return [(term, f"model.energy_terms[{index}].") for index, term in enumerate(terms or [])]


def check_keys(section: Mapping, allowed: Iterable[str], prefix: str, problems: list[str],
               owner: str | None = None) -> None:
    """One problem per key of ``section`` outside ``allowed``, with the closest valid one."""
    allowed = list(allowed)
    owner = owner or prefix.rstrip(".") or "the root config"
    for key in section:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            problems.append(f"unknown key {prefix}{key}{hint}; {owner} takes: "
                            f"{', '.join(allowed)}")


def check_choice(section: Mapping, key: str, valid: Iterable[str], problems: list[str],
                 prefix: str = "", required: bool = False) -> bool:
    """Whether ``section[key]`` is one of ``valid``; a problem listing them if not (and if
    it is absent, when ``required``)."""
    valid = sorted(valid)
    if section.get(key) in valid:
        return True
    if key not in section and not required:
        return False
    problems.append(f"{prefix}{key}={section.get(key)} is not one of: {', '.join(valid)}")
    return False
