"""``equipot-train``: train a Potential from a Hydra config.

    equipot-train data.train=my.xyz model=schnet trainer.max_epochs=50
    equipot-train experiment=ethanol_schnet hydra.run.dir=runs/demo
    equipot-train resume=runs/demo trainer.max_epochs=100    # continue that run
    equipot-train finetune.source=runs/demo/model.pt data.train=new.xyz   # fine-tune it

The config is checked before any data is read (``equipot.train.config``). A new run needs a
run directory without another run's files (``overwrite=true`` replaces them); a resumed one
continues in its own (``equipot.train.run_directory``). The run directory receives the
resolved ``config.yaml``, ``split_indices.json`` (which structures of the training file went to
which split), CSV and TensorBoard logs, Lightning checkpoints, the final ``model.pt`` (of the
best validation epoch, EMA or raw weights, whichever validated better), ``test_metrics.json``
and the short-range report ``short_range/`` (``equipot.analysis.short_range``). Only global rank 0
writes. The run exits non-zero when training diverges (leaving ``last_finite_weights.pt``, no
``model.pt``) or the short-range check fails (after writing ``model.pt``; unless
``short_range.fail_on_error=false``).

A fine-tuning run (``finetune.source``, ``equipot.finetune``) takes its model from the source
file: the ``model`` section is the source's (``model=…``/``model.…`` overrides are refused),
so is the ``dtype`` unless one is given, the recipe is ``finetune`` unless another is named,
and ``finetune.json`` in the run directory records its lineage, which ``model.pt``'s metadata
carries as ``finetune``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from equipot.analysis.evaluation import evaluate, format_table
from equipot.analysis.short_range import banner, check_short_range, format_report
from equipot.cli import exit_on_error
from equipot.data.datamodule import AtomisticDataModule
from equipot.datasets import portable
from equipot.errors import EquipotInputError, EquipotRunError
from equipot.finetune.replay import add_source_data
from equipot.finetune.source import initial_weights, starting_model
from equipot.io import atomic_write_text
from equipot.model.build import listed_energy_terms
from equipot.model.checkpoint import read_checkpoint, save_model
from equipot.model.ensemble import Ensemble, EnsembleOptions
from equipot.model.potential import Potential
from equipot.train.config import CONFIG_DIR, check_config, register_config_sources
from equipot.train.divergence import TrainingDiverged
from equipot.train.freezing import describe_frozen
from equipot.train.module import PotentialModule
from equipot.train.progress import EpochPrinter, format_errors
from equipot.train.run_directory import (
    CHECKPOINTS,
    CONFIG,
    LAST_FINITE_WEIGHTS,
    MEMBERS,
    MODEL,
    ContinuingCSVLogger,
    find_checkpoint,
    is_launch_rank_zero,
    override_key,
    prepare_new_run,
    resumed_settings,
)
from equipot.train.schedule import budget_schedule, duration_seconds
from equipot.train.stages import StageTwo
from equipot.train.statistics import compute_statistics
from equipot.uncertainty.fitting import calibrate_ensemble, fit_llpr

SPLIT_INDICES = "split_indices.json"
FINETUNE = "finetune.json"  # a fine-tuning run's lineage: its source, options, statistics
register_config_sources()


def train(config: DictConfig | Mapping, run_dir: Path, overrides: Sequence[str] = ()) -> dict:
    """Train as ``config`` says, writing everything to ``run_dir`` (a resumed run: its own);
    returns the test metrics. ``overrides``: the command line's, which a resumed run checks.
    With ``ensemble.size`` K > 1, K members are trained one after the other from seeds
    seed … seed + K − 1 on the same split and statistics, each in ``members/<k>/``, and
    ``model.pt`` holds them all (``equipot.model.ensemble``)."""
    settings, run_dir, resumed = settle_run(config, run_dir, overrides)
    rank_zero = is_launch_rank_zero()
    size = int(settings["ensemble"]["size"])
    if size > 1 and resumed is not None:
        raise EquipotInputError("an ensemble run cannot be resumed yet: start it again, or "
                                "train its members as single runs", field="resume")
    pl.seed_everything(settings["seed"], workers=True)
    datamodule = AtomisticDataModule(cutoff=settings["model"]["cutoff"], seed=settings["seed"],
                                     **settings["data"])
    datamodule.setup()
    if rank_zero:
        print(datamodule.describe(), flush=True)
    finetune, initial, lineage = settings.get("finetune") or {}, None, None
    if resumed is not None:  # statistics as the run computed them, never again
        model_config = dict(resumed["hyper_parameters"]["model_config"])
        check_split(datamodule, run_dir)
        if (run_dir / FINETUNE).is_file():
            lineage = json.loads((run_dir / FINETUNE).read_text())
    elif finetune.get("source"):
        start = starting_model(finetune, datamodule.sets["train"],
                               datamodule.isolated_atom_energies(), settings["dtype"])
        model_config, initial = start.config, initial_weights(start)
        lineage = start.metadata["finetune"]
        if rank_zero:
            atomic_write_text(json.dumps(lineage, indent=2), run_dir / FINETUNE)
            print(describe_start(lineage), flush=True)
    else:
        model_config = {**settings["model"],
                        "energy_terms": listed_energy_terms(settings["model"].get("energy_terms")),
                        **compute_statistics(datamodule.sets["train"],
                                             datamodule.isolated_atom_energies(),
                                             settings["model"])}
    if resumed is None and rank_zero:
        atomic_write_text(json.dumps(datamodule.indices), run_dir / SPLIT_INDICES)
    if lineage is not None:
        done = add_source_data(datamodule, finetune, lineage, settings["seed"])
        if done and rank_zero:
            print(done, flush=True)
    members = []
    for k in range(size):
        member_dir = run_dir if size == 1 else run_dir / MEMBERS / str(k)
        if size > 1 and rank_zero:
            print(f"ensemble member {k + 1} of {size} (seed {settings['seed'] + k}), "
                  f"in {member_dir}", flush=True)
        fitted = fit(settings, model_config, datamodule, member_dir, resumed,
                     seed=settings["seed"] + k, initial_weights=initial)
        if fitted is None:  # another rank than 0, or a diverged run (reported)
            return {}
        members.append(fitted)
    model, metadata = final_model(settings, members, datamodule)
    if lineage is not None:
        metadata = {**metadata, "finetune": lineage}
    metrics = {}
    if "test" in datamodule.sets:
        result = evaluate(model, datamodule.sets["test"])  # as the calculator does, exactly
        metrics = result.metrics
        print(f"test set ({result.num_structures} structures):\n{format_table(metrics)}")
        atomic_write_text(json.dumps(metrics, indent=2), run_dir / "test_metrics.json")
    save_model(run_dir / MODEL, model, {**metadata, "test_metrics": metrics})
    print(f"model written to {run_dir / MODEL}")
    passed = all([report_short_range(member, directory / "short_range")
                  for member, _, directory in members])
    if not passed and settings.get("short_range", {}).get("fail_on_error", True):
        raise EquipotRunError(f"the short-range check failed (report above; {MODEL} is "
                              f"written): short_range.fail_on_error=false lets such a run "
                              f"exit 0")
    return metrics


def fit(settings: Mapping, model_config: Mapping, datamodule: AtomisticDataModule,
        run_dir: Path, resumed: dict | None, seed: int,
        initial_weights: Mapping | None = None) -> tuple[Potential, dict, Path] | None:
    """Train one model from ``seed`` in ``run_dir`` (from ``initial_weights`` where given):
    the best weights, their metadata and ``run_dir``; None on ranks other than 0, and where
    training diverged (reported)."""
    pl.seed_everything(seed, workers=True)
    module = PotentialModule(model_config, labels=datamodule.labels, dtype=settings["dtype"],
                             loss=settings["loss"], optimizer=settings["optimizer"],
                             scheduler=settings["scheduler"], ema_decay=settings["ema_decay"],
                             dimer_repulsion=settings["dimer_repulsion"],
                             compile=settings["compile"], initial_weights=initial_weights,
                             freeze=(settings.get("finetune") or {}).get("freeze") or ())
    if module.frozen and is_launch_rank_zero():
        print(describe_frozen(module.model, module.frozen), flush=True)
    trainer, checkpoints = make_trainer(settings, run_dir,
                                        resumed["global_step"] if resumed else None)
    started = time.monotonic()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=settings["resume"])
    except TrainingDiverged as error:
        if trainer.is_global_zero:  # the other ranks leave quietly: rank 0 reports
            report_divergence(error, module, checkpoints, run_dir)
        return None
    if not trainer.is_global_zero:
        return None
    model, validation = best_model(module, checkpoints)
    print(summary(trainer, module, validation, time.monotonic() - started))
    metadata = {"dtype": settings["dtype"], "seed": seed, "epochs": trainer.current_epoch,
                "best_epoch": validation.get("epoch"), "weights": module.selected_weights,
                "validation": validation, "best_checkpoint": checkpoints.best_model_path,
                "data": {name: portable(settings["data"][name])
                         for name in ("train", "valid", "test")}}
    return model, metadata, run_dir


def final_model(settings: Mapping, members: list, datamodule: AtomisticDataModule
                ) -> tuple[Potential | Ensemble, dict]:
    """The model to save, with its uncertainty fitted and calibrated on the validation set:
    one model's last-layer prediction rigidity (unless ``uncertainty.llpr=false``, or without
    a validation set), or the ensemble of several members (each also saved, with its LLPR, as
    ``members/<k>/model.pt``); and its metadata."""
    valid = datamodule.sets.get("valid")
    fitted = [(fit_llpr(model, datamodule.sets["train"], valid)
               if settings["uncertainty"]["llpr"] and valid is not None else model)
              for model, _, _ in members]
    if len(members) == 1:
        return fitted[0], members[0][1]
    for model, (_, metadata, directory) in zip(fitted, members):  # each a model of its own
        save_model(directory / MODEL, model, metadata)
    ensemble = Ensemble({**members[0][0].config, "uncertainty": {
        "method": "ensemble", "size": len(members)}}, [model for model, _, _ in members],
        EnsembleOptions(size=len(members)))
    metadata = {**members[0][1], "members": [metadata for _, metadata, _ in members]}
    ensemble.metadata = metadata
    return (calibrate_ensemble(ensemble, valid) if valid is not None else ensemble), metadata


def settle_run(config: DictConfig | Mapping, run_dir: Path, overrides: Sequence[str]
               ) -> tuple[dict, Path, dict | None]:
    """The checked settings, the run directory and, for a resumed run, its checkpoint (loaded).

    A new run claims ``run_dir`` (refused if it holds another run, unless ``overwrite``); a
    resumed one takes its directory, saved config and checkpoint from ``resume``. Rank 0 writes
    the settings to ``config.yaml``."""
    settings = (OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config)
                else dict(config))
    source = (settings.get("finetune") or {}).get("source")
    if source and not settings.get("resume"):
        checkpoint = read_checkpoint(source)
        settings["model"] = source_model_section(source, checkpoint, overrides)
        if "dtype" not in map(override_key, overrides):
            settings["dtype"] = checkpoint["metadata"].get("dtype", settings["dtype"])
    check_config(settings)
    resumed = None
    if settings["resume"]:
        if settings.get("overwrite"):
            raise EquipotInputError("resume continues a run and overwrite=true replaces one: "
                                    "give one of them", field="overwrite")
        run_dir, checkpoint = find_checkpoint(settings["resume"])
        settings = {**resumed_settings(run_dir, settings, overrides), "resume": str(checkpoint)}
        resumed = torch.load(checkpoint, map_location="cpu", weights_only=True)
    elif is_launch_rank_zero():
        prepare_new_run(run_dir, settings["overwrite"])
    if is_launch_rank_zero():
        atomic_write_text(yaml.safe_dump(settings, sort_keys=False), run_dir / CONFIG)
    return settings, run_dir, resumed


def source_model_section(source: str, checkpoint: Mapping, overrides: Sequence[str]) -> dict:
    """A fine-tuning run's ``model`` section: the model config of the source file (read as
    ``checkpoint``). Overrides of the model are refused: the architecture is the source's."""
    given = [override for override in overrides
             if override_key(override).split(".")[0] in ("model", "physics")]
    if given:
        raise EquipotInputError(f"a fine-tuning run takes its model from {source}, so "
                                f"{', '.join(given)} cannot be given", field="finetune.source")
    return dict(checkpoint["model_config"])


def describe_start(lineage: Mapping) -> str:
    """What a fine-tuning run starts from, in a few lines."""
    source, statistics = lineage["source"], lineage["statistics"]
    lines = [f"fine-tuning {source['path']} (elements {source['species']})"]
    if lineage["added_species"]:
        lines.append(f"added elements {lineage['added_species']}")
    options = lineage["options"]
    lines.append(f"reference energies: {options['reference_energies']}, shift: "
                 f"{options['shift']} ({statistics['shift']:.6g} eV), scale: "
                 f"{options['scale']} ({statistics['scale']:.6g} eV/Å)")
    return "\n".join(lines)


def check_split(datamodule: AtomisticDataModule, run_dir: Path) -> None:
    """A resumed run's data must split as they did when it started."""
    split_file = run_dir / SPLIT_INDICES
    if split_file.is_file() and json.loads(split_file.read_text()) != datamodule.indices:
        raise EquipotInputError("the data split differently than when the run started: the "
                                "data files have changed", source=split_file)


def make_trainer(settings: Mapping, run_dir: Path, resumed_step: int | None
                 ) -> tuple[pl.Trainer, ModelCheckpoint]:
    """The Lightning Trainer of ``settings["trainer"]`` with equipot's callbacks and loggers;
    ``resumed_step``: the global step of the checkpoint a resumed run continues from."""
    trainer_settings = dict(settings["trainer"])
    patience = trainer_settings.pop("early_stopping_patience")
    max_seconds = duration_seconds(trainer_settings["max_time"])
    checkpoints = ModelCheckpoint(dirpath=run_dir / CHECKPOINTS, filename="best",
                                  monitor="val/loss", save_last=True,
                                  enable_version_counter=False)
    callbacks = [checkpoints, LearningRateMonitor()]
    if patience:
        callbacks.append(EarlyStopping(monitor="val/loss", patience=patience))
    schedule = budget_schedule(settings["scheduler"], max_seconds)
    if schedule is not None:
        callbacks.append(schedule)
    if settings.get("stage_two"):
        callbacks.append(StageTwo(**settings["stage_two"], max_seconds=max_seconds,
                                  schedule=schedule))
    if not trainer_settings.get("enable_progress_bar", True):
        callbacks.append(EpochPrinter())
    loggers = [ContinuingCSVLogger(run_dir, keep_before_step=resumed_step),
               TensorBoardLogger(run_dir, name="tensorboard", version="")]
    trainer = pl.Trainer(default_root_dir=run_dir, inference_mode=False, callbacks=callbacks,
                         logger=loggers, **trainer_settings)
    return trainer, checkpoints


def best_model(module: PotentialModule, checkpoints: ModelCheckpoint) -> tuple[Potential, dict]:
    """The weights that validated best, on the CPU in eval mode, and their validation."""
    if checkpoints.best_model_path:
        best = torch.load(checkpoints.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(best["state_dict"])
        module.on_load_checkpoint(best)
    return module.weights(module.selected_weights).to("cpu").eval(), module.validation


def summary(trainer: pl.Trainer, module: PotentialModule, validation: Mapping,
            seconds: float) -> str:
    """What a finished training prints: its length, best epoch and validation."""
    lines = [f"training ended after {trainer.current_epoch} epochs ({trainer.global_step} "
             f"steps) in {seconds:.0f} s"]
    if validation:
        weights, losses = validation["weights"], validation["losses"]
        others = "".join(f"; {name} weights {value:.4g}" for name, value in losses.items()
                         if name != weights)
        lines.append(f"best epoch {validation['epoch'] + 1}: validation loss {losses[weights]:.4g} "
                     f"({weights} weights, saved{others}); "
                     + " · ".join(format_errors(validation["metrics"])))
    else:
        lines.append(f"no validation ran: the model holds the {module.selected_weights} "
                     f"weights of the last step")
    return "\n".join(lines)


def report_divergence(error: TrainingDiverged, module: PotentialModule,
                      checkpoints: ModelCheckpoint, run_dir: Path) -> None:
    """Keep the last finite weights under a name that says so, and raise the run's error."""
    path = run_dir / LAST_FINITE_WEIGHTS
    save_model(path, module.model.to("cpu"),
               {"diverged": {"epoch": error.epoch, "step": error.step, "what": error.what},
                "weights": "raw", "dtype": module.hparams.dtype})
    last = checkpoints.last_model_path
    where = (f"the last checkpoint is {last}" if last else
             "no checkpoint was written (it diverged in its first epoch)")
    raise EquipotRunError(
        f"{error}. No {MODEL} was written. The weights just before that step are in {path} "
        f"(to inspect, not a result); {where}. Start again with a lower optimizer.lr, or check "
        f"the labels") from error


def report_short_range(model: Potential, output_dir: Path) -> bool:
    """Print the short-range report of the trained model; whether it passed. An error while
    making it is printed in a banner and counts as a failure, never raised: the model file is
    written already and must not be lost."""
    try:
        report = check_short_range(model, model.config.get("shortest_distances"), output_dir)
    except Exception as error:  # noqa: BLE001 (any failure of the report, reported)
        print(banner([f"the short-range report failed: {type(error).__name__}: {error}",
                      "the model is saved; run equipot-check-model on it to retry"]))
        return False
    print(format_report(report, output_dir))
    return report.passed


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def hydra_main(config: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    overrides = list(HydraConfig.get().overrides.task)
    exit_on_error("equipot-train", lambda: train(config, run_dir, overrides))


def main() -> None:
    """``resume=runs/x`` runs Hydra in runs/x too, so that it leaves no directory behind;
    ``finetune.source=…`` without ``recipe=…`` takes ``recipe=finetune``."""
    if (any(arg.startswith("finetune.source=") for arg in sys.argv[1:])
            and not any(arg.startswith("recipe=") for arg in sys.argv[1:])):
        sys.argv.append("recipe=finetune")
    resume = [arg.split("=", 1)[1] for arg in sys.argv[1:] if arg.startswith("resume=")]
    if resume and resume[-1] and not any(arg.startswith("hydra.run.dir=") for arg in sys.argv):
        path = Path(resume[-1])
        run_dir = path.parent.parent if path.suffix == ".ckpt" else path
        if run_dir.is_dir():
            sys.argv.append(f"hydra.run.dir={run_dir}")
    hydra_main()


if __name__ == "__main__":
    main()
