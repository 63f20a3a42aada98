"""A dataset of graphs stored as a few concatenated tensors, cached on disk.

Converting structures to graphs (reading, validating, neighbour lists) is done once per file
and settings; the result is saved as plain tensors, so the cache loads with
``torch.load(weights_only=True)`` and is reused while the file's bytes and the settings are
unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import ase
import torch
from torch_geometric.data import Data

from equipot import keys
from equipot.data.graph import atoms_to_graph
from equipot.data.reading import LabelKeys, WeightKeys, read_labels, read_structures, read_weights
from equipot.io import atomic_save

CACHE_FORMAT = 3  # 2: total charge and dipole labels; 3: label flags and loss weights


def default_cache_dir() -> Path:
    return Path(os.environ.get("EQUIPOT_CACHE", Path.home() / ".cache" / "equipot"))


class GraphDataset(torch.utils.data.Dataset):
    """Graphs of many structures; ``dataset[i]`` is a torch_geometric ``Data``."""

    def __init__(self, tensors: dict[str, torch.Tensor], source: str):
        self.tensors = tensors
        self.source = source
        self.atom_ptr = torch.cat([torch.zeros(1, dtype=torch.long),
                                   tensors[keys.NUM_ATOMS].cumsum(0)])
        self.edge_ptr = torch.cat([torch.zeros(1, dtype=torch.long),
                                   tensors[keys.NUM_EDGES].cumsum(0)])

    def __len__(self) -> int:
        return len(self.tensors[keys.NUM_ATOMS])

    @property
    def fields(self) -> set[str]:
        return set(self.tensors)

    def __getitem__(self, index: int) -> Data:
        items = {keys.ATOM: slice(self.atom_ptr[index], self.atom_ptr[index + 1]),
                 keys.EDGE: slice(self.edge_ptr[index], self.edge_ptr[index + 1]),
                 keys.STRUCTURE: slice(index, index + 1)}
        fields = {}
        for name, tensor in self.tensors.items():
            if name != keys.NUM_EDGES:  # a Data derives it from edge_index
                field = keys.FIELDS[name]
                fields[name] = tensor[(slice(None),) * field.item_dim + (items[field.per],)]
        return Data(**fields)

    def consecutive(self, start: int, stop: int) -> keys.GraphFields:
        """Structures ``start`` … ``stop`` − 1 as one batch, sliced from the concatenated
        tensors (what collating their graphs would give, without the collation)."""
        items = {keys.ATOM: slice(self.atom_ptr[start], self.atom_ptr[stop]),
                 keys.EDGE: slice(self.edge_ptr[start], self.edge_ptr[stop]),
                 keys.STRUCTURE: slice(start, stop)}
        fields = keys.GraphFields({
            name: tensor[(slice(None),) * keys.FIELDS[name].item_dim
                         + (items[keys.FIELDS[name].per],)]
            for name, tensor in self.tensors.items()})
        offsets = self.atom_ptr[start:stop] - self.atom_ptr[start]
        fields[keys.EDGE_INDEX] = fields[keys.EDGE_INDEX] + offsets.repeat_interleave(
            fields.pop(keys.NUM_EDGES))
        fields[keys.BATCH] = torch.arange(stop - start).repeat_interleave(
            fields.pop(keys.NUM_ATOMS))
        return fields

    @classmethod
    def subset(cls, dataset: GraphDataset, indices) -> GraphDataset:
        """A new dataset holding the structures ``indices`` of ``dataset``."""
        return cls(_concatenate([dataset[int(index)] for index in indices]), dataset.source)

    def label_counts(self) -> dict[str, int]:
        """Structures that have each label (``keys.labels()`` order, labels of this set only)."""
        return {name: int(self.tensors[keys.label(name).has].sum())
                for name in keys.labels() if name in self.tensors}

    def describe(self) -> str:
        """E.g. "900 structures from train.xyz; labelled: energy 900, forces 850"."""
        counts = ", ".join(f"{field} {count}" for field, count in self.label_counts().items())
        return f"{len(self)} structures from {self.source}; labelled: {counts or 'none'}"

    @classmethod
    def from_atoms(cls, structures: list[ase.Atoms], cutoff: float,
                   label_keys: LabelKeys = LabelKeys(), source: str = "<atoms>",
                   weight_keys: WeightKeys = WeightKeys()) -> GraphDataset:
        """Validate and convert ``structures``; errors name ``source`` and the structure index."""
        labels = read_labels(structures, label_keys, source)
        weights = read_weights(structures, weight_keys, source)
        graphs = [atoms_to_graph(atoms, cutoff, {field: values[index]
                                                 for field, values in labels.items()},
                                 source, index, weight=weights[index])
                  for index, atoms in enumerate(structures)]
        return cls(_concatenate(graphs), source)

    @classmethod
    def from_file(cls, path: str | Path, cutoff: float, label_keys: LabelKeys = LabelKeys(),
                  cache_dir: str | Path | None = None,
                  weight_keys: WeightKeys = WeightKeys()) -> GraphDataset:
        """Graphs of every structure in ``path``, from the cache when it is up to date.

        ``cache_dir=None`` uses ``$EQUIPOT_CACHE`` or ``~/.cache/equipot``; ``False`` disables
        caching.
        """
        path = Path(path)
        if cache_dir is False:
            return cls.from_atoms(read_structures(path), cutoff, label_keys, str(path),
                                  weight_keys)
        if not path.is_file():
            read_structures(path)  # raises the error that names the file
        fingerprint = _fingerprint(path, cutoff, label_keys, weight_keys)
        cache = Path(cache_dir or default_cache_dir()) / f"{path.stem}-{fingerprint}.pt"
        if cache.is_file():
            return cls(torch.load(cache, weights_only=True), str(path))
        dataset = cls.from_atoms(read_structures(path), cutoff, label_keys, str(path),
                                 weight_keys)
        atomic_save(dataset.tensors, cache)
        return dataset


def _fingerprint(path: Path, cutoff: float, label_keys: LabelKeys,
                 weight_keys: WeightKeys) -> str:
    """Hash of the file's bytes and every setting that changes the graphs."""
    digest = hashlib.sha256(path.read_bytes())
    settings = {"cutoff": float(cutoff), "keys": list(label_keys.items()), "format": CACHE_FORMAT,
                "weights": [weight_keys.weight, weight_keys.config_type,
                            sorted(weight_keys.config_type_weights.items())]}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _concatenate(graphs: list[Data]) -> dict[str, torch.Tensor]:
    tensors = {name: torch.cat([graph[name] for graph in graphs], dim=keys.FIELDS[name].item_dim)
               for name in graphs[0].keys()}
    tensors[keys.NUM_ATOMS] = torch.tensor([graph.num_nodes for graph in graphs])
    tensors[keys.NUM_EDGES] = torch.tensor([graph.num_edges for graph in graphs])
    return tensors
