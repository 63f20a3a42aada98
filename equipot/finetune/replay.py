"""The source's training data in a fine-tuning run: replayed in every batch and scored.

The data is the file the source model records (``metadata["data"]["train"]``; bundled data
by name, found in this installation: ``equipot.datasets.located``) or
``finetune.replay.data``. ``finetune.replay.reported`` structures of it, drawn with the run's
seed, are held out and scored at every validation (``source/forces_mae`` …, the selected
weights), so that forgetting shows while it happens; the rest is the replay pool, of which
``per_batch`` structures join every training batch with loss weight ``weight``
(``equipot.data.replay``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from equipot.data.datamodule import AtomisticDataModule
from equipot.data.dataset import GraphDataset
from equipot.data.replay import aligned
from equipot.datasets import located
from equipot.errors import EquipotInputError


def source_data(options: Mapping, lineage: Mapping) -> str | None:
    """The path of the source's training data: given, or recorded in its model file."""
    return options["replay"]["data"] or located((lineage["source"].get("data") or {}).get("train"))


def add_source_data(datamodule: AtomisticDataModule, options: Mapping, lineage: Mapping,
                    seed: int) -> str | None:
    """Set up replay and the source's scored set on ``datamodule`` (after its ``setup``) as
    ``options`` (the ``finetune`` section) says; a line saying what was done, or None."""
    replay = options["replay"]
    per_batch, reported = int(replay["per_batch"]), int(replay["reported"])
    if not per_batch and not reported:
        return None
    path = source_data(options, lineage)
    if path is None or not Path(path).is_file():
        where = f"{path} does not exist" if path else "the source model records no data file"
        if per_batch:
            raise EquipotInputError(f"replay needs the source's training data, but {where}: "
                                    f"give finetune.replay.data=…, or finetune.replay."
                                    f"per_batch=0", field="finetune.replay.data")
        return f"the source's training data is not scored ({where})"
    full = datamodule.load(path)
    held_out = min(reported, len(full) - per_batch) if per_batch else min(reported, len(full))
    order = np.random.default_rng(seed).permutation(len(full))
    train = datamodule.sets["train"]
    scored = (aligned(GraphDataset.subset(full, order[:held_out]), train, 1.0) if held_out
              else None)
    pool = aligned(GraphDataset.subset(full, order[held_out:]), train,
                   float(replay["weight"])) if per_batch else None
    datamodule.add_replay(pool, per_batch, scored)
    parts = ([f"replaying {per_batch} of {len(full) - held_out} structures of {path} in every "
              f"batch (loss weight {replay['weight']})"] if per_batch else [])
    if held_out:
        parts.append(f"scoring {held_out} structures of {path} at every validation (source/…)")
    return "; ".join(parts)
