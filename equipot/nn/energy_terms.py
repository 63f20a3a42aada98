"""Additive energy terms (physics priors, long-range parts) that any backbone can carry.

An energy term is a ``torch.nn.Module`` built as ``term(species=[Z…], cutoff=r_c, **options)``
whose ``forward(geometry)`` returns per-atom energies [N] in eV. The Potential adds them to the
network's per-atom energies before forces and stress are taken, so a term never calls
autograd itself. Terms are named in a model config as ``energy_terms: [{name: ..., ...}]``.

A term that reads the network's features (a charge head, say) names ``irreps_in`` in its
constructor and keeps it as an attribute: ``build_potential`` gives it the last stage's
irreps, and the Potential calls it as ``forward(geometry, features)``. A term may also return
a dict: per-atom energies under ``keys.ATOMIC_ENERGIES`` and further outputs (``keys.CHARGES``
…) that the Potential returns with its own.

A term whose energy is a fixed function of the structure (no learnable parameters, no
features read: a physics prior such as ZBL) sets the class attribute ``fixed = True``. The
training statistics (reference energies, shift, scale) are then fitted to the labels minus
its energies and forces, so the network's scale matches what is left for it to learn.
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


def reads_features(term: nn.Module) -> bool:
    """Whether ``term`` is called with the last stage's features (it declares ``irreps_in``)."""
    return hasattr(term, "irreps_in")


def is_fixed(term) -> bool:
    """Whether a term (class or module) is a fixed function of the structure (``fixed = True``)."""
    return bool(getattr(term, "fixed", False))
