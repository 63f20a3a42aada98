"""The interaction-block families a model config can name (``block: <name>``).

The five of this package are listed here, explicitly; a family defined elsewhere (a study's
own block, a test's toy block) is added with ``register_family`` before the model is built.
"""

from __future__ import annotations

from equipot.blocks.contract import Family
from equipot.blocks.dimenet import DIMENET
from equipot.blocks.mace import MACE
from equipot.blocks.nequip import NEQUIP
from equipot.blocks.painn import PAINN
from equipot.blocks.schnet import SCHNET

FAMILIES: dict[str, Family] = {family.name: family
                               for family in (SCHNET, PAINN, NEQUIP, MACE, DIMENET)}


def register_family(family: Family) -> Family:
    """Make ``family`` available to model configs under ``family.name``."""
    if FAMILIES.get(family.name, family) is not family:
        raise ValueError(f"a different block family '{family.name}' is already registered")
    FAMILIES[family.name] = family
    return family


def family_named(name: str) -> Family:
    """The registered family ``name``, or an error listing the registered ones."""
    if name not in FAMILIES:
        raise ValueError(f"unknown interaction block '{name}'; available: {sorted(FAMILIES)}")
    return FAMILIES[name]
