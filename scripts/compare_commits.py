"""One benchmark script, run on two commits in alternation, in one run: min per row and ratio.

Each round runs ``scripts/<script>`` of commit A, then of commit B (each from its own git
worktree, with that worktree first on PYTHONPATH, so each commit times its own code), and
the table cells of every row keep their best value over the rounds. Alternating cancels the
drift of a shared machine; the ratio B / A above 1 means B is slower. Run from the repository
root:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/compare_commits.py A B [--rounds 2] \\
        [--script benchmark_models.py] -- [arguments of the script]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def table(output: str) -> dict[str, list[str]]:
    """Rows of the markdown table in ``output``: first cell → the other cells."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and not set(line) <= set("|-: ") and len(cells) > 1:
            rows[cells[0]] = cells[1:]
    return rows


def run(worktree: Path, script: str, arguments: list[str]) -> dict[str, list[str]]:
    environment = {**os.environ, "PYTHONPATH": str(worktree)}
    result = subprocess.run([sys.executable, str(worktree / "scripts" / script), *arguments],
                            cwd=worktree, env=environment, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{script} failed on {worktree}:\n{result.stderr[-3000:]}")
    return table(result.stdout)


def best(tables: list[dict[str, list[str]]]) -> dict[str, list[str]]:
    """Cell by cell, the smallest number over ``tables`` (text cells from the first)."""
    merged = {}
    for name, cells in tables[0].items():
        merged[name] = [min((t[name][k] for t in tables), key=float) if NUMBER.match(cell)
                        else cell for k, cell in enumerate(cells)]
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--script", default="benchmark_models.py")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    options = parser.parse_args(argv[:split])
    options.arguments = argv[split + 1:]
    repository = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as directory:
        worktrees = {}
        for commit in (options.a, options.b):
            worktrees[commit] = Path(directory) / commit
            subprocess.run(["git", "-C", str(repository), "worktree", "add", "--detach", "-q",
                            str(worktrees[commit]), commit], check=True)
        try:
            results = {commit: [] for commit in worktrees}
            for _ in range(options.rounds):
                for commit, worktree in worktrees.items():
                    results[commit].append(run(worktree, options.script, options.arguments))
        finally:
            for worktree in worktrees.values():
                subprocess.run(["git", "-C", str(repository), "worktree", "remove", "--force",
                                str(worktree)], check=False)
    a, b = best(results[options.a]), best(results[options.b])
    for name, cells in a.items():
        if name not in b:
            continue
        pairs = [f"{x} → {y} ({float(y) / float(x):.2f})" if NUMBER.match(x) and NUMBER.match(y)
                 and float(x) else x for x, y in zip(cells, b[name])]
        print(f"| {name} | " + " | ".join(pairs) + " |")


if __name__ == "__main__":
    main()
