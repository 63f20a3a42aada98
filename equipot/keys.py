"""Fields of graphs, batches and model outputs: the one registry of their names, of what they
belong to (an atom, an edge or a structure), their shapes, units and symmetries.

Reading, graphs, datasets, the loss, metrics, evaluation tables and parity plots loop over this
registry; a new label is one ``Label`` here (see docs/architecture.md, "Extending"). Shapes use
N atoms, E edges, G structures (graphs) in a batch. Units are ASE's: Å, eV, e.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# What one item of a field belongs to: a batch holds N atom items, E edge items, G structures.
ATOM, EDGE, STRUCTURE = "atom", "edge", "structure"

# How a field transforms when its structure is rotated by R (and translated).
INVARIANT = "invariant"  # unchanged: energies, charges, indices, flags
VECTOR = "vector"  # v → R v: forces, dipoles (positions also translate)
TENSOR = "tensor"  # T → R T Rᵀ: stress
ROW_VECTORS = "row vectors"  # each row v → R v: the cell
SYMMETRIES = (INVARIANT, VECTOR, TENSOR, ROW_VECTORS)


@dataclass(frozen=True)
class Field:
    """A named tensor of graphs, batches or outputs: [items, *shape] (edge_index: [2, E])."""

    name: str
    per: str  # ATOM, EDGE or STRUCTURE
    shape: tuple[int, ...]  # of one item
    unit: str  # "" where dimensionless
    symmetry: str  # one of SYMMETRIES
    description: str
    item_dim: int = 0  # the dimension that counts items (1 for edge_index, as in torch_geometric)


@dataclass(frozen=True)
class Label(Field):
    """A field that data files give as a reference for the model's output of the same name;
    the loss and metrics compare the two, over the structures that have it (``has``).

    ``applies_to``: the structures it is a label of (``"all"``, ``"periodic"`` or
    ``"non_periodic"``; elsewhere it is ignored). ``per_atom``: an extensive total, whose loss
    and parity plot divide it by the number of atoms and whose metrics add a per-atom row.
    ``needs_volume``: defined per cell volume, so a structure with it needs a cell with one.
    ``required``: a data file read for it must have it in one structure at least. ``noun``:
    how plots name one value ("energy", "force")."""

    applies_to: str = "all"
    per_atom: bool = False
    needs_volume: bool = False
    required: bool = False
    noun: str = ""

    @property
    def has(self) -> str:
        """The [G] bool field telling which structures have this label."""
        return f"has_{self.name}"


FIELDS: dict[str, Field] = {}


def register(field: Field) -> str:
    """Add ``field`` (and, for a label, its ``has`` flag) to FIELDS; returns its name."""
    if field.name in FIELDS:
        raise ValueError(f"field '{field.name}' is registered twice")
    if field.per not in (ATOM, EDGE, STRUCTURE) or field.symmetry not in SYMMETRIES:
        raise ValueError(f"field '{field.name}': per {field.per!r}, symmetry {field.symmetry!r}")
    FIELDS[field.name] = field
    if isinstance(field, Label):
        FIELDS[field.has] = Field(field.has, STRUCTURE, (), "", INVARIANT,
                                  f"whether the structure has the {field.name} label")
    return field.name


# Inputs of a structure.
ATOMIC_NUMBERS = register(Field("z", ATOM, (), "", INVARIANT, "atomic number (int64)"))
POSITIONS = register(Field("pos", ATOM, (3,), "Å", VECTOR, "Cartesian position"))
CELL = register(Field("cell", STRUCTURE, (3, 3), "Å", ROW_VECTORS,
                      "lattice vectors as rows; ignored along non-periodic axes"))
PBC = register(Field("pbc", STRUCTURE, (3,), "", INVARIANT,
                     "periodicity of each lattice vector (bool)"))
EDGE_INDEX = register(Field("edge_index", EDGE, (2,), "", INVARIANT,
                            "(centre i, neighbour j) of each edge; both directions listed (int64)",
                            item_dim=1))
SHIFTS = register(Field("shifts", EDGE, (3,), "", INVARIANT,
                        "integer cell shifts S: r_ij = pos[j] - pos[i] + S @ cell"))
BATCH = register(Field("batch", ATOM, (), "", INVARIANT,
                       "structure index of each atom (int64, set by torch_geometric)"))
NUM_ATOMS = register(Field("num_atoms", STRUCTURE, (), "", INVARIANT, "atoms (int64)"))
NUM_EDGES = register(Field("num_edges", STRUCTURE, (), "", INVARIANT,
                           "edges (int64); kept by datasets only (a Data derives it)"))
TOTAL_CHARGE = register(Field("total_charge", STRUCTURE, (), "e", INVARIANT,
                              "total charge (info['charge'], default 0)"))
WEIGHT = register(Field("weight", STRUCTURE, (), "", INVARIANT,
                        "loss weight (info['weight'] × its config type's)"))

# Labels, which models also predict.
ENERGY = register(Label("energy", STRUCTURE, (), "eV", INVARIANT, "total potential energy",
                        per_atom=True, required=True, noun="energy"))
FORCES = register(Label("forces", ATOM, (3,), "eV/Å", VECTOR, "-dE/dpos", noun="force"))
STRESS = register(Label("stress", STRUCTURE, (3, 3), "eV/Å³", TENSOR,
                        "(1/V) dE/dstrain, ASE's sign", applies_to="periodic", needs_volume=True,
                        noun="stress"))
DIPOLE = register(Label("dipole", STRUCTURE, (3,), "e·Å", VECTOR,
                        "Σ q_i r_i of a non-periodic structure (predicted: 0 if periodic)",
                        applies_to="non_periodic", noun="dipole"))

# Further outputs.
ATOMIC_ENERGIES = register(Field("energies", ATOM, (), "eV", INVARIANT,
                                 "per-atom contributions summing to the energy"))
CHARGES = register(Field("charges", ATOM, (), "e", INVARIANT,
                         "atomic partial charges (models with an electrostatics term)"))


def uncertainty(of: str, per: str, unit: str, what: str) -> str:
    """Register ``<of>_uncertainty``: the predicted standard deviation of field ``of``."""
    return register(Field(f"{of}_uncertainty", per, (), unit, INVARIANT,
                          f"predicted standard deviation of {what}"))


# Uncertainties (models with an uncertainty method, equipot.uncertainty).
ENERGY_UNCERTAINTY = uncertainty(ENERGY, STRUCTURE, "eV", "the energy")
ATOMIC_ENERGIES_UNCERTAINTY = uncertainty(ATOMIC_ENERGIES, ATOM, "eV", "each per-atom energy")
FORCES_UNCERTAINTY = uncertainty(FORCES, ATOM, "eV/Å", "each of an atom's force components")


def labels() -> tuple[str, ...]:
    """The names of the registered labels, in registration order (energy, forces, stress,
    dipole …). A structure lacking a label (or stress on a non-periodic one, a dipole on a
    periodic one) is masked out of that label's loss and metrics by its ``has`` flag."""
    return tuple(name for name, field in FIELDS.items() if isinstance(field, Label))


def label(name: str) -> Label:
    """The registered label ``name``."""
    field = FIELDS.get(name)
    if not isinstance(field, Label):
        raise KeyError(f"'{name}' is not a label; labels are {list(labels())}")
    return field


class GraphFields(dict):
    """A batch's fields by name (``keys``) without torch_geometric's collation, for what only
    reads them: a model (``fields[name]``, ``name in fields``, ``num_graphs``). Calls of one
    structure and traced calls use it; training batches are torch_geometric's."""

    @property
    def num_graphs(self) -> int:
        return self[CELL].shape[0]

    def to(self, device: torch.device | str) -> GraphFields:
        return GraphFields({name: value.to(device) for name, value in self.items()})
