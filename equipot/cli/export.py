"""``equipot-export``: a model file compiled ahead of time into a package that runs without
equipot's model code.

    equipot-export runs/x/model.pt runs/x/model.pt2

The package (``equipot.model.exported``) holds energy and forces, and with stress, each one
graph compiled by AOTInductor; ``equipot.load`` and ``EquipotCalculator`` take it like a model
file (one structure per call, on the CPU, in the model's dtype). Compiling takes minutes.
DimeNet++ and models with Ewald terms cannot be exported (an error says so; nothing is
written).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from equipot.cli import exit_on_error
from equipot.errors import EquipotInputError
from equipot.model.build import DTYPES
from equipot.model.checkpoint import load
from equipot.model.exported import export_model


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="equipot-export", description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="model file (model.pt)")
    parser.add_argument("output", type=Path, help="the package to write (.pt2)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="default: the dtype the model was trained in")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> Path:
    if args.output.suffix != ".pt2":
        raise EquipotInputError("the package's name must end in .pt2", str(args.output))
    model = load(args.model, dtype=DTYPES.get(args.dtype))
    started = time.monotonic()
    path = export_model(model, args.output)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) in "
          f"{time.monotonic() - started:.0f} s")
    return path


def main(argv=None) -> None:
    exit_on_error("equipot-export", lambda: run(parse_arguments(argv)))


if __name__ == "__main__":
    main()
