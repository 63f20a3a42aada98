"""One run, one directory: a new run starts in an empty one, a resumed run continues its own.

Two runs sharing a directory mixed their files (a second ``best-v1.ckpt`` beside the first
run's, which ``resume=…/last.ckpt`` then picked; one run's ``config.yaml`` beside the other's
``model.pt``), and a resumed run in a new directory split the history. So a new run refuses a
directory that holds another run's files unless told to ``overwrite`` (then they go first),
and ``resume=<run dir or a .ckpt in it>`` continues in that run's directory, with that run's
config, appending to its ``logs/metrics.csv``.
"""

from __future__ import annotations

import copy
import csv
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from equipot.errors import EquipotInputError
from equipot.io import atomic_path

CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
MODEL = "model.pt"
LAST_FINITE_WEIGHTS = "last_finite_weights.pt"  # what a diverged run leaves instead of MODEL
# Everything a run writes (Hydra's own .hydra/ and log file aside).
MEMBERS = "members"  # an ensemble run's member directories, members/<k>/
ARTEFACTS = (CONFIG, "split_indices.json", CHECKPOINTS, "logs", "tensorboard", MODEL,
             "test_metrics.json", "short_range", LAST_FINITE_WEIGHTS, MEMBERS)
# What a resumed run may change: its budget, and how it runs, not what it computes.
RESUMABLE = ("trainer.max_epochs", "trainer.max_time", "trainer.enable_progress_bar",
             "trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.strategy",
             "data.num_workers", "data.cache_dir")


def is_launch_rank_zero() -> bool:
    """Whether this process is global rank 0 by the environment its launcher set (Lightning's
    DDP children, torchrun, SLURM), before any Trainer exists; True for a single process."""
    return all(int(os.environ.get(name, 0)) == 0
               for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def prepare_new_run(run_dir: Path, overwrite: bool) -> None:
    """Refuse a directory holding another run's files, or remove them when ``overwrite``."""
    found = [name for name in ARTEFACTS if (run_dir / name).exists()]
    if not found:
        return
    if not overwrite:
        raise EquipotInputError(
            f"the run directory holds another run ({', '.join(found)}): continue it with "
            f"resume={run_dir}, replace it with overwrite=true, or choose another "
            f"hydra.run.dir", source=run_dir)
    for name in found:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def find_checkpoint(resume: str | Path) -> tuple[Path, Path]:
    """(run directory, checkpoint) of ``resume=``: a run directory (its
    ``checkpoints/last.ckpt``) or a checkpoint in a run directory's ``checkpoints/``."""
    path = Path(resume)
    if path.is_dir():
        run_dir, checkpoint = path, path / CHECKPOINTS / LAST_CHECKPOINT
    elif path.is_file() and path.parent.name == CHECKPOINTS:
        run_dir, checkpoint = path.parent.parent, path
    elif path.is_file():
        raise EquipotInputError(f"resume takes a run directory or a checkpoint in its "
                                f"{CHECKPOINTS}/ folder", source=path, field="resume")
    else:
        raise EquipotInputError("no such run directory or checkpoint", source=path,
                                field="resume")
    if not (run_dir / CONFIG).is_file():
        raise EquipotInputError(f"not a run directory: it has no {CONFIG}", source=run_dir,
                                field="resume")
    if not checkpoint.is_file():
        raise EquipotInputError("no checkpoint to continue from: the run ended before its "
                                "first epoch did", source=checkpoint, field="resume")
    return run_dir, checkpoint


def override_key(override: str) -> str:
    """The key a Hydra command-line override sets: ``data.train`` of ``+data.train=x.xyz``."""
    return override.lstrip("+~").split("=", 1)[0]


def resumed_settings(run_dir: Path, requested: Mapping, overrides: Sequence[str]) -> dict:
    """The saved config of the run in ``run_dir`` with the budget (``RESUMABLE``) of
    ``requested``, the config this invocation composed from ``overrides`` (Hydra's). Any other
    override that changes the run is refused, naming the saved and the requested values."""
    settings = yaml.safe_load((run_dir / CONFIG).read_text())
    saved = copy.deepcopy(settings)
    for override in overrides:
        key = override_key(override)
        if key in ("resume", "overwrite") or key.startswith("hydra."):
            continue
        if key in RESUMABLE:
            section, name = key.split(".")
            settings[section][name] = requested[section].get(name)
            continue
        # A group (model=painn) or a key (data.train=…); experiment=… may change anything.
        scope = None if key == "experiment" else key
        changes = differences(lookup(saved, scope), lookup(requested, scope), scope or "",
                              ignore={"resume", "overwrite", *RESUMABLE})
        if changes:
            shown = "; ".join(f"{path}: the run has {old!r}, this asks for {new!r}"
                              for path, old, new in changes[:4])
            raise EquipotInputError(
                f"a resumed run continues with its own config, so {override} is refused "
                f"({shown}). Only {', '.join(RESUMABLE[:2])} (and how the run executes: "
                f"{', '.join(RESUMABLE[2:])}) may change; start a new run for anything else",
                source=run_dir, field="resume")
    return settings


def lookup(config: Mapping, key: str | None):
    """``config`` itself (key None), or its value at the dotted ``key`` (None if absent)."""
    value = config
    for part in key.split(".") if key else ():
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def differences(old, new, prefix: str, ignore: set[str]) -> list[tuple[str, object, object]]:
    """(dotted path, old, new) of every leaf where ``new`` differs from ``old``."""
    if prefix in ignore:
        return []
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        found = []
        for key in list(old) + [key for key in new if key not in old]:
            path = f"{prefix}.{key}" if prefix else str(key)
            found += differences(old.get(key), new.get(key), path, ignore)
        return found
    return [] if old == new else [(prefix, old, new)]


class ContinuingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is continued, not
    deleted: rows logged after the checkpoint a run resumes from (``keep_before_step``; a run
    killed mid-epoch logs some) are dropped, and new rows are appended."""

    def __init__(self, log_dir: str, keep_before_step: int | None):
        self.keep_before_step = keep_before_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            header = list(reader.fieldnames or [])
            rows = [row for row in reader if self.keep_before_step is None
                    or int(row["step"]) < self.keep_before_step]
        with atomic_path(path) as temporary, temporary.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = header


class ContinuingCSVLogger(CSVLogger):
    """``CSVLogger(save_dir, name="logs", version="")`` writing through
    ``ContinuingExperimentWriter``."""

    def __init__(self, save_dir: Path, keep_before_step: int | None = None):
        super().__init__(save_dir, name="logs", version="")
        self.keep_before_step = keep_before_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ContinuingExperimentWriter:
        if self._experiment is None:
            self._experiment = ContinuingExperimentWriter(self.log_dir, self.keep_before_step)
        return self._experiment
