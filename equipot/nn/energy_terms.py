"""Additive energy terms (physics priors, long-range parts) that any backbone can carry.

An energy term is a ``torch.nn.Module`` built as ``term(species=[Z…], cutoff=r_c, **options)``
whose ``forward(geometry)`` returns per-atom energies [N] in eV. The Potential adds them to the
network's per-atom energies before forces and stress are taken, so a term never calls
autograd itself. Terms are named in a model config as ``energy_terms: [{name: ..., ...}]``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

ENERGY_TERMS: dict[str, Callable[..., nn.Module]] = {}


def register_energy_term(name: str):
    """Class decorator making an energy term available to model configs under ``name``."""

    def register(cls):
        if name in ENERGY_TERMS and ENERGY_TERMS[name] is not cls:
            raise ValueError(f"energy term '{name}' is already registered")
        ENERGY_TERMS[name] = cls
        return cls

    return register
