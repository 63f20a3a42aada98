"""Time and memory per atom of energy+forces calls on large periodic cells: the harness's
ethanol boxes (``../shared/peers``' n³ ethanols on a 4.6 Å grid: 1125 atoms for n = 5, 30 375
for n = 15), through ``EquipotCalculator``, eager and compiled, for the harness's SchNet and
PaiNN (``model.num_radial=20``), float32, random weights.

Each (model, mode, cell) runs in a fresh process under an address-space cap (``--limit-gb``,
default 16), so a call that needs more fails there and is reported: one warm-up call on the
cell (the compiled one compiles on it), then the peak resident memory is reset and
``--calls`` calls are timed (positions nudged by 1e-3 Å before each). Milliseconds per atom
(median); the process's peak resident memory (model, compiling and the first call
included), and the peak of the timed calls above the memory before them (freed memory stays
in the process, ``equipot.heap``, so later calls of the same size need little more). Run
from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_scaling.py [--sizes 5 15]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1].parent / "shared" / "peers"
MODELS = {"schnet": ["model=schnet", "model.num_radial=20"],
          "painn": ["model=painn", "model.num_radial=20"]}


def measure(model_name: str, compiled: bool, size: int, calls: int) -> dict:
    """In this process: one model, one cell (see the module)."""
    import numpy as np
    import torch

    sys.path.insert(0, str(HARNESS))
    import bench_common

    from equipot import EquipotCalculator
    from equipot.model.build import build_potential
    from equipot.train.config import composed

    torch.set_num_threads(1)
    config = composed(*MODELS[model_name], "data.train=unused.xyz")["model"]
    config.update(species=[1, 6, 8], reference_energies=[0.0] * 3, shift=0.0, scale=1.0,
                  avg_num_neighbors=8.0)
    torch.manual_seed(0)
    model = build_potential(config, dtype=torch.float32)
    atoms = bench_common.ethanol_box(size)
    atoms.calc = EquipotCalculator(model, compile=compiled)
    rng = np.random.default_rng(0)
    times = []
    for call in range(calls + 1):
        atoms.positions = atoms.positions + 1e-3 * rng.standard_normal(atoms.positions.shape)
        if call == 1:
            highest, before = peak(reset=True)
        started = time.perf_counter()
        atoms.get_forces()
        if call > 0:
            times.append(time.perf_counter() - started)
    return {"atoms": len(atoms), "ms_per_atom": 1e3 * float(np.median(times)) / len(atoms),
            "peak_above_gib": (peak()[0] - before) / 2**30, "peak_gib": highest / 2**30}


def peak(reset: bool = False) -> tuple[float, float]:
    """(peak, current) resident bytes of this process; ``reset`` the peak afterwards."""
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    values = tuple(int(fields[name].split()[0]) * 1024 for name in ("VmHWM", "VmRSS"))
    if reset:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[5, 15])
    parser.add_argument("--modes", nargs="+", default=["compiled", "eager"])
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--limit-gb", type=float, default=16.0)
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)  # model mode size calls
    arguments = parser.parse_args()
    if arguments.one:
        limit = int(arguments.limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        name, mode, size, calls = arguments.one
        print(json.dumps(measure(name, mode == "compiled", int(size), int(calls))))
        return
    print(f"| model | mode | atoms | ms per atom | peak of the process, GiB (cap "
          f"{arguments.limit_gb:g}) | peak of a call after the first, above its start, GiB |")
    print("|---|---|---:|---:|---:|---:|")
    for name in arguments.models:
        for mode in arguments.modes:
            for size in arguments.sizes:
                run = subprocess.run(
                    [sys.executable, __file__, "--limit-gb", str(arguments.limit_gb), "--one",
                     name, mode, str(size), str(arguments.calls)],
                    capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
                if run.returncode:
                    tail = (run.stderr.strip().splitlines() or ["?"])[-1][:120]
                    print(f"| {name} | {mode} | {9 * size**3} | failed: {tail} | |", flush=True)
                    continue
                result = json.loads(run.stdout.strip().splitlines()[-1])
                print(f"| {name} | {mode} | {result['atoms']} | {result['ms_per_atom']:.4f} | "
                      f"{max(result['peak_gib'], result['peak_above_gib']):.2f} | "
                      f"{result['peak_above_gib']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
