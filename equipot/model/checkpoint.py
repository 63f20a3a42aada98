"""The model file: a plain, versioned dict that loads with ``torch.load(weights_only=True)``.

    {format_version, equipot_version, model_config, state_dict, metadata}

No pickled modules: the architecture is rebuilt from ``model_config`` by ``build_potential``,
so a model file survives refactoring. Older formats are upgraded by ``MIGRATIONS``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from equipot.errors import EquipotInputError
from equipot.io import atomic_save
from equipot.model.build import DTYPES, build_potential
from equipot.model.exported import ExportedPotential
from equipot.model.llpr import LAST_LAYER
from equipot.model.potential import Potential
from equipot.version import __version__

FORMAT_VERSION = 6


def _one_readout_to_readouts_by_stage(checkpoint: dict) -> dict:
    """Format 1 → 2: the single readout after the last block (``readout.*``) became the
    readout of stage num_blocks (``readouts.<num_blocks>.*``) when readouts per stage came."""
    stage = int(checkpoint["model_config"]["num_blocks"])
    state_dict = {(f"readouts.{stage}." + name.removeprefix("readout.")
                   if name.startswith("readout.") else name): tensor
                  for name, tensor in checkpoint["state_dict"].items()}
    return {**checkpoint, "state_dict": state_dict, "format_version": 2}


def _drop_e3nn_tensor_product_constants(checkpoint: dict) -> dict:
    """Format 2 → 3: NequIP's and MACE's convolution (``blocks.<k>.convolution``) was e3nn's
    ``o3.TensorProduct``, which stored constants with the weights (an empty ``weight``, its
    ``output_mask`` and Wigner 3j buffers); ``EdgeConvolution`` builds them itself."""
    constant = re.compile(r"blocks\.\d+\.convolution\."
                          r"(weight|output_mask|_compiled_main_left_right\..*)")
    state_dict = {name: tensor for name, tensor in checkpoint["state_dict"].items()
                  if not constant.fullmatch(name)}
    return {**checkpoint, "state_dict": state_dict, "format_version": 3}


def _nequip_as_format_1_built_it(checkpoint: dict) -> dict:
    """Format 1 → 2, NequIP: every format-1 file predates 8f3f3e9, which made NequIP's gates
    SiLU instead of sigmoid and its residual (``h_i + Gate(y_i)``, then always on) an option,
    off by default; a format-1 NequIP config keeps both, explicitly."""
    config = checkpoint["model_config"]
    if config.get("block") != "nequip":
        return checkpoint
    block_options = {"resnet": True, "gate": "sigmoid", **(config.get("block_options") or {})}
    return {**checkpoint, "model_config": {**config, "block_options": block_options}}


def _one_distance_floor_option(checkpoint: dict) -> dict:
    """Format 3 → 4: the floor under the network's edge lengths was two keys,
    ``distance_floor_width: w`` (at the shortest training distances; it took precedence) and
    ``network_floor_factor: f`` (at f × the covalent radii, w = 0.1 Å, a constant then); it is
    one, ``distance_floor: {at, factor, width}`` (``equipot.physics.distance_floor``)."""
    config = dict(checkpoint["model_config"])
    width = config.pop("distance_floor_width", None)
    factor = config.pop("network_floor_factor", None)
    if width is not None:
        config["distance_floor"] = {"at": "training", "width": float(width)}
    elif factor is not None:
        config["distance_floor"] = {"at": "covalent", "factor": float(factor), "width": 0.1}
    else:
        config["distance_floor"] = None
    return {**checkpoint, "model_config": config, "format_version": 4}


def _llpr_forces_of_the_first_form(checkpoint: dict) -> dict:
    """Format 4 → 5: LLPR's force σ was each atom's structure-level rigidity, σ_F,i =
    β √(φ_iᵀ (FᵀF + ς² I)⁻¹ φ_i), before it became the atom-level one over the training atoms
    of the atom's element (``equipot.model.llpr``, ``atom_covariance`` [S, H, H]). A file of
    the first form keeps its σ: every element's atom covariance is FᵀF, its inverse that of
    FᵀF + ς² I. (``equipot.uncertainty.fitting.fit_llpr`` fits the atom-level form.)"""
    config, state = checkpoint["model_config"], checkpoint["state_dict"]
    uncertainty = config.get("uncertainty") or {}
    if uncertainty.get("method") == "llpr" and "uncertainty.atom_covariance" not in state:
        count = len(config["species"])
        state = {**state, **{f"uncertainty.{name}": state[f"uncertainty.{structure}"].expand(
            count, -1, -1).clone() for name, structure in (
            ("atom_covariance", "covariance"),
            ("inverse_atom_covariance", "inverse_covariance"))}}
        regularizer = uncertainty.get("regularizer", 0.0)  # the same ς², for every element
        config = {**config, "uncertainty": {**uncertainty, "atom_regularizer": regularizer}}
    return {**checkpoint, "model_config": config, "state_dict": state, "format_version": 5}


def _llpr_forces_of_the_last_layer(checkpoint: dict) -> dict:
    """Format 5 → 6: LLPR's force rigidity read each atom's last-layer features φ_i alone,
    before it read the last readout's inputs beside them (ψ_i = [φ_i, x_i],
    ``equipot.model.llpr``). A file of format 5 says so (``force_features: last_layer``) and
    keeps its σ."""
    config = checkpoint["model_config"]
    uncertainty = config.get("uncertainty") or {}
    if uncertainty.get("method") == "llpr" and "force_features" not in uncertainty:
        config = {**config, "uncertainty": {**uncertainty, "force_features": LAST_LAYER}}
    return {**checkpoint, "model_config": config, "format_version": 6}


def _format_1_to_2(checkpoint: dict) -> dict:
    return _one_readout_to_readouts_by_stage(_nequip_as_format_1_built_it(checkpoint))


# format_version k → function upgrading a format-k dict to format k + 1.
MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _format_1_to_2,
                                                 2: _drop_e3nn_tensor_product_constants,
                                                 3: _one_distance_floor_option,
                                                 4: _llpr_forces_of_the_first_form,
                                                 5: _llpr_forces_of_the_last_layer}


def save_model(path: str | Path, model: Potential, metadata: Mapping | None = None) -> None:
    """Write ``model`` (its config, ``model.config``, and weights) with ``metadata`` to
    ``path``, atomically (a crash leaves the previous file or none)."""
    checkpoint = {
        "format_version": FORMAT_VERSION,
        "equipot_version": __version__,
        "model_config": _plain(model.config),
        "state_dict": {name: tensor.detach().cpu() for name, tensor in
                       model.state_dict().items()},
        "metadata": _plain(metadata or {}),
    }
    atomic_save(checkpoint, path)


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict of ``path``, migrated to the current format."""
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise EquipotInputError("no such model file", source=path) from None
    except Exception as error:
        raise EquipotInputError(f"not an equipot model file ({type(error).__name__}: {error})",
                                source=path) from error
    if not isinstance(checkpoint, dict) or "format_version" not in checkpoint:
        raise EquipotInputError("not an equipot model file (no format_version)", source=path)
    version = checkpoint["format_version"]
    if not isinstance(version, int) or version < 1:
        raise EquipotInputError(f"invalid format_version {version!r}", source=path)
    if version > FORMAT_VERSION:
        raise EquipotInputError(f"model file format {version} is newer than this equipot "
                                f"({__version__}) reads (≤ {FORMAT_VERSION}); upgrade equipot",
                                source=path)
    while version < FORMAT_VERSION:
        if version not in MIGRATIONS:
            raise EquipotInputError(f"no migration from model file format {version}",
                                    source=path)
        checkpoint = MIGRATIONS[version](checkpoint)
        if checkpoint["format_version"] != version + 1:
            raise RuntimeError(f"migration from format {version} must give format {version + 1}")
        version = checkpoint["format_version"]
    return checkpoint


def load(path: str | Path, device: str | torch.device = "cpu",
         dtype: torch.dtype | None = None) -> Potential | ExportedPotential:
    """The Potential saved in ``path``, in eval mode on ``device``.

    Parameters are in ``dtype``, by default the dtype the model was trained in;
    ``model.config`` is the file's model config and ``model.metadata`` its metadata. A
    ``.pt2`` file of ``equipot-export`` loads as an ``ExportedPotential`` (CPU, its own dtype).
    """
    if Path(path).suffix == ".pt2":
        if not Path(path).is_file():
            raise EquipotInputError("no such file", str(path))
        if dtype is not None:
            raise EquipotInputError("an exported model runs in the dtype it was exported in",
                                    str(path), field="dtype")
        return ExportedPotential(path).to(device)
    checkpoint = read_checkpoint(path)
    if dtype is None:
        dtype = DTYPES[checkpoint["metadata"].get("dtype", "float32")]
    model = build_potential(checkpoint["model_config"], dtype=dtype)
    model.load_state_dict(checkpoint["state_dict"])
    model.metadata = dict(checkpoint["metadata"])
    return model.to(device).eval()


def _plain(value):
    """Containers of builtins only (numpy and torch values converted), for weights_only."""
    if isinstance(value, Mapping):
        return {key if isinstance(key, (str, int)) else str(key): _plain(item)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
