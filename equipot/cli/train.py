"""``equipot-train``: train a Potential from a Hydra config.

    equipot-train data.train=my.xyz model=schnet trainer.max_epochs=50
    equipot-train experiment=ethanol_schnet hydra.run.dir=runs/demo

The run directory receives the resolved ``config.yaml``, ``split_indices.json`` (which
structures of the training file went to which split), CSV and TensorBoard logs, Lightning
checkpoints (``checkpoints/last.ckpt`` resumes with ``resume=...``), the final ``model.pt``
(EMA weights of the best validation epoch), ``test_metrics.json`` and the short-range report
``short_range/`` (``equipot.short_range``; a failing check ends the run with a banner).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from equipot.cli import exit_on_input_error
from equipot.data.datamodule import AtomisticDataModule
from equipot.data.statistics import compute_statistics, isolated_atom_energies
from equipot.datasets import bundled
from equipot.evaluation import evaluate, format_table
from equipot.io import atomic_write_text
from equipot.model.checkpoint import save_model
from equipot.model.potential import Potential
from equipot.short_range import banner, check_short_range, format_report
from equipot.train.module import PotentialModule
from equipot.train.schedule import BudgetCosineSchedule, duration_seconds

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")  # a link to configs/
if not OmegaConf.has_resolver("bundled"):
    OmegaConf.register_new_resolver("bundled", bundled)


def train(config: DictConfig, run_dir: Path) -> dict:
    """Train as ``config`` says, writing everything to ``run_dir``; returns the test metrics."""
    settings = OmegaConf.to_container(config, resolve=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(yaml.safe_dump(settings, sort_keys=False), run_dir / "config.yaml")
    pl.seed_everything(settings["seed"], workers=True)

    data = dict(settings["data"])
    isolated_atoms = data.pop("isolated_atoms")
    datamodule = AtomisticDataModule(cutoff=settings["model"]["cutoff"], seed=settings["seed"],
                                     **data)
    datamodule.setup()
    atomic_write_text(json.dumps(datamodule.indices), run_dir / "split_indices.json")
    reference = (isolated_atom_energies(isolated_atoms, data["energy_key"] or "energy")
                 if isolated_atoms else None)
    model_config = {**settings["model"],
                    **compute_statistics(datamodule.sets["train"], reference, settings["model"])}
    module = PotentialModule(model_config, labels=datamodule.labels, dtype=settings["dtype"],
                             loss=settings["loss"], optimizer=settings["optimizer"],
                             scheduler=settings["scheduler"], ema_decay=settings["ema_decay"],
                             dimer_repulsion=settings["dimer_repulsion"])

    trainer_settings = dict(settings["trainer"])
    patience = trainer_settings.pop("early_stopping_patience")
    checkpoints = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best",
                                  monitor="val/loss", save_last=True)
    callbacks = [checkpoints, LearningRateMonitor()]
    if patience:
        callbacks.append(EarlyStopping(monitor="val/loss", patience=patience))
    if settings["scheduler"]["name"] == "cosine":
        callbacks.append(BudgetCosineSchedule(duration_seconds(trainer_settings["max_time"]),
                                              settings["scheduler"]["min_lr"]))
    trainer = pl.Trainer(
        default_root_dir=run_dir, inference_mode=False, callbacks=callbacks,
        logger=[CSVLogger(run_dir, name="logs", version=""),
                TensorBoardLogger(run_dir, name="tensorboard", version="")],
        **trainer_settings)
    trainer.fit(module, datamodule=datamodule, ckpt_path=settings["resume"])
    if not trainer.is_global_zero:
        return {}

    if checkpoints.best_model_path:
        best = torch.load(checkpoints.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(best["state_dict"])
    model = module.averaged_model.to("cpu").eval()
    metadata = {"dtype": settings["dtype"], "epochs": trainer.current_epoch,
                "best_checkpoint": checkpoints.best_model_path,
                "data": {name: data[name] for name in ("train", "valid", "test")}}
    metrics = {}
    if "test" in datamodule.sets:
        result = evaluate(model, datamodule.sets["test"])  # as the calculator does, exactly
        metrics = result.metrics
        print(f"test set ({result.num_structures} structures):\n{format_table(metrics)}")
        atomic_write_text(json.dumps(metrics, indent=2), run_dir / "test_metrics.json")
    save_model(run_dir / "model.pt", model, model_config, {**metadata, "test_metrics": metrics})
    print(f"model written to {run_dir / 'model.pt'}")
    report_short_range(model, model_config, run_dir / "short_range")
    return metrics


def report_short_range(model: Potential, model_config: Mapping, output_dir: Path) -> None:
    """Print the short-range report of the trained model. An error while making it is printed
    in a banner, never raised: the model file is written already and must not be lost."""
    try:
        report = check_short_range(model, model_config.get("shortest_distances"), output_dir)
    except Exception as error:  # noqa: BLE001 (any failure of the report, reported)
        print(banner([f"the short-range report failed: {type(error).__name__}: {error}",
                      "the model is saved; run equipot-check-model on it to retry"]))
        return
    print(format_report(report, output_dir))


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def main(config: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    exit_on_input_error("equipot-train", lambda: train(config, run_dir))


if __name__ == "__main__":
    main()
