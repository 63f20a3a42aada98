"""What an interaction-block family is to ``build_potential`` and the Potential.

A model is a chain of stages, with an energy readout after any of them:

    x⁽⁰⁾ = embedding(geometry),    x⁽ᵏ⁾ = block_k(x⁽ᵏ⁻¹⁾, geometry),    k = 1 … n
    ε_i  = Σ_k readout_k(x⁽ᵏ⁾, geometry)_i           (dimensionless per-atom energy, [N])

A family is declared once, as a ``Family``: its name, where its features live, the dataclass of
its options (``block_options`` of a model config, with their defaults) and one builder

    build(context: BlockContext, options) -> FamilyParts(embedding, blocks, readouts)

that makes every module of the network from the declared context. Features are per atom
[N, dim(irreps)] for most families and per edge [E, dim] where the paper passes messages on
edges (DimeNet++). Every module declares ``irreps_in`` (the embedding excepted) and
``irreps_out`` (e3nn), and the Potential checks that they chain. ``species_embedding_parts``
gives the common layout: a species embedding, the blocks, and one MLP of the scalars after
the last block; a family whose paper differs (MACE reads out every layer, DimeNet++ embeds
edges and has an output block after every stage) builds its own parts in its own file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from e3nn import o3
from torch import nn

from equipot.nn.embedding import SpeciesEmbedding
from equipot.nn.readout import ScalarReadout

FEATURES_ON = ("atoms", "edges")


@dataclass(frozen=True)
class BlockContext:
    """Everything a family's builder may use besides its own options."""

    species: tuple[int, ...]  # atomic numbers of the model's elements
    cutoff: float  # Å
    num_features: int  # channels F of every stage
    num_blocks: int  # interaction blocks n
    num_radial: int  # radial basis functions B of the geometry
    readout_hidden: int  # width of the readout MLPs
    avg_num_neighbors: float  # ⟨n⟩ of the training set, normalising message sums
    # How a block becomes its stage: itself, or itself followed by a long-range update
    # (``equipot.blocks.ewald_messages``); applied by ``chain_blocks`` as each block is made.
    as_stage: Callable[[nn.Module], nn.Module] = lambda block: block

    @property
    def num_species(self) -> int:
        return len(self.species)


@dataclass
class FamilyParts:
    """The network of one model: stage 0 (embedding), stages 1 … n (blocks) and the readout
    of each stage that has one (``readouts[k]`` reads stage k's features)."""

    embedding: nn.Module
    blocks: list[nn.Module]
    readouts: dict[int, nn.Module]


@dataclass(frozen=True)
class Family:
    """One interaction-block family. ``options``: a dataclass whose fields are the family's
    ``block_options`` with their defaults; ``build(context, options)`` makes its parts."""

    name: str
    build: Callable[[BlockContext, Any], FamilyParts]
    options: type
    features_on: str = "atoms"  # where features live: "atoms" [N, dim] or "edges" [E, dim]

    def __post_init__(self):
        if self.features_on not in FEATURES_ON:
            raise ValueError(f"family {self.name}: features_on must be one of {FEATURES_ON}")


def chain_blocks(context: BlockContext, first_irreps: o3.Irreps,
                 make_block: Callable[[o3.Irreps, int], nn.Module]) -> list[nn.Module]:
    """Stages 1 … n, block k built as ``make_block(irreps_in, k)`` on the irreps of stage
    k − 1 and made a stage by ``context.as_stage``."""
    blocks, irreps = [], o3.Irreps(first_irreps)
    for index in range(1, context.num_blocks + 1):
        blocks.append(context.as_stage(make_block(irreps, index)))
        irreps = blocks[-1].irreps_out
    return blocks


def species_embedding_parts(context: BlockContext,
                            make_block: Callable[[o3.Irreps, int], nn.Module]) -> FamilyParts:
    """The common layout: species embedding → blocks → one MLP of the last stage's scalars."""
    embedding = SpeciesEmbedding(context.num_species, context.num_features)
    blocks = chain_blocks(context, embedding.irreps_out, make_block)
    last = blocks[-1].irreps_out if blocks else embedding.irreps_out
    return FamilyParts(embedding, blocks,
                       {context.num_blocks: ScalarReadout(last, context.readout_hidden)})
