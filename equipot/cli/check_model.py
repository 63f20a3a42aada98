"""``equipot-check-model``: the short-range sanity report of a model file.

    equipot-check-model runs/x/model.pt [--output DIR]

Writes dimer curves (CSV + PNG) of every element pair and ``summary.json`` to DIR (default:
``short_range/`` beside the model), prints one verdict per pair and exits with status 1 when a
check fails (see ``equipot.analysis.short_range`` for the criterion).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from equipot.analysis.short_range import ShortRangeReport, check_short_range, format_report
from equipot.cli import exit_on_error
from equipot.model.checkpoint import load


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="equipot-check-model",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="model file (model.pt)")
    parser.add_argument("--output", type=Path, default=None,
                        help="directory of the report (default: short_range/ beside the model)")
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> ShortRangeReport:
    model = load(args.model, device=args.device)
    output_dir = args.output or args.model.parent / "short_range"
    report = check_short_range(model, model.config.get("shortest_distances"), output_dir)
    print(format_report(report, output_dir))
    return report


def main(argv=None) -> None:
    report = exit_on_error("equipot-check-model", lambda: run(parse_arguments(argv)))
    sys.exit(0 if report.passed else 1)


if __name__ == "__main__":
    main()
