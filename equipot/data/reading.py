"""Structures and their reference labels from files, validated field by field.

Any format ``ase.io.read`` understands works (extended XYZ, ASE databases, VASP outputs …).
Labels are looked up under configurable keys in ``atoms.info``, ``atoms.arrays`` and the
results of an attached calculator (where ASE puts plain ``energy``/``forces``/``stress``/
``dipole``). A structure's total charge, an input rather than a label, is ``info["charge"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ase
import ase.io
import numpy as np

from equipot import keys
from equipot.errors import EquipotInputError

TOTAL_CHARGE_KEY = "charge"  # atoms.info key of a structure's total charge (e)


@dataclass(frozen=True)
class LabelKeys:
    """Where each label is stored in a structure; ``None`` ignores that label."""

    energy: str | None = "energy"
    forces: str | None = "forces"
    stress: str | None = "stress"
    dipole: str | None = "dipole"

    def items(self):
        return ((keys.ENERGY, self.energy), (keys.FORCES, self.forces), (keys.STRESS, self.stress),
                (keys.DIPOLE, self.dipole))


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


def _validated(field: str, value, num_atoms: int, source, index) -> np.ndarray:
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
    if not np.all(np.isfinite(array)):
        raise EquipotInputError("contains NaN or inf", source, index, field)
    return array


def read_labels(structures: list[ase.Atoms], label_keys: LabelKeys, source: str
                ) -> dict[str, list[np.ndarray]]:
    """Validated labels of every structure, by field name (``keys.ENERGY`` …).

    Energy is required where its key is set. Forces, stress and dipole are labels when present
    in any structure, and then must be present in all of them.
    """
    labels = {}
    for field, key in label_keys.items():
        if key is None:
            continue
        values = [_lookup(atoms, key) for atoms in structures]
        present = [value is not None for value in values]
        if not any(present) and field != keys.ENERGY:
            continue
        if not all(present):
            index = present.index(False)
            raise EquipotInputError(
                f"missing label '{key}' (looked in info, arrays and calculator results)",
                source, index, field)
        labels[field] = [_validated(field, value, len(atoms), source, index)
                         for index, (atoms, value) in enumerate(zip(structures, values))]
    return labels


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
