"""ASE calculator: any equipot model drives ASE's MD, relaxations, phonons …"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from equipot import keys
from equipot.data.graph import (
    check_overlaps,
    checked_geometry,
    single_structure_batch,
    structure_fields,
)
from equipot.data.reading import MIN_VOLUME, read_total_charge
from equipot.heap import keep_freed_memory
from equipot.model.checkpoint import load
from equipot.model.compiled import CompiledPotential
from equipot.model.ensemble import Ensemble
from equipot.model.exported import ExportedPotential
from equipot.model.potential import Potential
from equipot.neighbors import SkinNeighborList

SKIN = 0.5  # Å: the default Verlet skin of the neighbour list


class EquipotCalculator(Calculator):
    """Energy, free energy (= energy), forces, per-atom energies and, for periodic cells, stress;
    atomic charges (e) and, for molecules, the dipole (e·Å) where the model predicts them; and
    for a model with an uncertainty (``equipot.uncertainty``: LLPR or an ensemble) the
    predicted standard deviations ``energy_uncertainty`` (eV), ``forces_uncertainty`` (eV/Å,
    [N]: of each of an atom's force components) and ``energies_uncertainty`` (eV, [N]), read
    with ``calculator.results`` or ``get_property``.

    On a periodic cell with a volume the stress comes with every call (it costs a few per cent
    of the forces' backward pass), so that NPT dynamics, which asks for forces and stress at
    every step, calls the model once per step.

    The neighbour list is a Verlet list with a ``skin`` (Å; ``equipot.neighbors.
    SkinNeighborList``): searched again only when an atom has moved more than skin / 2 since
    the last search (up to lattice translations, so wrapping atoms into the cell is free) or
    the cell has been strained too much; ``skin=0`` searches at every call. Either way the model
    sees the same pairs.

    ``compile=True`` runs energy, forces and stress as compiled graphs
    (``equipot.model.compiled``): the first call of each kind compiles (seconds to a minute),
    later ones are several times faster on small structures; a model that cannot be compiled
    runs eager, with a warning saying why.

    ``model_or_path`` is a Potential, or a model file (or an exported ``.pt2`` of
    ``equipot-export``: compiled already, one structure of at least two atoms per call);
    ``dtype`` applies when loading a model file (default: the dtype it was trained in). The
    total charge is ``atoms.info["charge"]`` (default 0); changing it invalidates the results
    like moving an atom does.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies",
                              "charges", "dipole", "energy_uncertainty", "forces_uncertainty",
                              "energies_uncertainty"]

    def __init__(self, model_or_path: Potential | Ensemble | str | Path, device: str = "cpu",
                 dtype: torch.dtype | None = None, skin: float = SKIN, compile: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(model_or_path, (Potential, Ensemble, ExportedPotential)):
            self.model = model_or_path.to(device).eval()
        else:
            self.model = load(model_or_path, device=device, dtype=dtype)
        self.device = torch.device(device)
        keep_freed_memory()  # large structures: no fresh pages at every call (equipot.heap)
        self.neighbors = SkinNeighborList(self.model.cutoff, skin)
        compiled = compile and not isinstance(self.model, ExportedPotential)  # it is already
        self.call = CompiledPotential(self.model) if compiled else self.model

    def check_state(self, atoms, tol=1e-15):
        """ASE's changes, and the total charge's: ``info`` is not among the ones ASE checks."""
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and (read_total_charge(atoms)
                                       != read_total_charge(self.atoms)):
            changes.append("charge")
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        has_volume = abs(self.atoms.cell.volume) >= MIN_VOLUME
        if "stress" in properties and not self.atoms.pbc.any():
            raise PropertyNotImplementedError(
                "stress is defined for periodic structures only; this one has pbc=False")
        if "stress" in properties and not has_volume:
            raise PropertyNotImplementedError(
                "stress needs a cell with a volume; give the non-periodic direction of this "
                "slab or wire a cell vector (its length sets the volume the stress refers to)")
        want_stress = bool(self.atoms.pbc.any()) and has_volume
        self.model.check_species(self.atoms.numbers)
        geometry = checked_geometry(self.atoms)
        centre, neighbour, shifts, vectors = self.neighbors.update(*geometry)
        check_overlaps(centre, neighbour, vectors)
        batch = single_structure_batch(
            structure_fields(self.atoms, geometry, centre, neighbour, shifts)).to(self.device)
        out = self.call(batch, compute_forces=True, compute_stress=want_stress)
        self.results = ase_results(out, want_stress, molecule=not self.atoms.pbc.any())


def ase_results(out: Mapping[str, torch.Tensor], stress: bool, molecule: bool
                ) -> dict[str, float | np.ndarray]:
    """ASE's results (``EquipotCalculator.implemented_properties``) of one structure's model
    outputs ``out``: the stress (Voigt order) where ``stress``, the dipole of a ``molecule``."""
    energy = float(out[keys.ENERGY][0])
    results = {
        "energy": energy,
        "free_energy": energy,
        "energies": out[keys.ATOMIC_ENERGIES].detach().cpu().numpy(),
        "forces": out[keys.FORCES].detach().cpu().double().numpy(),
    }
    if stress:
        tensor = out[keys.STRESS][0].detach().cpu().double().numpy()
        results["stress"] = tensor[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    if keys.CHARGES in out:
        results["charges"] = out[keys.CHARGES].detach().cpu().double().numpy()
    if keys.DIPOLE in out and molecule:
        results["dipole"] = out[keys.DIPOLE][0].detach().cpu().double().numpy()
    if keys.ENERGY_UNCERTAINTY in out:
        results["energy_uncertainty"] = float(out[keys.ENERGY_UNCERTAINTY][0])
        for name in (keys.FORCES_UNCERTAINTY, keys.ATOMIC_ENERGIES_UNCERTAINTY):
            results[name] = out[name].detach().cpu().double().numpy()
    return results
