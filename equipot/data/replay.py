"""Replay: structures of a model's earlier training data in every batch of a fine-tuning run.

A fine-tuned model forgets what its new data does not show. Each training batch of the new
data gets ``per_batch`` structures drawn at random (without repeats within the batch) from the
replay pool, collated into the same batch, so that one forward pass and one loss see both.
Their loss weight is the pool's (``weighted``), as any structure's loss weight is
(``keys.WEIGHT``).
"""

from __future__ import annotations

import torch
from torch_geometric.data import Batch

from equipot import keys
from equipot.data.dataset import GraphDataset
from equipot.errors import EquipotInputError


def aligned(pool: GraphDataset, like: GraphDataset, weight: float) -> GraphDataset:
    """``pool`` with the fields of ``like``, so that their structures collate together: a
    label ``pool`` lacks is absent on its structures (zeros, its flag off), one ``like`` lacks
    is dropped; loss weights are multiplied by ``weight``."""
    tensors, count = {}, len(pool)
    for name, tensor in like.tensors.items():
        if name in pool.tensors:
            tensors[name] = pool.tensors[name]
            continue
        label = next((keys.label(field) for field in keys.labels()
                      if name in (field, keys.label(field).has)), None)
        if label is None:
            raise EquipotInputError(f"the replayed structures lack field '{name}', which the "
                                    f"training data has", source=pool.source, field=name)
        items = (count if label.per == keys.STRUCTURE else
                 int(pool.tensors[keys.NUM_ATOMS].sum()))
        tensors[name] = (torch.zeros(count, dtype=torch.bool) if name == label.has else
                         torch.zeros((items, *label.shape), dtype=tensor.dtype))
    tensors[keys.WEIGHT] = pool.tensors[keys.WEIGHT] * weight
    return GraphDataset(tensors, pool.source)


class ReplayCollater:
    """Collates a list of graphs and ``per_batch`` graphs drawn from ``pool`` into one
    ``Batch`` (the ``collate_fn`` of the training loader)."""

    def __init__(self, pool: GraphDataset, per_batch: int):
        if per_batch > len(pool):
            raise EquipotInputError(f"cannot replay {per_batch} structures per batch from "
                                    f"{len(pool)}", source=pool.source,
                                    field="finetune.replay.per_batch")
        self.pool, self.per_batch = pool, per_batch

    def __call__(self, graphs: list) -> Batch:
        drawn = torch.randperm(len(self.pool))[:self.per_batch].tolist()
        return Batch.from_data_list(list(graphs) + [self.pool[index] for index in drawn])
