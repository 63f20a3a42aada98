"""Exported models: a model's energy, forces and stress compiled ahead of time into one file
that runs without equipot's model code (``equipot-export``; ``equipot.load`` of a ``.pt2``).

Each of two calls is traced as for compiled calls (``equipot.model.compiled.Trace``: the force
derivative inside one graph, symbolic numbers of atoms and edges), exported
(``torch.export``) and compiled by AOTInductor into a shared library: energy and forces of a
structure without stress ("molecule"), and with it ("periodic": stress for cells with a
volume). Both go into one AOTInductor package with the model's config and the names of the
graphs' inputs and outputs as metadata. An exported model takes one structure per call, with
at least two atoms and two edges (the sizes its trace is symbolic in), on the CPU.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch.export import Dim

from equipot import keys
from equipot.errors import EquipotInputError
from equipot.io import atomic_path
from equipot.model.compiled import INPUTS, Trace, field_dims, traceable
from equipot.model.potential import Potential, check_species
from equipot.neighbors import neighbor_list
from equipot.version import __version__

FORMAT = 1
GRAPHS = {"molecule": False, "periodic": True}  # graph → whether it computes the stress
METADATA = "equipot"  # the key of the package's metadata


def export_model(model: Potential, path: str | Path) -> Path:
    """Compile ``model``'s two calls ahead of time into the package ``path`` (written
    atomically). Minutes of compiling; raises where the model cannot be traced (DimeNet++,
    Ewald terms: sizes counted on the host) or the installed torch cannot export."""
    model = model.eval()
    programs, graphs = {}, {}
    for name, stress in GRAPHS.items():
        fields = example_fields(model, periodic=stress)

        def call(parameters, fields, stress=stress):
            return model(keys.GraphFields(fields), compute_forces=True, compute_stress=stress,
                         create_graph=False)

        try:
            trace = Trace(call, [], fields, backend="eager")
            inputs = tuple(fields[field] for field in trace.names)
            programs[name] = inputs, torch.export.export(
                trace.graph, inputs, dynamic_shapes=dynamic_shapes(trace.names, fields),
                strict=False)
        except Exception as error:  # noqa: BLE001 — any failure: this model cannot export
            raise EquipotInputError(
                f"this model cannot be exported ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}); DimeNet++ and models "
                f"with Ewald terms cannot be traced, and the installed torch "
                f"{torch.__version__} must have torch.export and AOTInductor") from error
        graphs[name] = {"inputs": trace.names, "outputs": trace.outputs}
    metadata = {METADATA: json.dumps({
        "format": FORMAT, "equipot_version": __version__, "model_config": model.config,
        "dtype": str(model.dtype).removeprefix("torch."), "graphs": graphs})}
    files = {name: torch._inductor.aot_compile(
        exported.module(), inputs,
        options={"aot_inductor.package": True, "aot_inductor.metadata": metadata})
        for name, (inputs, exported) in programs.items()}
    from torch._inductor.package import package_aoti
    path = Path(path)
    with atomic_path(path) as temporary:
        package_aoti(str(temporary), files)
    return path


def example_fields(model: Potential, periodic: bool) -> dict[str, torch.Tensor]:
    """The fields of a structure of the model's elements to trace with (``INPUTS``): five
    atoms, all pairs within the cutoff (a distorted cluster, or a cubic cell of side
    0.9 × cutoff)."""
    fractions = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5],
                          [0.27, 0.23, 0.25]])
    side = 0.9 * model.cutoff if periodic else min(3.0, model.cutoff)
    cell = np.eye(3) * side if periodic else np.zeros((3, 3))
    positions = fractions * side
    centre, neighbour, shifts = neighbor_list(positions, cell, np.full(3, periodic), model.cutoff)
    fields = {
        keys.ATOMIC_NUMBERS: torch.tensor([model.species[k % len(model.species)]
                                           for k in range(len(positions))]),
        keys.BATCH: torch.zeros(len(positions), dtype=torch.long),
        keys.POSITIONS: torch.as_tensor(positions),
        keys.CELL: torch.as_tensor(cell).unsqueeze(0),
        keys.PBC: torch.full((1, 3), periodic),
        keys.EDGE_INDEX: torch.as_tensor(np.stack([centre, neighbour])),
        keys.SHIFTS: torch.as_tensor(shifts, dtype=torch.float64),
        keys.TOTAL_CHARGE: torch.zeros(1, dtype=torch.float64)}
    assert traceable(fields) and set(fields) == set(INPUTS)
    return fields


def dynamic_shapes(names: list[str], fields: Mapping[str, torch.Tensor]) -> tuple:
    """torch.export's dynamic dimensions of the fields ``names``: atoms and edges; one
    structure."""
    counts = {"N": Dim("atoms", min=2), "E": Dim("edges", min=2)}
    return tuple({dim: counts[size] for dim, size in enumerate(field_dims(name, fields[name]))
                  if size in counts} or None for name in names)


class ExportedPotential:
    """A package of ``export_model`` loaded: answers ``model(batch, compute_forces=True,
    compute_stress=…)`` for one structure as the Potential it was exported from did (within
    float roundoff), with its ``config``, ``cutoff`` and ``species``."""

    def __init__(self, path: str | Path):
        from torch._inductor.package import load_package

        self.path = Path(path)
        self.runners = {name: load_package(str(path), name) for name in GRAPHS}
        metadata = json.loads(self.runners["molecule"].get_metadata()[METADATA])
        if metadata["format"] > FORMAT:
            raise EquipotInputError(f"exported by a newer equipot (format {metadata['format']};"
                                    f" this one reads up to {FORMAT})", str(path))
        self.config, self.graphs = metadata["model_config"], metadata["graphs"]
        self.cutoff, self.species = float(self.config["cutoff"]), list(self.config["species"])
        self.dtype = getattr(torch, metadata["dtype"])
        self.metadata = metadata

    def check_species(self, atomic_numbers: np.ndarray, source: str = "<atoms>",
                      index: int | None = None) -> None:
        check_species(self.species, atomic_numbers, source, index)

    def to(self, device: str | torch.device) -> ExportedPotential:
        if torch.device(device).type != "cpu":
            raise EquipotInputError(f"an exported model runs on the CPU, not {device}",
                                    str(self.path))
        return self

    def eval(self) -> ExportedPotential:
        return self

    def __call__(self, batch, compute_forces: bool = True, compute_stress: bool = False
                 ) -> dict[str, torch.Tensor]:
        num_atoms, num_edges = batch[keys.POSITIONS].shape[0], batch[keys.EDGE_INDEX].shape[1]
        if not compute_forces or batch.num_graphs != 1 or num_atoms < 2 or num_edges < 2:
            raise EquipotInputError(
                f"an exported model computes energy and forces of one structure with at least "
                f"two atoms and one pair within the cutoff; got {batch.num_graphs} structures, "
                f"{num_atoms} atoms, {num_edges} edges", str(self.path))
        graph = self.graphs["periodic" if compute_stress else "molecule"]
        values = self.runners["periodic" if compute_stress else "molecule"](
            *(batch[name] for name in graph["inputs"]))
        return dict(zip(graph["outputs"], values))
