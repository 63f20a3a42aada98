"""Short-range sanity report: does the model push apart atoms closer than any it was trained on?

For every pair of the model's elements, the energy of the isolated dimer (non-periodic) is
computed on a grid from 0.1 Å to the cutoff in steps of about 0.01 Å, all dimers in a few
batches. The criterion, per pair, on the grid points r ≤ r_min:

    **monotonic rise as r → 0**: E(0.1 Å) > E(r_min), and no dip: nowhere does E(r) fall more
    than 1 meV (DIP_TOLERANCE) below the energy at any larger distance r' ≤ r_min,

where r_min is the pair's shortest distance in the training set (``shortest_distances`` of
the model config). Pairs the training set never brought within the cutoff have no such
distance, and their dimers may truly bind anywhere near a bond length: they are checked below
a physical bound instead, r_b = 0.6 (R_i + R_j) with R ASE's covalent radii (Cordero 2008),
below which no dimer binds. Bonds are shortest in dimers of high bond order: N₂ 0.77, C₂ 0.82
and the quadruple to sextuple bonds of Cr₂ (1.68 Å) and Mo₂ (1.94 Å), the shortest known
relative to their radii, 0.60 and 0.63 of the sum; every dimer's energy rises below its
bond length. Such pairs are reported as "no training data". Every pair of a model file
written before shortest distances were recorded is checked below the sum of the two
covalent radii (about a single-bond length), and the report says so. The 1 meV
lets through plateaus flat to float32 rounding (an untrained network's are, to ~10 µeV),
whereas a dip of 1 meV is already far below kT (26 meV at 300 K); a plateau all the way
to 0.1 Å fails the first condition.

Each element's isolated-atom energy from the model is compared with its reference energy E0.
A difference is reported, not judged: with E0 from a least-squares fit, or a nonzero shift, a
sound model's isolated atoms legitimately differ from E0 (it never saw one).

Written to the output directory: ``dimer_<A>-<B>.csv`` and ``.png`` per pair, ``summary.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols
from torch_geometric.data import Batch

from equipot import keys
from equipot.data.graph import MIN_DISTANCE, atoms_to_graph
from equipot.io import atomic_path, atomic_write_text
from equipot.model.potential import Potential
from equipot.physics.elements import NO_TRAINING_DATA, element_pairs, repulsion_thresholds

GRID_STEP = 0.01  # Å, about; the grid runs from MIN_DISTANCE (0.1 Å) to the cutoff
BATCH_SIZE = 1024  # structures per model call
DIP_TOLERANCE = 1e-3  # eV
PLOT_CEILING = 10.0  # eV above the separated atoms
CRITERION = (f"on the grid points r <= r_min: E(0.1 Å) > E(r_min), and E(r) >= E(r') - "
             f"{DIP_TOLERANCE * 1000:g} meV for all r < r' <= r_min")


@dataclass
class PairCheck:
    """The verdict on one element pair; distances in Å, energies in eV."""

    pair: str  # "H-C", elements in the model's species order
    atomic_numbers: tuple[int, int]
    r_min: float  # the check runs below this distance
    r_min_source: str  # "shortest training distance" or the fallback's reason
    passed: bool
    rise: float  # E(0.1 Å) − E(r_min), r_min rounded down to the grid
    dip: float  # the deepest fall of E below its value at a larger distance ≤ r_min, ≥ 0
    dip_span: tuple[float, float]  # (r, r'): E(r) lies ``dip`` below E(r'), r < r' ≤ r_min
    verdict: str  # one line


@dataclass
class AtomCheck:
    """One element's isolated-atom energy from the model against its E0 (eV)."""

    element: str
    atomic_number: int
    model_energy: float
    reference_energy: float
    difference: float  # model − reference


@dataclass
class ShortRangeReport:
    pairs: list[PairCheck]
    atoms: list[AtomCheck]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.pairs)


def model_energies(model: Potential, structures: list[Atoms]) -> np.ndarray:
    """Energies (eV) [len(structures)] of small non-periodic structures, BATCH_SIZE per call."""
    device = next(model.parameters()).device
    graphs = [atoms_to_graph(atoms, model.cutoff) for atoms in structures]
    with torch.no_grad():
        return np.concatenate([
            model(Batch.from_data_list(graphs[start:start + BATCH_SIZE]).to(device),
                  compute_forces=False)[keys.ENERGY].cpu().numpy()
            for start in range(0, len(graphs), BATCH_SIZE)])


def dimer_grid(cutoff: float) -> np.ndarray:
    """Distances (Å) [R] from MIN_DISTANCE to ``cutoff``, evenly spaced by about GRID_STEP."""
    points = int(round((cutoff - MIN_DISTANCE) / GRID_STEP)) + 1
    return np.linspace(MIN_DISTANCE, cutoff, points).round(12)


def dimer_energies(model: Potential, distances: np.ndarray) -> np.ndarray:
    """[P, R] energies (eV) of the isolated dimer of every element pair at every distance."""
    dimers = [Atoms(numbers=[model.species[i], model.species[j]],
                    positions=[[0.0, 0.0, 0.0], [0.0, 0.0, r]])
              for i, j in element_pairs(model.species) for r in distances]
    return model_energies(model, dimers).reshape(-1, len(distances))


def check_pair(name: str, atomic_numbers: tuple[int, int], distances: np.ndarray,
               energies: np.ndarray, r_min: float, r_min_source: str) -> PairCheck:
    """Judge one dimer curve E(r) [R] (eV) on ``distances`` [R] (Å, ascending) below ``r_min``
    by CRITERION; non-finite energies fail."""
    inside = distances <= r_min
    r, e = distances[inside][::-1], energies[inside][::-1]  # inward: from r_min to 0.1 Å
    below = f"below {r_min:.3f} Å ({r_min_source})"
    if not np.isfinite(e).all():
        return PairCheck(name, atomic_numbers, r_min, r_min_source, False, np.nan, np.nan,
                         (np.nan, np.nan), f"{name}: FAIL, non-finite energies {below}")
    falls = np.maximum.accumulate(e) - e  # how far E lies below the highest E met so far
    deepest = int(np.argmax(falls))
    top = int(np.argmax(e[:deepest + 1]))  # where that highest E was met
    rise, dip = float(e[-1] - e[0]), float(falls[deepest])
    passed = rise > 0.0 and dip <= DIP_TOLERANCE
    if passed and r_min_source.startswith(NO_TRAINING_DATA):
        bound = r_min_source.removeprefix(f"{NO_TRAINING_DATA}: ")
        verdict = (f"{name}: {NO_TRAINING_DATA}, harmless: rises by {rise:.4g} eV as r → 0 "
                   f"below {r_min:.3f} Å ({bound}), no dip")
    elif passed:
        verdict = f"{name}: ok, rises by {rise:.4g} eV as r → 0 {below}, no dip"
    elif dip > DIP_TOLERANCE:
        verdict = (f"{name}: FAIL, {below} the energy falls {dip:.4g} eV from "
                   f"{r[top]:.2f} Å to {r[deepest]:.2f} Å: the atoms attract")
    else:
        verdict = f"{name}: FAIL, no repulsion {below}: E(0.1 Å) − E(r_min) = {rise:.4g} eV"
    return PairCheck(name, atomic_numbers, r_min, r_min_source, passed, rise, dip,
                     (float(r[deepest]), float(r[top])), verdict)


def check_short_range(model: Potential, shortest_distances: list[list[float | None]] | None,
                      output_dir: str | Path) -> ShortRangeReport:
    """Compute, judge and write the report of ``model`` (see the module docstring).

    ``shortest_distances``: [S][S] Å, aligned with ``model.species`` (the model config's
    ``shortest_distances``), None for a model file that has none.
    """
    output_dir = Path(output_dir)
    species, symbols = model.species, [chemical_symbols[z] for z in model.species]
    distances = dimer_grid(model.cutoff)
    curves = dimer_energies(model, distances)
    atom_energies = model_energies(model, [Atoms(numbers=[z]) for z in species])
    thresholds = repulsion_thresholds(species, shortest_distances)
    pairs = []
    for (i, j), energies in zip(element_pairs(species), curves):
        name = f"{symbols[i]}-{symbols[j]}"
        check = check_pair(name, (species[i], species[j]), distances, energies,
                           *thresholds[i, j])
        separated = atom_energies[i] + atom_energies[j]
        write_curve(output_dir / f"dimer_{name}", distances, energies, separated, check)
        pairs.append(check)
    reference = model.reference_energies.cpu().numpy()
    atoms = [AtomCheck(symbol, z, float(energy), float(e0), float(energy - e0))
             for symbol, z, energy, e0 in zip(symbols, species, atom_energies, reference)]
    report = ShortRangeReport(pairs, atoms)
    summary = {"passed": report.passed, "criterion": CRITERION, "units": "Å, eV",
               "grid": {"start": float(distances[0]), "stop": float(distances[-1]),
                        "points": len(distances)},
               "pairs": [asdict(check) for check in pairs],
               "atoms": [asdict(check) for check in atoms]}
    atomic_write_text(json.dumps(summary, indent=2, ensure_ascii=False),
                      output_dir / "summary.json")
    return report


def write_curve(stem: Path, distances: np.ndarray, energies: np.ndarray, separated: float,
                check: PairCheck) -> None:
    """``<stem>.csv`` (distance, energy, energy above the separated atoms) and ``<stem>.png``."""
    relative = energies - separated
    with atomic_path(stem.with_suffix(".csv")) as temporary:
        np.savetxt(temporary, np.column_stack([distances, energies, relative]), delimiter=",",
                   fmt="%.15g", header="distance_A,energy_eV,energy_above_separated_atoms_eV",
                   comments="")
    from matplotlib.figure import Figure  # imported where used: no backend is switched

    figure = Figure(figsize=(5.5, 4))
    axis = figure.subplots()
    axis.plot(distances, relative, color="black", linewidth=1)
    axis.axvline(check.r_min, color="tab:blue", linestyle="--", linewidth=0.8,
                 label=f"r_min = {check.r_min:.3f} Å ({check.r_min_source.split(':')[0]})")
    if check.dip > DIP_TOLERANCE:
        axis.axvspan(*check.dip_span, color="tab:red", alpha=0.3, label="deepest dip")
    axis.axhline(0.0, color="grey", linewidth=0.5)
    # The wall's first PLOT_CEILING eV and everything below the separated atoms.
    axis.set_ylim(min(np.nanmin(relative, initial=0.0), -1.0) - 0.5, PLOT_CEILING)
    axis.set(xlabel="distance (Å)", ylabel="E − E(separated atoms) (eV)",
             title=f"{check.pair} dimer: {'ok' if check.passed else 'FAIL'}")
    axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(stem.with_suffix(".png")) as temporary:
        figure.savefig(temporary, dpi=120, format="png")


def format_report(report: ShortRangeReport, output_dir: str | Path) -> str:
    """The verdicts as text; a failing check is framed in a banner that no log hides."""
    lines = [check.verdict for check in report.pairs]
    lines += [f"isolated {atom.element}: model {atom.model_energy:.4f} eV, E0 "
              f"{atom.reference_energy:.4f} eV, difference {atom.difference:+.4f} eV"
              for atom in report.atoms]
    if report.passed:
        return "\n".join([f"short-range check passed ({output_dir}):", *lines])
    failed = sum(not check.passed for check in report.pairs)
    return banner([f"SHORT-RANGE CHECK FAILED for {failed} of {len(report.pairs)} element "
                   f"pairs: atoms may collapse in MD ({output_dir})", *lines])


def banner(lines: list[str]) -> str:
    """``lines`` framed by rows of '!' so that they stand out in a run's output."""
    rule = "!" * 100
    return "\n".join([rule, *lines, rule])
