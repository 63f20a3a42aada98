"""Reference energies, shift and scale of a trained model, refitted to new data with the
network fixed (fine-tuning onto labels from another DFT setting, or new elements).

The model's energy is E_A = Σ_i [E0(z_i) + shift + scale · n_i + t_i] (n_i the network's
per-atom output, t_i the energy terms'), and its forces F = F_t + scale · f. So, in this order:

- scale (``refit``): the least-squares factor of the force labels, argmin_s Σ |F − F_t − s f|²
  (f from the model at its own scale and at scale 0);
- reference energies: ``refit``, least squares of the energy labels minus the rest of the
  model over element counts (the elements of the new data; the others keep theirs);
  ``isolated_atoms``, the energies of an isolated-atoms file; ``keep``, the source's, but any
  element the source lacks gets the least-squares fit of its own (or the isolated-atoms
  file's energy where one is given);
- shift (``refit``): the mean per-atom energy residual left after that.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from torch_geometric.loader import DataLoader

from equipot import keys
from equipot.data.dataset import GraphDataset
from equipot.errors import EquipotInputError
from equipot.model.build import build_potential
from equipot.model.potential import Potential
from equipot.train.config import REFITS
from equipot.train.statistics import element_counts

BATCH_SIZE = 16


def with_statistics(model: Potential, **statistics) -> Potential:
    """``model`` rebuilt with some of its config's statistics replaced, same weights."""
    rebuilt = build_potential({**model.config, **statistics}, dtype=model.dtype)
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.metadata = dict(model.metadata)
    return rebuilt.eval()


def predictions(model: Potential, dataset: GraphDataset) -> tuple[np.ndarray, np.ndarray]:
    """Energies [G] (eV) and forces [N, 3] (eV/Å) of ``model`` on ``dataset``."""
    energies, forces = [], []
    for batch in DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=False):
        out = model.eval()(batch, compute_forces=True)
        energies.append(out[keys.ENERGY].detach().double().numpy())
        forces.append(out[keys.FORCES].detach().double().numpy())
    return np.concatenate(energies), np.concatenate(forces)


def labelled(dataset: GraphDataset, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, which items have them: structures for energies, atoms for forces), None
    where the dataset has no such label."""
    if name not in dataset.fields:
        return None
    has = dataset.tensors[keys.label(name).has]
    if name == keys.FORCES:
        has = has.repeat_interleave(dataset.tensors[keys.NUM_ATOMS])
    return dataset.tensors[name].double().numpy(), has.numpy()


def refit_statistics(model: Potential, dataset: GraphDataset, choices: Mapping[str, str],
                     isolated_atoms: Mapping[int, float] | None = None,
                     new_species: tuple[int, ...] = ()) -> Potential:
    """``model`` with reference energies, shift and scale as ``choices`` says (``REFITS``)
    on the labels of ``dataset``; ``new_species``: elements whose E0 is not known yet."""
    for option, valid in REFITS.items():
        if choices[option] not in valid:
            raise EquipotInputError(f"{choices[option]!r} is not one of: {', '.join(valid)}",
                                    field=f"finetune.{option}")
    energy, forces = labelled(dataset, keys.ENERGY), labelled(dataset, keys.FORCES)
    if choices["scale"] == "refit":
        if forces is None or not forces[1].any():
            raise EquipotInputError("finetune.scale=refit needs force labels",
                                    source=dataset.source, field=keys.FORCES)
        _, at_scale = predictions(model, dataset)
        _, without = predictions(with_statistics(model, scale=0.0), dataset)
        unit = ((at_scale - without) / model.scale)[forces[1]]
        target = (forces[0] - without)[forces[1]]
        model = with_statistics(model, scale=float((unit * target).sum() / (unit * unit).sum()))

    species, choice = model.species, choices["reference_energies"]
    reference = np.array(model.config["reference_energies"], dtype=np.float64)
    from_file = (list(species) if choice == "isolated_atoms"
                 else list(new_species) if choice == "keep" and isolated_atoms else [])
    if choice == "isolated_atoms" and isolated_atoms is None:
        raise EquipotInputError("finetune.reference_energies=isolated_atoms needs "
                                "data.isolated_atoms", field="data.isolated_atoms")
    missing = [z for z in from_file if z not in isolated_atoms]
    if missing:
        raise EquipotInputError(f"no isolated-atom energy for atomic numbers {missing}",
                                field="data.isolated_atoms")
    for z in from_file:
        reference[species.index(z)] = isolated_atoms[z]
    present = set(dataset.tensors[keys.ATOMIC_NUMBERS].unique().tolist())
    fitted = ([index for index, z in enumerate(species) if z in present] if choice == "refit"
              else [species.index(z) for z in new_species if z not in from_file])
    needs_energies = bool(fitted) or choices["shift"] == "refit"
    if needs_energies and (energy is None or not energy[1].any()):
        raise EquipotInputError("refitting reference energies or the shift (or an element "
                                "without an isolated-atom energy) needs energy labels",
                                source=dataset.source, field=keys.ENERGY)
    reference[fitted] = 0.0  # the rest of the model, without the E0 being fitted
    if from_file or fitted:
        model = with_statistics(model, reference_energies=reference.tolist())
    if fitted:
        counts = element_counts(dataset, species)[energy[1]]
        rest = predictions(model, dataset)[0][energy[1]]
        reference[fitted] = np.linalg.lstsq(counts[:, fitted], energy[0][energy[1]] - rest,
                                            rcond=None)[0]
        model = with_statistics(model, reference_energies=reference.tolist())
    if choices["shift"] == "refit":
        num_atoms = dataset.tensors[keys.NUM_ATOMS].double().numpy()[energy[1]]
        residual = energy[0][energy[1]] - predictions(model, dataset)[0][energy[1]]
        model = with_statistics(model, shift=model.shift + float((residual / num_atoms).mean()))
    return model
