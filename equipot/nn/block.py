"""What an interaction block is to ``build_potential`` and the Potential.

A model is a chain of stages, with an energy readout after any of them:

    x⁽⁰⁾ = embedding(geometry),    x⁽ᵏ⁾ = block_k(x⁽ᵏ⁻¹⁾, geometry),    k = 1 … n
    ε_i  = Σ_k readout_k(x⁽ᵏ⁾, geometry)_i           (dimensionless per-atom energy, [N])

Features are per atom [N, dim(irreps)] for most families and per edge [E, dim] where the
paper passes messages on edges (DimeNet++). A block declares ``irreps_in`` and ``irreps_out``
and is built as

    Block(irreps_in=<previous stage's irreps_out>, num_features=F, num_radial=B,
          avg_num_neighbors=⟨n⟩, **block_options)

plus ``num_species`` (species-dependent weights), ``cutoff`` (Å, for bases that scale with
it, as DimeNet++'s spherical basis), ``first_block`` (True for the block reading the
embedding, which MACE builds differently) and ``scalar_output`` (True for the last block, whose
only reader is an invariant readout) when its constructor names them. The two
class methods below give the common layout: a species embedding, and one MLP of the scalars
after the last block. A family whose paper differs (MACE reads out every layer, DimeNet++
embeds edges and has an output block after every stage) overrides them in its own file, so
that nothing model-specific lives outside it.
"""

from __future__ import annotations

from collections.abc import Mapping

from e3nn import o3
from torch import nn

from equipot.nn.embedding import SpeciesEmbedding
from equipot.nn.readout import ScalarReadout


class InteractionBlock(nn.Module):
    irreps_in: o3.Irreps
    irreps_out: o3.Irreps
    features_on = "atoms"  # where features live: "atoms" [N, dim] or "edges" [E, dim]

    @classmethod
    def build_embedding(cls, num_species: int, options: Mapping) -> nn.Module:
        """Stage 0: species (and geometry) → the first block's input features.
        ``options``: the block arguments (num_features, num_radial, … block_options)."""
        return SpeciesEmbedding(num_species, options["num_features"])

    @classmethod
    def build_readout(cls, irreps: o3.Irreps, stage: int, num_blocks: int,
                      readout_hidden: int, options: Mapping) -> nn.Module | None:
        """The readout of stage ``stage`` (0: the embedding, k: block k) with output
        ``irreps``, or None where that stage has none."""
        return ScalarReadout(irreps, readout_hidden) if stage == num_blocks else None
