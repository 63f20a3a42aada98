"""``equipot-md``: molecular dynamics with a trained model through ASE's integrators.

    equipot-md runs/x/model.pt start.xyz --ensemble nvt --temperature 300 --steps 2000

Ensembles: ``nve`` (velocity Verlet), ``nvt`` (Langevin), ``npt`` (isotropic MTK barostat and
Nosé–Hoover chains; fully periodic cells only). Writes an ASE trajectory and a log of time,
E_tot, E_pot, E_kin and T every ``--interval`` steps, and reports the total-energy drift.
With ``--max-uncertainty X`` (a model with an uncertainty) it watches the largest predicted
force uncertainty, logs it, and stops at the first step above X, writing that frame to
``--uncertain-frames`` (or, with ``--continue-uncertain``, records every such frame and goes
on).
The start structure is checked, and the model run on it, before any file is opened: a bad
structure is an error naming the file and its index, and leaves no trajectory or log.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ase.io
import numpy as np
from ase import units
from ase.io import Trajectory
from ase.md import MDLogger
from ase.md.langevin import Langevin
from ase.md.nose_hoover_chain import IsotropicMTKNPT
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet
from tqdm import tqdm

from equipot.calculator import SKIN, EquipotCalculator
from equipot.cli import exit_on_error
from equipot.data.graph import atoms_to_graph
from equipot.data.reading import read_structures
from equipot.errors import EquipotInputError
from equipot.io import atomic_path, atomic_write_text
from equipot.model.build import DTYPES


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="equipot-md", description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="model file (model.pt)")
    parser.add_argument("structure", type=Path, help="start structure (any ASE format)")
    parser.add_argument("--index", type=int, default=-1, help="which structure of the file")
    parser.add_argument("--ensemble", choices=("nve", "nvt", "npt"), default="nve")
    parser.add_argument("--temperature", type=float, default=300.0,
                        help="K; also sets the initial velocities")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--friction", type=float, default=0.01, help="Langevin, 1/fs")
    parser.add_argument("--pressure", type=float, default=1.01325, help="NPT, bar")
    parser.add_argument("--tdamp", type=float, default=100.0, help="NPT thermostat time, fs")
    parser.add_argument("--pdamp", type=float, default=1000.0, help="NPT barostat time, fs")
    parser.add_argument("--interval", type=int, default=10, help="steps between log entries")
    parser.add_argument("--trajectory", type=Path, default=Path("md.traj"))
    parser.add_argument("--log", type=Path, default=Path("md.log"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skin", type=float, default=SKIN,
                        help="Å, of the Verlet neighbour list (0: search at every step)")
    parser.add_argument("--compile", action="store_true",
                        help="compile energy, forces and stress (the first step compiles)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="default: the dtype the model was trained in")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--max-uncertainty", type=float, default=None, metavar="X",
                        help="eV/Å: stop when an atom's predicted force uncertainty exceeds X "
                             "(a model with an uncertainty: LLPR or an ensemble)")
    parser.add_argument("--continue-uncertain", action="store_true",
                        help="with --max-uncertainty: record the frames above X and go on")
    parser.add_argument("--uncertain-frames", type=Path, default=Path("md_uncertain.xyz"),
                        help="where the frames above --max-uncertainty are written")
    return parser.parse_args(argv)


def make_dynamics(atoms, args: argparse.Namespace, rng: np.random.Generator):
    timestep = args.timestep * units.fs
    if args.ensemble == "nve":
        return VelocityVerlet(atoms, timestep)
    if args.ensemble == "nvt":
        return Langevin(atoms, timestep, temperature_K=args.temperature,
                        friction=args.friction / units.fs, rng=rng)
    if not atoms.pbc.all():
        raise EquipotInputError("NPT needs a fully periodic cell", source=args.structure,
                                field="pbc")
    return IsotropicMTKNPT(atoms, timestep, temperature_K=args.temperature,
                           pressure_au=args.pressure * units.bar, tdamp=args.tdamp * units.fs,
                           pdamp=args.pdamp * units.fs)


def start_structure(args: argparse.Namespace, calculator: EquipotCalculator):
    """The structure ``args.index`` of ``args.structure``, checked (elements, geometry, the
    model's energy, forces and stress on it) with errors naming the file and the index."""
    structures = read_structures(args.structure)
    if not -len(structures) <= args.index < len(structures):
        raise EquipotInputError(f"has {len(structures)} structures, no index {args.index}",
                                source=args.structure, field="index")
    index = args.index % len(structures)
    atoms = structures[index]
    calculator.model.check_species(atoms.numbers, source=str(args.structure), index=index)
    atoms_to_graph(atoms, calculator.model.cutoff, source=str(args.structure), index=index)
    atoms.calc = calculator
    atoms.get_forces()  # energy and forces, and stress on a periodic cell
    for field in ("energy", "forces", "stress"):
        if field in calculator.results and not np.all(np.isfinite(calculator.results[field])):
            raise EquipotInputError("the model predicts NaN or inf", args.structure, index,
                                    field)
    return atoms


class UncertaintyExceeded(Exception):
    """An atom's predicted force uncertainty passed ``--max-uncertainty``."""


class UncertaintyWatch:
    """Every step: the largest predicted force uncertainty over the atoms (eV/Å), checked
    against ``--max-uncertainty``; frames above it are kept (and the run stopped, unless
    ``--continue-uncertain``); every ``--interval`` steps a line of
    ``<log>.uncertainty.csv`` (step, time/fs, σ_E/eV, max and mean σ_F/eV/Å)."""

    def __init__(self, atoms, dynamics, args: argparse.Namespace):
        if "forces_uncertainty" not in atoms.calc.results:
            raise EquipotInputError("--max-uncertainty needs a model that predicts "
                                    "uncertainties (LLPR, or an ensemble: ensemble.size=K)",
                                    source=args.model)
        self.atoms, self.dynamics, self.args = atoms, dynamics, args
        self.frames, self.rows, self.largest = [], [], 0.0
        dynamics.attach(self.check, interval=1)

    def check(self) -> None:
        results, step = self.atoms.calc.results, self.dynamics.nsteps
        sigma = np.asarray(results["forces_uncertainty"])
        self.largest = max(self.largest, float(sigma.max()))
        if step % self.args.interval == 0:
            self.rows.append(f"{step},{step * self.args.timestep:.3f},"
                             f"{results['energy_uncertainty']:.6g},{sigma.max():.6g},"
                             f"{sigma.mean():.6g}")
        if sigma.max() > self.args.max_uncertainty:
            frame = self.atoms.copy()
            frame.info.update(step=step, max_forces_uncertainty=float(sigma.max()))
            frame.calc = None
            self.frames.append(frame)
            if not self.args.continue_uncertain:
                raise UncertaintyExceeded(step)

    def finish(self, stopped: UncertaintyExceeded | None) -> dict:
        """Write the log and the frames (atomically); say what happened."""
        log = Path(f"{Path(self.args.log).with_suffix('')}.uncertainty.csv")
        atomic_write_text("step,time_fs,energy_uncertainty_eV,max_forces_uncertainty_eV_A,"
                          "mean_forces_uncertainty_eV_A\n" + "".join(f"{row}\n" for row in
                                                                      self.rows), log)
        if self.frames:
            with atomic_path(self.args.uncertain_frames) as temporary:
                ase.io.write(temporary, self.frames, format="extxyz")
        where = (f"{len(self.frames)} frames above it in {self.args.uncertain_frames}"
                 if self.frames else "no frame above it")
        if stopped is not None:
            print(f"stopped at step {stopped.args[0]}: an atom's force uncertainty "
                  f"{self.frames[-1].info['max_forces_uncertainty']:.4f} eV/Å exceeds "
                  f"--max-uncertainty {self.args.max_uncertainty} ({where}; log {log})")
        else:
            print(f"largest force uncertainty {self.largest:.4f} eV/Å (limit "
                  f"{self.args.max_uncertainty}; {where}; log {log})")
        return {"stopped_at_step": None if stopped is None else stopped.args[0],
                "uncertain_frames": len(self.frames),
                "max_forces_uncertainty": self.largest}


def run(args: argparse.Namespace) -> dict:
    dtype = DTYPES[args.dtype] if args.dtype else None
    atoms = start_structure(args, EquipotCalculator(args.model, device=args.device,
                                                    dtype=dtype, skin=args.skin,
                                                    compile=args.compile))
    rng = np.random.default_rng(args.seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=rng)
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)

    dynamics = make_dynamics(atoms, args, rng)
    total_energies = []
    dynamics.attach(lambda: total_energies.append(atoms.get_total_energy()),
                    interval=args.interval)
    watch = UncertaintyWatch(atoms, dynamics, args) if args.max_uncertainty is not None else None
    stopped = None
    with Trajectory(args.trajectory, "w", atoms) as trajectory, \
            MDLogger(dynamics, atoms, str(args.log), header=True, mode="w") as logger:
        dynamics.attach(trajectory.write, interval=args.interval)
        dynamics.attach(logger, interval=args.interval)
        with tqdm(total=args.steps, desc=f"MD {args.ensemble}", unit="step",
                  disable=args.no_progress) as progress:
            # Observers also run before the first step: count the steps taken, not the calls.
            dynamics.attach(lambda: progress.update(dynamics.nsteps - progress.n), interval=1)
            try:
                dynamics.run(args.steps)
            except UncertaintyExceeded as error:
                stopped = error
    drift = (max(total_energies) - min(total_energies)) / len(atoms)
    steps = dynamics.nsteps
    summary = {"steps": steps, "final_temperature": atoms.get_temperature(),
               "total_energy_spread_per_atom": drift}
    print(f"{steps} steps of {args.ensemble.upper()}; final T = "
          f"{summary['final_temperature']:.1f} K; spread of E_tot = {1000 * drift:.3f} meV/atom; "
          f"trajectory {args.trajectory}, log {args.log}")
    if watch is not None:
        summary.update(watch.finish(stopped))
    return summary


def main(argv=None) -> None:
    exit_on_error("equipot-md", lambda: run(parse_arguments(argv)))


if __name__ == "__main__":
    main()
