"""Long-range benchmark data: charged and polar molecular pairs with a GFN2-xTB reference.

Regenerates the bundled files of ``equipot/datasets/long_range`` (about a minute on one core):

    OMP_NUM_THREADS=1 .venv/bin/python scripts/make_long_range_data.py equipot/datasets/long_range

Needs tblite (``pip install -c constraints.txt tblite==0.8.0``, or the ``benchmarks`` extra).
Each structure is two rigid fragments, slightly distorted (Gaussian displacements of
``DISTORTION`` Å from their GFN2-xTB minima), randomly rotated and placed so that their shortest
interatomic distance, the *separation*, hits a target drawn half below and half above the
models' 5 Å cutoff (contact to ``MAX_SEPARATION``). Contact means no inter-fragment pair closer
than ``CLASH_FACTOR`` × the sum of the two van der Waals radii. Every split and system has its
own seeded random stream, so the files are the same on every run.

The systems keep integer fragment charges at every separation (checked on every structure
beyond the cutoff): ``--survey`` prints the fragment charges along a rigid scan for them and for
the pairs left out, whose charge leaks from one fragment to the other at large separations in
GFN2-xTB (or whose SCF does not converge there).

Files: ``{train,valid,test,scan}.xyz`` (molecules) and ``periodic_{train,valid,test,scan}.xyz``
(an ion pair in a cubic box, with stress and without dipoles). Units: eV, eV/Å, e, e·Å, eV/Å³.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import CalculationFailed
from ase.data import vdw_radii
from ase.optimize import BFGS
from scipy.spatial.transform import Rotation
from tblite.ase import TBLite

from equipot.io import atomic_path

SEED = 2024
CUTOFF = 5.0  # Å, the models' cutoff: targets are drawn half below, half above it
MIN_SEPARATION = 1.5  # Å, lowest target; the clash rule rejects what is too close
MAX_SEPARATION = 12.0  # Å, training and test range (the scan goes further)
SCAN_SEPARATIONS = np.arange(1.5, 20.001, 0.25)  # Å, targets of the rigid scans
DISTORTION = 0.02  # Å, standard deviation of the random displacements of fragment atoms;
# at 0.05 Å a stretched N–H bond of ammonium takes up to 0.08 e from perchlorate 6–12 Å away
CLASH_FACTOR = 0.65  # no inter-fragment pair closer than this × (r_vdW,i + r_vdW,j)
BOX = 12.0  # Å, edge of the cubic cell of the periodic case (≥ 2 × cutoff)
CHARGE_TOLERANCE = 0.02  # e, largest fragment charge deviation allowed beyond the cutoff
PLACEMENT_STEP = 0.01  # Å, resolution of the centre-of-mass distance search
SPLITS = {"train": 400, "valid": 40, "test": 200}  # structures per system
PERIODIC_SPLITS = {"train": 300, "valid": 30, "test": 150}


def tetrahedron(centre: str, ligand: str, bond: float) -> Atoms:
    """An XY₄ tetrahedron with bond length ``bond`` (Å)."""
    corners = np.array([[1, 1, 1], [-1, -1, 1], [-1, 1, -1], [1, -1, -1]]) / np.sqrt(3)
    return Atoms(centre + ligand * 4, np.vstack([np.zeros(3), bond * corners]))


def acetate() -> Atoms:
    atoms = molecule("CH3COOH")
    del atoms[3]  # the acidic hydrogen
    return atoms


# name → (geometry before relaxation, charge in e)
FRAGMENTS: dict[str, tuple[Callable[[], Atoms], int]] = {
    "ammonium": (lambda: tetrahedron("N", "H", 1.03), +1),
    "perchlorate": (lambda: tetrahedron("Cl", "O", 1.45), -1),
    "chloride": (lambda: Atoms("Cl"), -1),
    "water": (lambda: molecule("H2O"), 0),
    "acetate": (acetate, -1),
    "sodium": (lambda: Atoms("Na"), +1),
}
# name → (fragment, fragment): pairs in the data set, then pairs that only --survey shows
SYSTEMS = {
    "ammonium_perchlorate": ("ammonium", "perchlorate"),
    "ammonium_ammonium": ("ammonium", "ammonium"),
    "ammonium_water": ("ammonium", "water"),
    "chloride_water": ("chloride", "water"),
    "water_dimer": ("water", "water"),
}
LEFT_OUT = {
    "acetate_ammonium": ("acetate", "ammonium"),
    "ammonium_chloride": ("ammonium", "chloride"),
    "sodium_chloride": ("sodium", "chloride"),
    "sodium_water": ("sodium", "water"),
}
PERIODIC_SYSTEM = "ammonium_perchlorate"


def xtb(charge: int) -> TBLite:
    """GFN2-xTB for a structure of total charge ``charge`` (e)."""
    return TBLite(method="GFN2-xTB", charge=charge, verbosity=0)


def relaxed_fragment(name: str) -> Atoms:
    """The GFN2-xTB minimum of fragment ``name``, centre of mass at the origin."""
    build, charge = FRAGMENTS[name]
    atoms = build()
    if len(atoms) > 1:
        atoms.calc = xtb(charge)
        BFGS(atoms, logfile=None).run(fmax=0.005)
        atoms.calc = None
    atoms.positions -= atoms.get_center_of_mass()
    atoms.info["charge"] = charge
    return atoms


@dataclass
class PairSampler:
    """Places fragment B relative to fragment A at a target separation (Å)."""

    a: Atoms
    b: Atoms
    box: float | None  # cubic cell edge (Å) or None for a molecule

    def __post_init__(self):
        radii = vdw_radii[self.a.numbers][:, None] + vdw_radii[self.b.numbers][None, :]
        self.contact = CLASH_FACTOR * radii  # [N_A, N_B] Å

    def distances(self, pos_a: np.ndarray, pos_b: np.ndarray) -> np.ndarray:
        """Inter-fragment distances [..., N_A, N_B] (Å), minimum image in the cubic box."""
        vectors = pos_b[..., None, :, :] - pos_a[..., :, None, :]
        if self.box is not None:
            vectors -= self.box * np.round(vectors / self.box)
        return np.linalg.norm(vectors, axis=-1)

    def place(self, pos_a: np.ndarray, pos_b: np.ndarray, direction: np.ndarray,
              separation: float) -> np.ndarray | None:
        """Positions of B (fragment centred at the origin) shifted along ``direction``, coming
        from where the fragments are farthest apart, until the separation reaches
        ``separation``; None if it never does or the fragments clash there."""
        # far enough for the scans (fragments are < 5 Å across), or the box's body diagonal
        reach = SCAN_SEPARATIONS[-1] + 10.0 if self.box is None else self.box * np.sqrt(3)
        shifts = np.arange(0.0, reach, PLACEMENT_STEP)
        moved = pos_b[None] + shifts[:, None, None] * direction  # [S, N_B, 3]
        pair_distances = self.distances(pos_a[None], moved)  # [S, N_A, N_B]
        closest = pair_distances.min(axis=(1, 2))
        farthest = int(np.argmax(closest))
        too_close = np.nonzero(closest[:farthest + 1] < separation)[0]
        if closest[farthest] < separation or len(too_close) == 0:
            return None
        chosen = too_close[-1] + 1
        if np.any(pair_distances[chosen] < self.contact):
            return None
        return moved[chosen]

    def structure(self, pos_a: np.ndarray, pos_b: np.ndarray, name: str) -> Atoms:
        """Atoms of the pair with its metadata; a molecule is centred on its centre of mass
        (the dipole's origin); in the box, A sits at the centre and B is moved whole by a
        lattice vector to bring its centre of mass inside (molecules are never cut)."""
        atoms = Atoms(np.concatenate([self.a.numbers, self.b.numbers]),
                      np.vstack([pos_a, pos_b]))
        atoms.info["charge"] = self.a.info["charge"] + self.b.info["charge"]
        atoms.info["separation"] = float(self.distances(pos_a, pos_b).min())
        atoms.info["system"] = name
        atoms.arrays["fragment"] = np.repeat([0, 1], [len(self.a), len(self.b)])
        if self.box is None:
            atoms.positions -= atoms.get_center_of_mass()
        else:
            atoms.cell = [self.box] * 3
            atoms.pbc = True
            atoms.positions += self.box / 2
            b = atoms.arrays["fragment"] == 1
            atoms.positions[b] -= self.box * np.floor(atoms[b].get_center_of_mass() / self.box)
        return atoms


def random_direction(rng: np.random.Generator) -> np.ndarray:
    vector = rng.normal(size=3)
    return vector / np.linalg.norm(vector)


def sample_pairs(sampler: PairSampler, name: str, count: int, rng: np.random.Generator
                 ) -> list[Atoms]:
    """``count`` distorted, randomly oriented pairs; even indices below the cutoff, odd above
    (up to MAX_SEPARATION, or as far as the box allows)."""
    structures = []
    while len(structures) < count:
        low, high = ((MIN_SEPARATION, CUTOFF) if len(structures) % 2 == 0
                     else (CUTOFF, MAX_SEPARATION))
        pos_a, pos_b = (Rotation.random(rng=rng).apply(
            fragment.positions + rng.normal(scale=DISTORTION, size=fragment.positions.shape))
            for fragment in (sampler.a, sampler.b))
        pos_b = sampler.place(pos_a, pos_b, random_direction(rng), rng.uniform(low, high))
        if pos_b is not None:
            structures.append(sampler.structure(pos_a, pos_b, name))
    return structures


def rigid_scan(sampler: PairSampler, name: str, rng: np.random.Generator) -> list[Atoms]:
    """The relaxed fragments in one random orientation, B moved along one direction (the body
    diagonal in a box) at the SCAN_SEPARATIONS it can reach."""
    rotation_a, rotation_b = Rotation.random(2, rng=rng)
    pos_a, pos_b = rotation_a.apply(sampler.a.positions), rotation_b.apply(sampler.b.positions)
    direction = random_direction(rng) if sampler.box is None else np.ones(3) / np.sqrt(3)
    placed = (sampler.place(pos_a, pos_b, direction, target) for target in SCAN_SEPARATIONS)
    return [sampler.structure(pos_a, moved, name) for moved in placed if moved is not None]


def fragment_charges(atoms: Atoms) -> np.ndarray:
    """Sum of the xTB partial charges of each fragment [2] (e)."""
    return np.bincount(atoms.arrays["fragment"], weights=atoms.arrays["xtb_charges"])


def label(atoms: Atoms) -> Atoms:
    """Attach the GFN2-xTB energy (eV), forces (eV/Å), partial charges (e) and either the
    dipole (e·Å, about the origin) or, in a cell, the stress (eV/Å³, ASE's Voigt order)."""
    calculator = xtb(atoms.info["charge"])
    calculator.calculate(atoms, ["energy", "forces"])
    results = calculator.results
    atoms.info["energy"] = results["energy"]
    atoms.arrays["forces"] = results["forces"]
    atoms.arrays["xtb_charges"] = results["charges"]
    if atoms.pbc.any():
        atoms.info["stress"] = results["stress"]
    else:
        atoms.info["dipole"] = results["dipole"]
    return atoms


def check_integer_charges(atoms: Atoms, nominal: np.ndarray, source: str) -> None:
    """Fragment charges beyond the cutoff must be the fragments' own (within the tolerance)."""
    deviation = np.abs(fragment_charges(atoms) - nominal).max()
    if atoms.info["separation"] > CUTOFF and deviation > CHARGE_TOLERANCE:
        raise RuntimeError(f"{source}: {atoms.info['system']} at {atoms.info['separation']:.2f}"
                           f" Å has fragment charges {fragment_charges(atoms)}, not {nominal}")


def relaxed_fragments(pairs: dict[str, tuple[str, str]]) -> dict[str, Atoms]:
    """The relaxed fragment of every name in ``pairs``."""
    names = dict.fromkeys(name for pair in pairs.values() for name in pair)
    return {name: relaxed_fragment(name) for name in names}


def generate(output: Path) -> None:
    fragments = relaxed_fragments(SYSTEMS)
    jobs = [(name, PairSampler(fragments[a], fragments[b], None), "", SPLITS)
            for name, (a, b) in SYSTEMS.items()]
    a, b = SYSTEMS[PERIODIC_SYSTEM]
    jobs.append((PERIODIC_SYSTEM, PairSampler(fragments[a], fragments[b], BOX), "periodic_",
                 PERIODIC_SPLITS))
    files: dict[str, list[Atoms]] = {}
    print(f"{'system':<24}{'file':<20}{'structures':>11}{'xTB ms/structure':>18}"
          f"{'max |Δq| > cutoff':>19}")
    for index, (name, sampler, prefix, counts) in enumerate(jobs):
        nominal = np.array([sampler.a.info["charge"], sampler.b.info["charge"]])
        for split_index, (split, count) in enumerate({**counts, "scan": None}.items()):
            rng = np.random.default_rng([SEED, index, split_index])
            structures = (rigid_scan(sampler, name, rng) if split == "scan"
                          else sample_pairs(sampler, name, count, rng))
            start = time.perf_counter()
            for atoms in structures:
                label(atoms)
            milliseconds = 1e3 * (time.perf_counter() - start) / len(structures)
            for atoms in structures:
                check_integer_charges(atoms, nominal, f"{prefix}{split}")
            beyond = [np.abs(fragment_charges(atoms) - nominal).max() for atoms in structures
                      if atoms.info["separation"] > CUTOFF]
            print(f"{name:<24}{prefix + split + '.xyz':<20}{len(structures):>11}"
                  f"{milliseconds:>18.1f}{max(beyond, default=0.0):>19.4f}", flush=True)
            files.setdefault(f"{prefix}{split}.xyz", []).extend(structures)
    for filename, structures in files.items():
        with atomic_path(output / filename) as temporary:
            ase.io.write(temporary, structures, format="extxyz")
        print(f"wrote {output / filename}: {len(structures)} structures, "
              f"{(output / filename).stat().st_size / 1e6:.2f} MB")


def survey() -> None:
    """Fragment charges (e) of fragment A along each pair's rigid scan, candidates included."""
    pairs = {**SYSTEMS, **LEFT_OUT}
    fragments = relaxed_fragments(pairs)
    shown = [2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0]
    print("charge of fragment A (e) at separation (Å); '-' = no SCF convergence")
    print(f"{'pair (A_B)':<22}" + "".join(f"{s:>7.0f}" for s in shown))
    for index, (name, (a, b)) in enumerate(pairs.items()):  # the data's scans come first
        scan = rigid_scan(PairSampler(fragments[a], fragments[b], None), name,
                          np.random.default_rng([SEED, index, len(SPLITS)]))
        row = []
        for target in shown:
            atoms = min(scan, key=lambda atoms: abs(atoms.info["separation"] - target))
            try:
                row.append(f"{fragment_charges(label(atoms))[0]:>+7.3f}")
            except CalculationFailed:
                row.append(f"{'-':>7}")
        print(f"{name:<22}" + "".join(row), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path, nargs="?", help="folder of the .xyz files")
    parser.add_argument("--survey", action="store_true",
                        help="print fragment charges along rigid scans and write nothing")
    arguments = parser.parse_args()
    if arguments.survey:
        survey()
    elif arguments.output is None:
        parser.error("give the output folder, or --survey")
    else:
        generate(arguments.output)
