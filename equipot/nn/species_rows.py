"""Copy a model's weights into the same model built for more species (an element added).

Modules whose parameters are indexed by species declare it: ``take_species(source, rows)``
copies every parameter of ``source``, the same module built for the S_source species of the
old model, into its own, species s of ``source`` becoming species ``rows[s]``; the rows of the
species ``source`` lacks keep their fresh initialisation. ``take_species_from`` walks two
models together: where a module declares ``take_species`` it is called for that subtree, and
every other parameter is copied as it is, which needs its shape to be the same (a parameter
that depends on the species without declaring it fails here, naming it).

Declared by: ``SpeciesEmbedding``, ``SpeciesLinear``, ``SymmetricContraction``, DimeNet++'s
embedding and the ``electrostatics`` term. Buffers are not copied: they are functions of the
model config (species, cutoff …), built for the new species.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def take_species_from(target: nn.Module, source: nn.Module, rows: torch.Tensor,
                      name: str = "") -> None:
    """``source``'s parameters into ``target`` (the same architecture for more species),
    species s of ``source`` as species ``rows[s]`` [S_source] of ``target``."""
    if hasattr(target, "take_species"):
        target.take_species(source, rows)
        return
    for key, parameter in target.named_parameters(recurse=False):
        value = getattr(source, key)
        if value.shape != parameter.shape:
            raise ValueError(f"parameter {name}{key} has shape {tuple(value.shape)} for the "
                             f"old species and {tuple(parameter.shape)} for the new ones, but "
                             f"{type(target).__name__} declares no take_species")
        parameter.copy_(value)
    for key, child in target.named_children():
        take_species_from(child, getattr(source, key), rows, f"{name}{key}.")
