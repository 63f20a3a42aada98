"""The energy terms a model config can name (``energy_terms: {name: options}`` in the Hydra
configs, ``[{name, **options}]`` in model files).

The terms of this package are listed here, explicitly; a term defined elsewhere is added with
``register_energy_term`` before the model is built.
"""

from __future__ import annotations

from equipot.physics.electrostatics import Electrostatics
from equipot.physics.term import EnergyTerm
from equipot.physics.zbl import ZBLRepulsion

ENERGY_TERMS: dict[str, type[EnergyTerm]] = {term.name: term
                                             for term in (ZBLRepulsion, Electrostatics)}


def register_energy_term(term: type[EnergyTerm]) -> type[EnergyTerm]:
    """Make ``term`` available to model configs under ``term.name`` (usable as a decorator)."""
    if ENERGY_TERMS.get(term.name, term) is not term:
        raise ValueError(f"a different energy term '{term.name}' is already registered")
    ENERGY_TERMS[term.name] = term
    return term


def energy_term_named(name: str) -> type[EnergyTerm]:
    """The registered term ``name``, or an error listing the registered ones."""
    if name not in ENERGY_TERMS:
        raise ValueError(f"unknown energy term '{name}'; available: {sorted(ENERGY_TERMS)}")
    return ENERGY_TERMS[name]
