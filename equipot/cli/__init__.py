"""Command-line entry points: equipot-train, equipot-evaluate, equipot-md."""

from __future__ import annotations

import sys
from collections.abc import Callable

from equipot.errors import EquipotInputError


def exit_on_input_error(program: str, action: Callable[[], object]) -> None:
    """Run ``action``; bad input ends the program with its message instead of a traceback."""
    try:
        action()
    except EquipotInputError as error:
        sys.exit(f"{program}: error: {error}")
