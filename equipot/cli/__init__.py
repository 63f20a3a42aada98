"""Command-line entry points: equipot-train, equipot-evaluate, equipot-md, equipot-check-model."""

from __future__ import annotations

import sys
from collections.abc import Callable

from equipot.errors import EquipotInputError


def exit_on_input_error(program: str, action: Callable[[], object]) -> object:
    """``action()``; bad input ends the program with its message instead of a traceback."""
    try:
        return action()
    except EquipotInputError as error:
        sys.exit(f"{program}: error: {error}")
