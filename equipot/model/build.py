"""Model config (a plain dict) → Potential: the one function every entry point uses.

A model config holds the architecture (``block``, sizes, ``cutoff`` …) and the training-set
statistics (``species``, ``reference_energies``, ``shift``, ``scale``, ``avg_num_neighbors``),
so that a saved config and state dict rebuild the model with no data, Hydra or omegaconf.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from inspect import signature

import torch

from equipot.model.potential import Potential
from equipot.nn import electrostatics  # noqa: F401  (registers the "electrostatics" term)
from equipot.nn import zbl  # noqa: F401  (registers the "zbl" term)
from equipot.nn.energy_terms import ENERGY_TERMS
from equipot.nn.ewald_message_passing import WithEwaldMessages
from equipot.nn.distance_floor import DistanceFloor, covalent_floors, training_floors
from equipot.nn.radial import BesselBasis, PolynomialEnvelope
from equipot.nn.dimenet import DimeNetPlusPlusInteraction
from equipot.nn.mace import MACEInteraction
from equipot.nn.nequip import NequIPInteraction
from equipot.nn.painn import PaiNNInteraction
from equipot.nn.schnet import SchNetInteraction

# The interaction-block families; equipot/nn/block.py gives the contract each one follows.
BLOCKS = {"schnet": SchNetInteraction, "painn": PaiNNInteraction, "nequip": NequIPInteraction,
          "mace": MACEInteraction, "dimenet": DimeNetPlusPlusInteraction}

NETWORK_FLOOR_WIDTH = 0.1  # Å, blend of the covalent-radius floor (network_floor_factor)
DTYPES = {"float32": torch.float32, "float64": torch.float64}  # names used in configs

STATISTICS = ("species", "reference_energies", "shift", "scale", "avg_num_neighbors")
# The keys of a model config besides STATISTICS (see build_potential); shortest_distances is an
# optional statistic (model files written before it still load).
ARCHITECTURE = ("block", "cutoff", "num_features", "num_blocks", "num_radial",
                "envelope_exponent", "readout_hidden", "block_options", "energy_terms",
                "long_range_messages", "distance_floor_width", "network_floor_factor",
                "shortest_distances")
# Block constructor arguments that build_potential fills in itself, never block_options.
BUILDER_SUPPLIED = ("irreps_in", "num_features", "num_radial", "avg_num_neighbors",
                    "num_species", "cutoff", "first_block", "scalar_output")


@contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_potential(config: Mapping, dtype: torch.dtype = torch.float32) -> Potential:
    """A freshly initialised Potential with parameters in ``dtype``.

    Keys: block, cutoff, num_features, num_blocks, num_radial, envelope_exponent,
    readout_hidden, block_options (dict), energy_terms (list of {name, **options}),
    long_range_messages (None, or the options of an Ewald message-passing update after every
    block: {k_cutoff, ...}, see ``equipot.nn.ewald_message_passing``), distance_floor_width
    (None, or w in Å: the network reads edge lengths floored at each pair's shortest training
    distance, ``equipot.nn.distance_floor``; needs the statistic shortest_distances),
    network_floor_factor (None, or f: floored at f × the sum of covalent radii instead) and the
    statistics (see ``equipot.data.statistics.compute_statistics``).
    """
    missing = [key for key in STATISTICS if key not in config]
    if missing:
        raise ValueError(f"model config lacks training statistics {missing}")
    if config["block"] not in BLOCKS:
        raise ValueError(f"unknown interaction block '{config['block']}'; "
                         f"available: {sorted(BLOCKS)}")
    block_class = BLOCKS[config["block"]]
    num_features, cutoff = int(config["num_features"]), float(config["cutoff"])
    num_radial = int(config.get("num_radial", 8))
    block_arguments = {"num_features": num_features, "num_radial": num_radial,
                       "avg_num_neighbors": float(config["avg_num_neighbors"]),
                       **dict(config.get("block_options") or {})}
    block_parameters = signature(block_class).parameters
    if "num_species" in block_parameters:
        block_arguments["num_species"] = len(config["species"])
    if "cutoff" in block_parameters:  # bases that scale with it (DimeNet++'s spherical one)
        block_arguments["cutoff"] = cutoff
    readout_hidden = int(config.get("readout_hidden", num_features // 2))
    num_blocks = int(config["num_blocks"])
    with _default_dtype(dtype):
        embedding = block_class.build_embedding(len(config["species"]), block_arguments)
        stages = [embedding]
        for index in range(num_blocks):
            if "first_block" in block_parameters:
                block_arguments["first_block"] = index == 0
            if "scalar_output" in block_parameters:
                block_arguments["scalar_output"] = index == num_blocks - 1
            block = block_class(irreps_in=stages[-1].irreps_out, **block_arguments)
            if config.get("long_range_messages") is not None:
                block = WithEwaldMessages(block, config["long_range_messages"])
            stages.append(block)
        readouts = {}
        for stage, module in enumerate(stages):
            readout = block_class.build_readout(module.irreps_out, stage, num_blocks,
                                                readout_hidden, block_arguments)
            if readout is not None:
                readouts[stage] = readout
        terms = []
        for term in config.get("energy_terms") or []:
            options = dict(term)
            name = options.pop("name")
            if name not in ENERGY_TERMS:
                raise ValueError(f"unknown energy term '{name}'; available: {sorted(ENERGY_TERMS)}")
            if "irreps_in" in signature(ENERGY_TERMS[name]).parameters:  # reads features
                if block_class.features_on != "atoms":
                    raise ValueError(f"energy term '{name}' reads per-atom features, but "
                                     f"{block_class.__name__} passes its features on "
                                     f"{block_class.features_on}")
                options["irreps_in"] = stages[-1].irreps_out
            terms.append(ENERGY_TERMS[name](species=list(config["species"]), cutoff=cutoff,
                                            **options))
        distance_floor = build_distance_floor(config)
        return Potential(
            species=config["species"], cutoff=cutoff,
            embedding=embedding,
            radial_basis=BesselBasis(cutoff, num_radial),
            envelope=PolynomialEnvelope(cutoff, int(config.get("envelope_exponent", 6))),
            blocks=stages[1:], readouts=readouts,
            reference_energies=config["reference_energies"], shift=config["shift"],
            scale=config["scale"], energy_terms=terms,
            distance_floor=distance_floor)


def build_distance_floor(config: Mapping) -> DistanceFloor | None:
    """The floor under the lengths the network reads: at the shortest training distances
    with ``distance_floor_width`` set, else at ``network_floor_factor`` × the covalent radii
    (width NETWORK_FLOOR_WIDTH), else none (``equipot.nn.distance_floor``)."""
    width = config.get("distance_floor_width")
    if width is not None:
        if config.get("shortest_distances") is None:
            raise ValueError("distance_floor_width needs the training statistic "
                             "shortest_distances in the model config")
        return DistanceFloor(training_floors(config["shortest_distances"],
                                             float(config["cutoff"])), float(width))
    factor = config.get("network_floor_factor")
    if factor is not None:
        return DistanceFloor(covalent_floors(config["species"], float(factor)),
                             NETWORK_FLOOR_WIDTH)
    return None
