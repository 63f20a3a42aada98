"""Model config (a plain dict) → Potential: the one function every entry point uses.

A model config holds the architecture (``block``, sizes, ``cutoff`` …) and the training-set
statistics (``species``, ``reference_energies``, ``shift``, ``scale``, ``avg_num_neighbors``),
so that a saved config and state dict rebuild the model with no data, Hydra or omegaconf. The
Potential keeps the config it was built from (``Potential.config``), which is what
``save_model`` writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields

import torch

from equipot.blocks.contract import BlockContext
from equipot.blocks.ewald_messages import WithEwaldMessages
from equipot.blocks.registry import family_named
from equipot.model.ensemble import Ensemble, EnsembleOptions
from equipot.model.llpr import LastLayerRigidity, LLPROptions
from equipot.model.potential import Potential
from equipot.nn.radial import BesselBasis, PolynomialEnvelope
from equipot.physics.distance_floor import DistanceFloor, build_distance_floor
from equipot.physics.registry import energy_term_named
from equipot.physics.term import EnergyTerm, TermContext

DTYPES = {"float32": torch.float32, "float64": torch.float64}  # names used in configs

STATISTICS = ("species", "reference_energies", "shift", "scale", "avg_num_neighbors")
# The keys of a model config besides STATISTICS (see build_potential); shortest_distances is an
# optional statistic (model files written before it still load).
ARCHITECTURE = ("block", "cutoff", "num_features", "num_blocks", "num_radial",
                "envelope_exponent", "readout_hidden", "block_options", "energy_terms",
                "long_range_messages", "distance_floor", "uncertainty", "shortest_distances")


@contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def listed_energy_terms(terms: Sequence[Mapping] | Mapping | None) -> list[dict]:
    """Energy terms as model files list them, ``[{name, **options}]``, from that list or from
    the keyed form of the Hydra configs, ``{name: options}`` (which Hydra can merge and
    override term by term; a null entry switches a term off)."""
    if isinstance(terms, Mapping):
        return [{"name": name, **dict(options or {})} for name, options in terms.items()
                if options is not None]
    return [dict(term) for term in terms or []]


def option_names(options_class: type) -> list[str]:
    """The option names a family's or energy term's ``Options`` dataclass declares."""
    return [field.name for field in fields(options_class)]


def build_potential(config: Mapping, dtype: torch.dtype = torch.float32
                    ) -> Potential | Ensemble:
    """A freshly initialised Potential with parameters in ``dtype``; with ``uncertainty``
    {method: llpr, **LLPROptions} it carries a ``LastLayerRigidity`` (``equipot.model.llpr``),
    with {method: ensemble, size: K, **EnsembleOptions} it is an ``Ensemble`` of K Potentials
    of the rest of the config (``equipot.model.ensemble``).

    Keys: block, cutoff, num_features, num_blocks, num_radial, envelope_exponent,
    readout_hidden, block_options (the family's ``Options``), energy_terms (list of {name,
    **options}, or keyed {name: options}: ``listed_energy_terms``), long_range_messages (None,
    or the options of an Ewald message-passing update after every block: {k_cutoff, ...}, see
    ``equipot.blocks.ewald_messages``), distance_floor (None, or the options of the floor under
    the edge lengths the network reads, ``equipot.physics.distance_floor.DistanceFloorOptions``)
    and the statistics (see ``equipot.train.statistics.compute_statistics``).
    """
    uncertainty = dict(config.get("uncertainty") or {})
    method = uncertainty.pop("method", None)
    if method == "ensemble":
        options = EnsembleOptions(**uncertainty)
        member = {key: value for key, value in config.items() if key != "uncertainty"}
        return Ensemble(config, [build_potential(member, dtype) for _ in range(options.size)],
                        options)
    if method not in (None, "llpr"):
        raise ValueError(f"uncertainty.method={method!r} is not one of: ensemble, llpr")
    model = build_network_potential(config, dtype)
    if method == "llpr":
        model.uncertainty = LastLayerRigidity(model.num_last_layer_features,
                                              model.num_readout_inputs, len(model.species),
                                              LLPROptions(**uncertainty))
    return model


def build_network_potential(config: Mapping, dtype: torch.dtype) -> Potential:
    """The Potential of ``config`` (its uncertainty aside): see ``build_potential``."""
    missing = [key for key in STATISTICS if key not in config]
    if missing:
        raise ValueError(f"model config lacks training statistics {missing}")
    unknown = sorted(set(config) - set(ARCHITECTURE) - set(STATISTICS))
    if unknown:  # e.g. a key an older equipot wrote: never ignored silently
        raise ValueError(f"model config has unknown keys {unknown}; it takes "
                         f"{', '.join(ARCHITECTURE + STATISTICS)} (model files of older "
                         f"formats are upgraded by equipot.load)")
    family = family_named(config["block"])
    num_features, cutoff = int(config["num_features"]), float(config["cutoff"])
    num_radial = int(config.get("num_radial", 8))
    long_range = config.get("long_range_messages")
    if long_range is not None and family.features_on != "atoms":
        raise ValueError(f"long_range_messages act on atom features, but the {family.name} "
                         f"block passes its features on {family.features_on}")
    context = BlockContext(
        species=tuple(int(z) for z in config["species"]), cutoff=cutoff,
        num_features=num_features, num_blocks=int(config["num_blocks"]), num_radial=num_radial,
        readout_hidden=int(config.get("readout_hidden", num_features // 2)),
        avg_num_neighbors=float(config["avg_num_neighbors"]),
        as_stage=((lambda block: WithEwaldMessages(block, long_range)) if long_range is not None
                  else (lambda block: block)))
    with _default_dtype(dtype):
        parts = family.build(context, family.options(**dict(config.get("block_options") or {})))
        last = parts.blocks[-1] if parts.blocks else parts.embedding
        features = last.irreps_out if family.features_on == "atoms" else None
        return Potential(
            config=config, species=context.species, cutoff=cutoff, embedding=parts.embedding,
            **radial_functions(config), blocks=parts.blocks, readouts=parts.readouts,
            reference_energies=config["reference_energies"], shift=config["shift"],
            scale=config["scale"],
            energy_terms=build_energy_terms(config, features, family.name),
            distance_floor=distance_floor(config))


def radial_functions(config: Mapping) -> dict:
    """The Potential's radial basis (``num_radial`` Bessel functions) and cutoff envelope."""
    cutoff = float(config["cutoff"])
    return {"radial_basis": BesselBasis(cutoff, int(config.get("num_radial", 8))),
            "envelope": PolynomialEnvelope(cutoff, int(config.get("envelope_exponent", 6)))}


def build_energy_terms(config: Mapping, features=None, owner: str = "the model",
                       fixed_only: bool = False) -> list[EnergyTerm]:
    """The energy terms named in ``config["energy_terms"]`` (only the fixed ones with
    ``fixed_only``); ``features``: the irreps of the last stage's per-atom features, None where
    the network has none (its features live on edges)."""
    context = TermContext(species=tuple(int(z) for z in config["species"]),
                          cutoff=float(config["cutoff"]), features=features)
    terms = []
    for entry in listed_energy_terms(config.get("energy_terms")):
        options = dict(entry)
        term = energy_term_named(options.pop("name"))
        if fixed_only and not term.fixed:
            continue
        if term.reads_features and features is None:
            raise ValueError(f"energy term '{term.name}' reads per-atom features, but "
                             f"{owner} passes its features on edges")
        terms.append(term(context, term.Options(**options)))
    return terms


def build_fixed_terms(config: Mapping, dtype: torch.dtype = torch.float64) -> Potential:
    """A Potential of the fixed energy terms of ``config`` alone (no network, zero reference
    energies and shift): what the trained model adds to its network, for any batch."""
    with _default_dtype(dtype):
        return Potential(
            config=config, species=config["species"], cutoff=float(config["cutoff"]),
            embedding=None, **radial_functions(config), blocks=[], readouts={},
            reference_energies=[0.0] * len(config["species"]),
            shift=0.0, scale=0.0, energy_terms=build_energy_terms(config, fixed_only=True))


def distance_floor(config: Mapping) -> DistanceFloor | None:
    """The floor under the lengths the network reads, or None without ``distance_floor``."""
    options = config.get("distance_floor")
    if options is None:
        return None
    return build_distance_floor(options, config["species"], float(config["cutoff"]),
                                config.get("shortest_distances"))
