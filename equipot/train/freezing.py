"""Freeze parts of a model: their parameters stay exactly as they are while the rest trains.

Entries are parameter-name patterns (``fnmatch``: ``blocks.0.*``, ``*.radial.*``) or named
groups: ``embedding``; ``blocks``, or ``block<k>`` (counted from 1, as the model's stages);
``readouts``, or ``readout<k>`` (the readout of stage k, 0 the embedding's); ``energy_terms``.
A frozen parameter has ``requires_grad`` off, so the optimiser never sees it (no update, no
weight decay) and the EMA of an unchanging weight is that weight, bit for bit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fnmatch import fnmatchcase

from torch import nn

from equipot.errors import EquipotInputError

GROUPS = {"embedding": "embedding.*", "blocks": "blocks.*", "readouts": "readouts.*",
          "energy_terms": "energy_terms.*"}
NUMBERED = {"block": lambda k: f"blocks.{k - 1}.*", "readout": lambda k: f"readouts.{k}.*"}


def pattern(entry: str) -> str:
    """The parameter-name pattern of a group or pattern ``entry``."""
    numbered = re.fullmatch(r"(block|readout)(\d+)", entry)
    if numbered:
        return NUMBERED[numbered[1]](int(numbered[2]))
    return GROUPS.get(entry, entry)


def freeze(model: nn.Module, entries: Sequence[str]) -> list[str]:
    """Turn off the gradients of the parameters ``entries`` name; returns their names. An
    entry that names no parameter is an error listing the groups and the model's parts."""
    names = [name for name, _ in model.named_parameters()]
    frozen = set()
    for entry in entries:
        matched = [name for name in names if fnmatchcase(name, pattern(str(entry)))]
        if not matched:
            parts = sorted({name.split(".")[0] for name in names})
            raise EquipotInputError(
                f"{entry!r} names no parameter of the model; give a group ({', '.join(GROUPS)}, "
                f"block<k>, readout<k>) or a pattern of parameter names (the model's parts: "
                f"{', '.join(parts)})", field="finetune.freeze")
        frozen.update(matched)
    for name, parameter in model.named_parameters():
        if name in frozen:
            parameter.requires_grad_(False)
    return [name for name in names if name in frozen]


def describe_frozen(model: nn.Module, frozen: Sequence[str]) -> str:
    """E.g. "frozen: 12 parameter tensors (10 240 of 52 000 weights)"."""
    names = set(frozen)
    count = sum(p.numel() for name, p in model.named_parameters() if name in names)
    total = sum(p.numel() for p in model.parameters())
    return f"frozen: {len(names)} parameter tensors ({count} of {total} weights)"
