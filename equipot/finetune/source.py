"""The model a fine-tuning run starts from, and the lineage its model file records.

``starting_model`` loads ``finetune.source``, drops its fitted uncertainty (refitted after
training), adds the elements of the new training data it lacks (``species``) and sets
reference energies, shift and scale as the options say (``statistics``). With every option
``keep`` and no new element, it predicts exactly what the source predicts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch

from equipot import keys
from equipot.data.dataset import GraphDataset
from equipot.errors import EquipotInputError
from equipot.finetune.species import with_species
from equipot.finetune.statistics import refit_statistics
from equipot.model.build import DTYPES
from equipot.model.checkpoint import load
from equipot.model.ensemble import Ensemble
from equipot.model.potential import Potential
from equipot.train.config import REFITS
from equipot.train.statistics import shortest_distances


def load_source(path: str | Path, dtype: str | None = None) -> Potential:
    """The network of the model file ``path`` (its uncertainty method dropped) in ``dtype``
    (by default the file's), with the file's metadata; an ensemble or an exported model is
    refused."""
    if Path(path).suffix == ".pt2":
        raise EquipotInputError("an exported model holds no trainable weights: fine-tune the "
                                "model file it was exported from", source=str(path),
                                field="finetune.source")
    model = load(path, dtype=DTYPES[dtype] if dtype else None)
    if isinstance(model, Ensemble):
        raise EquipotInputError("an ensemble cannot be fine-tuned as one model: fine-tune a "
                                "member (members/<k>/model.pt of its run)",
                                source=str(path), field="finetune.source")
    model.uncertainty = None
    model.config = {key: value for key, value in model.config.items() if key != "uncertainty"}
    return model


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def starting_model(options: Mapping, train: GraphDataset,
                   isolated_atoms: Mapping[int, float] | None, dtype: str) -> Potential:
    """The model a fine-tuning run with ``options`` (the ``finetune`` section) starts from, on
    the new training set ``train``; its ``metadata["finetune"]`` is the lineage to save."""
    source_path = Path(options["source"])
    source = load_source(source_path, dtype)
    species = sorted(int(z) for z in train.tensors[keys.ATOMIC_NUMBERS].unique())
    added = sorted(set(species) - set(source.species))
    model = with_species(source, added, shortest_distances(train, species), species)
    model = refit_statistics(model, train, {name: options[name] for name in REFITS},
                             isolated_atoms, tuple(added))
    model.metadata = {"finetune": {
        "source": {"path": str(source_path.resolve()), "sha256": file_digest(source_path),
                   "species": source.species, "data": source.metadata.get("data"),
                   "finetune": source.metadata.get("finetune")},
        "added_species": added,
        "options": {key: value for key, value in options.items() if key != "source"},
        "statistics": {name: model.config[name] for name in ("reference_energies", "shift",
                                                             "scale")}}}
    return model


def initial_weights(model: Potential) -> dict[str, torch.Tensor]:
    """The state dict a training module starts from (detached copies)."""
    return {name: value.detach().clone() for name, value in model.state_dict().items()}
