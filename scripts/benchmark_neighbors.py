"""Wall-clock time of equipot's neighbour list (vesin) on rattled FCC copper, cutoff 5 Å.

Sizes: 500 and 32 000 atoms; each time is the best of 5 calls after one warm-up call.
"graph ms" is the whole structure → graph conversion (neighbour list, overlap check, tensors).
ASE's neighbour list is timed the same way on the 500-atom cell for comparison.
Prints a markdown table. Run from the repository root:

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python scripts/benchmark_neighbors.py
"""

import ase.build
from ase.neighborlist import neighbor_list as ase_neighbor_list
from timing import best_ms  # scripts/timing.py

from equipot.data.graph import atoms_to_graph
from equipot.neighbors import neighbor_list

CUTOFF = 5.0


def copper(repeat):
    """Cubic FCC copper repeated `repeat` times along each axis, atoms displaced by ~0.05 Å."""
    atoms = ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat((repeat,) * 3)
    atoms.rattle(stdev=0.05, seed=0)
    return atoms


def main():
    print("| atoms | edges | equipot ms | graph ms | ASE ms | ASE / equipot |")
    print("|---:|---:|---:|---:|---:|---:|")
    for repeat, with_ase in ((5, True), (20, False)):
        atoms = copper(repeat)

        def equipot():
            return neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, CUTOFF)

        edges = len(equipot()[0])
        ms = best_ms(equipot)
        graph_ms = best_ms(lambda: atoms_to_graph(atoms, CUTOFF))
        if with_ase:
            ase_ms = best_ms(lambda: ase_neighbor_list("ijS", atoms, CUTOFF))
            comparison = f"{ase_ms:.1f} | {ase_ms / ms:.1f}×"
        else:
            comparison = "– | –"
        print(f"| {len(atoms)} | {edges} | {ms:.1f} | {graph_ms:.1f} | {comparison} |")


if __name__ == "__main__":
    main()
