"""Make the bundled rMD17 ethanol set: 1000 configurations split into 900 train + 100 test.

The frames are copied verbatim (same numbers, same text) from the BOTNet benchmark data,
MIT licence; run from the repository root with the shared data beside it:

    python scripts/bundle_ethanol.py ../shared/data/ethanol equipot/datasets/rmd17_ethanol
"""

import shutil
import sys
from pathlib import Path

import numpy as np

NUM_TEST = 100
SEED = 0


def frames(text: str) -> list[str]:
    """Extended-XYZ text split into whole frames (count line, comment line, atom lines)."""
    lines, out, start = text.splitlines(keepends=True), [], 0
    while start < len(lines):
        end = start + 2 + int(lines[start])
        out.append("".join(lines[start:end]))
        start = end
    return out


def main(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    all_frames = frames((source / "train.xyz").read_text())
    order = np.random.default_rng(SEED).permutation(len(all_frames))
    test, train = sorted(order[:NUM_TEST]), sorted(order[NUM_TEST:])
    (target / "train.xyz").write_text("".join(all_frames[k] for k in train))
    (target / "test.xyz").write_text("".join(all_frames[k] for k in test))
    shutil.copy(source / "isolated_atoms.xyz", target / "isolated_atoms.xyz")
    shutil.copy(source.parent / "LICENSE", target / "LICENSE")
    print(f"{len(train)} train, {len(test)} test configurations written to {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
