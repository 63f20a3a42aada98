"""Command-line entry points: equipot-train, equipot-evaluate, equipot-md, equipot-check-model,
equipot-select, equipot-predict, equipot-export, equipot-lammps."""

from __future__ import annotations

import sys
from collections.abc import Callable

from equipot.errors import EquipotInputError, EquipotRunError


def exit_on_error(program: str, action: Callable[[], object]) -> object:
    """``action()``; bad input, or a run that fails, ends the program with its message and
    exit status 1 instead of a traceback."""
    try:
        return action()
    except (EquipotInputError, EquipotRunError) as error:
        sys.exit(f"{program}: error: {error}")
