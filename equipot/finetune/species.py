"""A trained model extended to more elements: predictions on its old elements unchanged.

The extended model is the same architecture built for the union of species (sorted by atomic
number, so an old element may get another index) and takes every weight of the old one, each
per-species tensor row by row (``equipot.nn.species_rows``). What a new element starts with:

- its rows of every per-species weight (embedding, species-dependent linear maps, MACE's
  contraction weights, the electrostatics term's q_0) keep a fresh model's initialisation,
  as a run from scratch would draw them (q_0: 0 e);
- its reference energy is fitted afterwards (``equipot.finetune.statistics``), 0 until then;
- its element pairs' shortest distances (the dimer penalty's and the short-range report's
  edge of the data) are those of the new data; the old pairs keep the source's, so that the
  distance floor, which reads them, is unchanged;
- pair terms (ZBL) and floors are functions of the elements, built for the new ones.

The average number of neighbours is the source's: it normalises the network's sums.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from equipot.model.build import build_potential
from equipot.model.potential import Potential
from equipot.nn.species_rows import take_species_from


def merged_distances(old_species: Sequence[int], old: list | None, new_species: Sequence[int],
                     new: list | None, species: Sequence[int]) -> list | None:
    """[S][S] shortest distances over ``species``: the old table's for pairs of old elements,
    the new one's for pairs with a new element (None where neither knows the pair)."""
    if old is None and new is None:
        return None

    def look_up(table, table_species, a, b):
        if table is None or a not in table_species or b not in table_species:
            return None
        return table[table_species.index(a)][table_species.index(b)]

    return [[look_up(old, old_species, a, b) if a in old_species and b in old_species
             else look_up(new, new_species, a, b) for b in species] for a in species]


def with_species(model: Potential, added: Sequence[int],
                 shortest_distances: list | None = None,
                 distances_species: Sequence[int] = ()) -> Potential:
    """``model`` extended to the elements ``added`` (atomic numbers it lacks), with
    ``shortest_distances`` [S'][S'] of the new data over ``distances_species`` for their pairs.
    ``model`` itself when nothing is added."""
    added = sorted(set(int(z) for z in added) - set(model.species))
    if not added:
        return model
    old = model.species
    species = sorted(old + added)
    reference = [model.config["reference_energies"][old.index(z)] if z in old else 0.0
                 for z in species]
    config = {**model.config, "species": species, "reference_energies": reference,
              "shortest_distances": merged_distances(
                  old, model.config.get("shortest_distances"), list(distances_species),
                  shortest_distances, species)}
    extended = build_potential(config, dtype=model.dtype)
    take_species_from(extended, model, torch.tensor([species.index(z) for z in old]))
    extended.metadata = dict(model.metadata)
    return extended.eval()
