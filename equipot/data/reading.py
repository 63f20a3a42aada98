"""Structures and their reference labels from files, validated field by field.

Any format ``ase.io.read`` understands works (extended XYZ, ASE databases, VASP outputs …).
Labels are looked up under configurable keys in ``atoms.info``, ``atoms.arrays`` and the
results of an attached calculator (where ASE puts plain ``energy``/``forces``/``stress``/
``dipole``). A structure's total charge, an input rather than a label, is ``info["charge"]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import ase
import ase.io
import numpy as np

from equipot import keys
from equipot.errors import EquipotInputError

TOTAL_CHARGE_KEY = "charge"  # atoms.info key of a structure's total charge (e)
MIN_VOLUME = 1e-8  # Å³; a stress (energy per volume) is undefined below it


@dataclasses.dataclass(frozen=True)
class LabelKeys:
    """Where each label is stored in a structure; ``None`` ignores that label."""

    energy: str | None = "energy"
    forces: str | None = "forces"
    stress: str | None = "stress"
    dipole: str | None = "dipole"

    def items(self):
        return ((keys.ENERGY, self.energy), (keys.FORCES, self.forces), (keys.STRESS, self.stress),
                (keys.DIPOLE, self.dipole))


@dataclasses.dataclass(frozen=True)
class WeightKeys:
    """Where a structure's loss weight comes from (see ``read_weights``)."""

    weight: str | None = "weight"
    config_type: str | None = "config_type"
    config_type_weights: Mapping[str, float] = dataclasses.field(default_factory=dict)


def read_structures(path: str | Path) -> list[ase.Atoms]:
    """Every structure in ``path``; an unreadable or truncated file raises an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise EquipotInputError("no such file", source=path)
    try:
        structures = ase.io.read(path, index=":")
    except Exception as error:  # ase raises many types for malformed files
        raise EquipotInputError(f"cannot read structures ({type(error).__name__}: {error})",
                                source=path) from error
    if not structures:
        raise EquipotInputError("contains no structures", source=path)
    return structures


def _lookup(atoms: ase.Atoms, key: str):
    if key in atoms.info:
        return atoms.info[key]
    if key in atoms.arrays:
        return atoms.arrays[key]
    if atoms.calc is not None and key in atoms.calc.results:
        return atoms.calc.results[key]
    return None


def _as_stress_matrix(value: np.ndarray) -> np.ndarray | None:
    """Stress as a 3×3 matrix from 9 values or ASE's Voigt order (xx, yy, zz, yz, xz, xy)."""
    if value.size == 9:
        return value.reshape(3, 3)
    if value.size == 6:
        xx, yy, zz, yz, xz, xy = value
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    return None


def _validated(field: str, value, atoms: ase.Atoms, source, index) -> np.ndarray:
    num_atoms = len(atoms)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise EquipotInputError(f"not numeric: {value!r}", source, index, field) from None
    if field == keys.ENERGY:
        if array.size != 1:
            raise EquipotInputError(f"expected one number, got shape {array.shape}",
                                    source, index, field)
        array = array.reshape(())
    elif field == keys.FORCES:
        if array.shape != (num_atoms, 3):
            raise EquipotInputError(f"expected shape ({num_atoms}, 3), got {array.shape}",
                                    source, index, field)
    elif field == keys.DIPOLE:
        if array.size != 3:
            raise EquipotInputError(f"expected 3 values (e·Å), got shape {array.shape}",
                                    source, index, field)
        array = array.reshape(3)
    else:
        matrix = _as_stress_matrix(array)
        if matrix is None:
            raise EquipotInputError(f"expected 6 (Voigt) or 9 values, got shape {array.shape}",
                                    source, index, field)
        array = matrix
        if abs(atoms.cell.volume) < MIN_VOLUME:
            raise EquipotInputError(
                f"a stress label needs a cell with a volume, but this one's is "
                f"{abs(atoms.cell.volume):.3g} Å³ (pbc {atoms.pbc.tolist()}): give the "
                f"non-periodic direction the cell vector the stress refers to, or drop the "
                f"label (data.stress_key=null)", source, index, field)
    if not np.all(np.isfinite(array)):
        raise EquipotInputError("contains NaN or inf", source, index, field)
    return array


def read_labels(structures: list[ase.Atoms], label_keys: LabelKeys, source: str
                ) -> dict[str, list[np.ndarray | None]]:
    """Validated labels of every structure, by field name (``keys.ENERGY`` …); None where a
    structure lacks that label.

    A field is a label of the file when any structure has it (energy, where its key is set,
    must be in at least one). A structure that lacks it is masked out of that label's loss and
    metrics. Stress counts only on periodic structures, which must then have a volume; dipoles
    only on non-periodic ones: elsewhere they are ignored.
    """
    labels = {}
    for field, key in label_keys.items():
        if key is None:
            continue
        values = [_lookup(atoms, key) for atoms in structures]
        if all(value is None for value in values):
            if field == keys.ENERGY:
                raise EquipotInputError(
                    f"no structure has the label '{key}' (looked in info, arrays and "
                    f"calculator results); set data.energy_key to where energies are, or to "
                    f"null to train without them", source, field=field)
            continue
        labels[field] = [None if value is None or not _applies(field, atoms)
                         else _validated(field, value, atoms, source, index)
                         for index, (atoms, value) in enumerate(zip(structures, values))]
    return labels


def _applies(field: str, atoms: ase.Atoms) -> bool:
    """Stress is a label of periodic structures only, dipoles of non-periodic ones only."""
    if field == keys.STRESS:
        return bool(atoms.pbc.any())
    if field == keys.DIPOLE:
        return not atoms.pbc.any()
    return True


def read_weights(structures: list[ase.Atoms], weight_keys: WeightKeys, source: str
                 ) -> np.ndarray:
    """[G] loss weight of each structure: ``info[weight_keys.weight]`` (1 where absent) times
    the weight ``config_type_weights`` gives its ``info[weight_keys.config_type]`` (1 for types
    it does not name)."""
    weights = np.ones(len(structures))
    by_type = weight_keys.config_type_weights
    for index, atoms in enumerate(structures):
        if weight_keys.weight is not None and weight_keys.weight in atoms.info:
            value = atoms.info[weight_keys.weight]
            try:
                weights[index] = float(np.asarray(value, dtype=np.float64).reshape(()))
            except (TypeError, ValueError):
                raise EquipotInputError(f"expected one number, got {value!r}", source, index,
                                        weight_keys.weight) from None
            if not (np.isfinite(weights[index]) and weights[index] >= 0.0):
                raise EquipotInputError(f"a loss weight must be finite and ≥ 0, got {value!r}",
                                        source, index, weight_keys.weight)
        if weight_keys.config_type is not None and weight_keys.config_type in atoms.info:
            weights[index] *= float(by_type.get(str(atoms.info[weight_keys.config_type]), 1.0))
    return weights


def read_total_charge(atoms: ase.Atoms, source: str = "<atoms>", index: int | None = None
                      ) -> float:
    """The total charge (e) of ``atoms``: ``info["charge"]``, 0 where it is absent."""
    value = atoms.info.get(TOTAL_CHARGE_KEY, 0.0)
    try:
        charge = float(np.asarray(value, dtype=np.float64).reshape(()))
    except (TypeError, ValueError):
        raise EquipotInputError(f"expected one number (e), got {value!r}", source, index,
                                TOTAL_CHARGE_KEY) from None
    if not np.isfinite(charge):
        raise EquipotInputError("is NaN or inf", source, index, TOTAL_CHARGE_KEY)
    return charge
