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


class LabelKeys(Mapping):
    """Where each label (``keys.labels()``) is stored in a structure, by label name: under its
    own name unless given; ``None`` ignores that label. E.g. ``LabelKeys(energy="REF_energy",
    stress=None)``."""

    def __init__(self, **where: str | None):
        unknown = sorted(set(where) - set(keys.labels()))
        if unknown:
            raise ValueError(f"unknown labels {unknown}; labels are {list(keys.labels())}")
        self._where = {name: where.get(name, name) for name in keys.labels()}

    @staticmethod
    def options() -> tuple[str, ...]:
        """The option of every label, as configs and command lines spell it: energy_key …"""
        return tuple(f"{name}_key" for name in keys.labels())

    @classmethod
    def from_options(cls, options: Mapping[str, str | None]) -> LabelKeys:
        """From ``{"energy_key": …, …}`` (``options()``; labels not named keep their own)."""
        unknown = sorted(set(options) - set(cls.options()))
        if unknown:
            raise ValueError(f"unknown options {unknown}; label keys are {list(cls.options())}")
        return cls(**{option.removesuffix("_key"): key for option, key in options.items()})

    @classmethod
    def only(cls, **where: str | None) -> LabelKeys:
        """These labels and no others."""
        return cls(**{**dict.fromkeys(keys.labels()), **where})

    def __getitem__(self, name: str) -> str | None:
        return self._where[name]

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __repr__(self) -> str:
        return f"LabelKeys({self._where})"


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


def _as_matrix(value: np.ndarray) -> np.ndarray | None:
    """A 3×3 tensor from 9 values or the 6 of ASE's Voigt order (xx, yy, zz, yz, xz, xy)."""
    if value.size == 9:
        return value.reshape(3, 3)
    if value.size == 6:
        xx, yy, zz, yz, xz, xy = value
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    return None


def _validated(name: str, value, atoms: ase.Atoms, source, index) -> np.ndarray:
    """``value`` as a float64 array of the shape the label ``name`` declares, or an error."""
    label = keys.label(name)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise EquipotInputError(f"not numeric: {value!r}", source, index, name) from None
    if label.symmetry == keys.TENSOR:
        matrix = _as_matrix(array)
        if matrix is None:
            raise EquipotInputError(f"expected 6 (Voigt) or 9 values, got shape {array.shape}",
                                    source, index, name)
        array = matrix
    elif label.per == keys.ATOM:
        expected = (len(atoms), *label.shape)
        if array.shape != expected:
            raise EquipotInputError(f"expected shape {expected}, got {array.shape}",
                                    source, index, name)
    else:
        size = int(np.prod(label.shape))
        if array.size != size:
            what = "one number" if size == 1 else f"{size} values ({label.unit})"
            raise EquipotInputError(f"expected {what}, got shape {array.shape}",
                                    source, index, name)
        array = array.reshape(label.shape)
    if label.needs_volume and abs(atoms.cell.volume) < MIN_VOLUME:
        raise EquipotInputError(
            f"a {name} label needs a cell with a volume, but this one's is "
            f"{abs(atoms.cell.volume):.3g} Å³ (pbc {atoms.pbc.tolist()}): give the "
            f"non-periodic direction the cell vector the {name} refers to, or drop the "
            f"label (data.{name}_key=null)", source, index, name)
    if not np.all(np.isfinite(array)):
        raise EquipotInputError("contains NaN or inf", source, index, name)
    return array


def read_labels(structures: list[ase.Atoms], label_keys: LabelKeys, source: str
                ) -> dict[str, list[np.ndarray | None]]:
    """Validated labels of every structure, by field name (``keys.ENERGY`` …); None where a
    structure lacks that label.

    A field is a label of the file when any structure has it (a ``required`` one, energy, must
    be in at least one where its key is set). A structure that lacks it is masked out of that
    label's loss and metrics. A label counts only on the structures it ``applies_to`` (stress
    on periodic ones, which must then have a volume; dipoles on non-periodic ones).
    """
    labels = {}
    for field, key in label_keys.items():
        if key is None:
            continue
        values = [_lookup(atoms, key) for atoms in structures]
        if all(value is None for value in values):
            if keys.label(field).required:
                raise EquipotInputError(
                    f"no structure has the label '{key}' (looked in info, arrays and "
                    f"calculator results); set data.{field}_key to where they are, or to "
                    f"null to train without them", source, field=field)
            continue
        labels[field] = [None if value is None or not _applies(field, atoms)
                         else _validated(field, value, atoms, source, index)
                         for index, (atoms, value) in enumerate(zip(structures, values))]
    return labels


def _applies(name: str, atoms: ase.Atoms) -> bool:
    """Whether label ``name`` is one of ``atoms`` (its ``applies_to``: all, periodic or
    non-periodic structures)."""
    applies_to = keys.label(name).applies_to
    if applies_to == "periodic":
        return bool(atoms.pbc.any())
    if applies_to == "non_periodic":
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


def isolated_atom_energies(path: str | Path, energy_key: str = "energy") -> dict[int, float]:
    """Energies (eV) of the single-atom structures in ``path``, by atomic number (the reference
    energies E0 of ``data.isolated_atoms``)."""
    structures = read_structures(path)
    for index, atoms in enumerate(structures):
        if len(atoms) != 1:
            raise EquipotInputError(f"expected one atom, found {len(atoms)}", path, index,
                                    keys.ATOMIC_NUMBERS)
    labels = read_labels(structures, LabelKeys.only(energy=energy_key), str(path))
    return {int(atoms.numbers[0]): float(energy)
            for atoms, energy in zip(structures, labels[keys.ENERGY])}
