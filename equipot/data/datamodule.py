"""Lightning data module: training, validation and test sets from files, or split from one.

Splits are by fraction or count with a seed; separate files take precedence. Every set is
checked against the training set's elements so that a model never meets an unknown one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytorch_lightning as pl
import torch
from torch_geometric.loader import DataLoader

from equipot import keys
from equipot.data.dataset import GraphDataset
from equipot.data.reading import LabelKeys, WeightKeys, isolated_atom_energies
from equipot.data.replay import ReplayCollater
from equipot.errors import EquipotInputError


def held_out_size(total: int, remaining: int, fraction: float | None, count: int | None,
                  what: str, source: str) -> int:
    """Structures to hold out: ``count``, or ``fraction`` of all ``total`` in the file."""
    size = int(count) if count is not None else int(round((fraction or 0.0) * total))
    if not 0 <= size < remaining:
        raise EquipotInputError(f"cannot hold out {size} of {total} structures for {what}: "
                                f"{remaining} remain and training needs at least one",
                                source=source)
    return size


class AtomisticDataModule(pl.LightningDataModule):
    def __init__(self, train: str, cutoff: float, seed: int, *, valid: str | None,
                 test: str | None, valid_fraction: float | None, valid_count: int | None,
                 test_fraction: float | None, test_count: int | None, batch_size: int,
                 eval_batch_size: int | None, weight_key: str | None,
                 config_type_key: str | None, config_type_weights: Mapping[str, float] | None,
                 cache_dir: str | None, num_workers: int, isolated_atoms: str | None,
                 **label_keys: str | None):
        """The ``data`` section of the root config (``configs/data``), with the model's
        ``cutoff`` (Å) and the run's ``seed``. ``valid``/``test``: files, or None to split
        them from ``train`` by fraction or count (a count overrides the fraction).
        ``weight_key``, ``config_type_key`` and ``config_type_weights``: a structure's loss
        weight is ``info[weight_key]`` (1 where absent) times the weight of its
        ``info[config_type_key]`` in ``config_type_weights`` (1 for types not named).
        ``isolated_atoms``: a file of single-atom energies (see ``isolated_atom_energies``).
        ``label_keys``: ``<label>_key`` options (``LabelKeys.options()``), where each label is
        stored (``energy_key="REF_energy"``, ``stress_key=None`` …)."""
        super().__init__()
        self.paths = {"train": train, "valid": valid, "test": test,
                      "isolated_atoms": isolated_atoms}
        self.cutoff = cutoff
        self.label_keys = LabelKeys.from_options(label_keys)
        self.weight_keys = WeightKeys(weight_key, config_type_key,
                                      dict(config_type_weights or {}))
        self.split = {"valid": (valid_fraction, valid_count), "test": (test_fraction, test_count)}
        self.seed = seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.cache_dir = cache_dir
        self.num_workers = num_workers
        self.sets: dict[str, GraphDataset] = {}
        self.indices: dict[str, list[int]] = {}  # positions in the training file, per split
        self.replay: ReplayCollater | None = None

    def add_replay(self, pool: GraphDataset, per_batch: int, reported: GraphDataset | None
                   ) -> None:
        """Fine-tuning against forgetting: ``per_batch`` structures of ``pool`` (aligned
        with the training set, ``equipot.data.replay.aligned``) in every training batch;
        ``reported``, structures of the source's data held out of the pool, becomes
        ``sets["source"]``, validated as a second loader."""
        if per_batch:
            self.replay = ReplayCollater(pool, per_batch)
        if reported is not None:
            self.sets["source"] = reported

    def load(self, path: str) -> GraphDataset:
        """The graphs of ``path`` with this data module's cutoff, label keys and cache."""
        return GraphDataset.from_file(path, self.cutoff, self.label_keys, self.cache_dir,
                                      self.weight_keys)

    def setup(self, stage: str | None = None) -> None:
        if self.sets:
            return
        full = self.load(self.paths["train"])
        order = np.random.default_rng(self.seed).permutation(len(full))
        held_out = {}
        for name in ("valid", "test"):
            if self.paths[name] is not None:
                held_out[name] = self.load(self.paths[name])
            else:
                size = held_out_size(len(full), len(order), *self.split[name], what=name,
                                     source=self.paths["train"])
                if size:
                    self.indices[name] = order[:size].tolist()
                    held_out[name] = GraphDataset.subset(full, order[:size])
                    order = order[size:]
        if "valid" not in held_out:
            raise EquipotInputError("no validation data: give data.valid or a valid split",
                                    source=self.paths["train"])
        self.indices["train"] = order.tolist()
        self.sets = {"train": GraphDataset.subset(full, order), **held_out}
        species = set(self.sets["train"].tensors[keys.ATOMIC_NUMBERS].tolist())
        for name, dataset in held_out.items():
            unknown = set(dataset.tensors[keys.ATOMIC_NUMBERS].tolist()) - species
            if unknown:
                raise EquipotInputError(
                    f"elements {sorted(unknown)} of the {name} set do not occur in the "
                    f"training set", source=dataset.source, field=keys.ATOMIC_NUMBERS)

    def describe(self) -> str:
        """One line per set: its size and how many of its structures have each label."""
        return "\n".join(f"{name}: {dataset.describe()}" for name, dataset in self.sets.items())

    @property
    def labels(self) -> list[str]:
        """Labels (``keys.labels()``) the training set has."""
        return [field for field in keys.labels() if field in self.sets["train"].fields]

    def isolated_atom_energies(self) -> dict[int, float] | None:
        """E0 (eV) by atomic number from the isolated-atoms file, None without one."""
        path, key = self.paths["isolated_atoms"], self.label_keys[keys.ENERGY] or keys.ENERGY
        return isolated_atom_energies(path, key) if path else None

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.sets[name], shuffle=shuffle, num_workers=self.num_workers,
                          batch_size=self.batch_size if name == "train" else self.eval_batch_size)

    def train_dataloader(self):
        if self.replay is None:
            return self._loader("train", shuffle=True)
        return torch.utils.data.DataLoader(self.sets["train"], batch_size=self.batch_size,
                                           shuffle=True, num_workers=self.num_workers,
                                           collate_fn=self.replay)

    def val_dataloader(self):
        if "source" in self.sets:
            return [self._loader("valid", shuffle=False), self._loader("source", shuffle=False)]
        return self._loader("valid", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False) if "test" in self.sets else []
