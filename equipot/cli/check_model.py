"""``equipot-check-model``: the short-range sanity report of a model file.

    equipot-check-model runs/x/model.pt [--output DIR]

Writes dimer curves (CSV + PNG) of every element pair and ``summary.json`` to DIR (default:
``short_range/`` beside the model), prints one verdict per pair and exits with status 1 when a
check fails (see ``equipot.analysis.short_range`` for the criterion). An ensemble's members
are checked one by one, each into ``member_<k>/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from equipot.analysis.short_range import ShortRangeReport, check_short_range, format_report
from equipot.cli import exit_on_error
from equipot.model.checkpoint import load
from equipot.model.ensemble import Ensemble


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="equipot-check-model",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="model file (model.pt)")
    parser.add_argument("--output", type=Path, default=None,
                        help="directory of the report (default: short_range/ beside the model)")
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> list[ShortRangeReport]:
    """The report of the model, or of each member of an ensemble (in ``member_<k>/``)."""
    model = load(args.model, device=args.device)
    output_dir = args.output or args.model.parent / "short_range"
    members = list(model.members) if isinstance(model, Ensemble) else [model]
    reports = []
    for k, member in enumerate(members):
        directory = output_dir if len(members) == 1 else output_dir / f"member_{k}"
        reports.append(check_short_range(member, model.config.get("shortest_distances"),
                                         directory))
        print(format_report(reports[-1], directory))
    return reports


def main(argv=None) -> None:
    reports = exit_on_error("equipot-check-model", lambda: run(parse_arguments(argv)))
    sys.exit(0 if all(report.passed for report in reports) else 1)


if __name__ == "__main__":
    main()
