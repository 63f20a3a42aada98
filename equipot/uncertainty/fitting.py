"""Fit a model's uncertainty to data: LLPR's feature covariance from the training set, and the
calibration of LLPR or an ensemble on a validation set. The result is a model whose config says
``uncertainty: {method, ...}`` with the fitted values, saved like any other.

Calibration makes predicted σ and observed errors agree on the validation set: a scale s on σ,
s² = ⟨e²⟩ / ⟨σ²⟩, so that the RMS of the calibrated σ is the RMSE, separately for energies
(per structure; per-atom energies share it) and for force components. (The Gaussian likelihood
would be highest at s² = ⟨e²/σ²⟩ instead, which a few confident but wrong predictions inflate:
on small validation sets it made σ 25 % larger than the errors.) For LLPR the regulariser ς²,
which shapes σ across structures, is chosen on a grid by the Gaussian likelihood of energies
and forces together, each grid point with its own scales.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch_geometric.loader import DataLoader

from equipot import keys
from equipot.data.graph import label_mask
from equipot.model.build import build_potential
from equipot.model.ensemble import Ensemble
from equipot.model.llpr import LLPROptions, rigidity
from equipot.model.potential import Potential
from equipot.nn.scatter import scatter_sum
from equipot.uncertainty.scores import gaussian_nll

# ς² candidates, relative to the mean diagonal of FᵀF / (training structures).
RELATIVE_REGULARIZERS = tuple(10.0 ** k for k in range(-12, 3))


@dataclass
class Residuals:
    """Validation errors (prediction − reference) and what σ is computed from: energies [G]
    (eV) of the structures with an energy label, force components [M, 3] (eV/Å) of the atoms of
    structures with forces; for LLPR their last-layer features (totals [G, H], atoms [M, H]),
    for an ensemble the members' uncalibrated σ [G], [M]."""

    energy_errors: torch.Tensor
    force_errors: torch.Tensor
    energy_inputs: torch.Tensor
    force_inputs: torch.Tensor


def scale_factor(errors: torch.Tensor, sigmas: torch.Tensor) -> float:
    """s = √(⟨e²⟩ / ⟨σ²⟩) (σ [items] broadcast over the components of errors [items, …]); 1
    for no data, or where σ is zero everywhere (a one-member ensemble)."""
    sigmas = sigmas.reshape(len(sigmas), *([1] * (errors.dim() - 1))).expand_as(errors)
    if errors.numel() == 0 or not bool((sigmas > 0).any()):
        return 1.0
    return float((errors.square().mean() / sigmas.square().mean()).sqrt())


def residuals(model: Potential | Ensemble, dataset, batch_size: int = 16,
              llpr_features: bool = False) -> Residuals:
    """The validation ``Residuals`` of ``model`` on ``dataset`` (float64, on the CPU)."""
    device = next(model.parameters()).device
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in Residuals.__annotations__}
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        batch = batch.to(device)
        predicted = model(batch, compute_forces=True)
        has_energy, has_forces = (labelled(batch, name) for name in (keys.ENERGY, keys.FORCES))
        if llpr_features:
            features = model.last_layer_features(batch)
            energy_inputs = scatter_sum(features, batch[keys.BATCH], batch.num_graphs)
            force_inputs = features
        else:
            energy_inputs = predicted[keys.ENERGY_UNCERTAINTY]
            force_inputs = predicted[keys.FORCES_UNCERTAINTY]
        parts["energy_errors"].append(error(predicted, batch, keys.ENERGY)[has_energy])
        parts["force_errors"].append(error(predicted, batch, keys.FORCES)[has_forces])
        parts["energy_inputs"].append(energy_inputs[has_energy])
        parts["force_inputs"].append(force_inputs[has_forces])
    return Residuals(**{name: torch.cat(values).detach().double().cpu()
                        for name, values in parts.items()})


def labelled(batch, name: str) -> torch.Tensor:
    """[items] bool: which items of label ``name`` are labelled (none, where the data has no
    such label at all)."""
    if keys.label(name).has in batch:
        return label_mask(batch, name)
    items = batch.num_graphs if keys.FIELDS[name].per == keys.STRUCTURE else batch.num_nodes
    return torch.zeros(items, dtype=torch.bool, device=batch[keys.BATCH].device)


def error(predicted: dict, batch, name: str) -> torch.Tensor:
    """prediction − reference of ``name`` (float64; zeros where the data has no such label)."""
    if name not in batch:
        return torch.zeros_like(predicted[name], dtype=torch.float64)
    return predicted[name].double() - batch[name].double()


def feature_covariance(model: Potential, dataset, batch_size: int = 16) -> torch.Tensor:
    """FᵀF [H, H] float64: Σ over the structures of ``dataset`` of f_A f_Aᵀ."""
    size = model.num_last_layer_features
    covariance = torch.zeros(size, size, dtype=torch.float64)
    device = next(model.parameters()).device
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        batch = batch.to(device)
        totals = scatter_sum(model.last_layer_features(batch), batch[keys.BATCH],
                             batch.num_graphs)
        covariance += (totals.T @ totals).cpu()
    return covariance


def inverse_covariance(covariance: torch.Tensor, regularizer: float) -> torch.Tensor:
    """(FᵀF + ς² I)⁻¹ [H, H] float64 (a pseudo-inverse where ς² = 0 leaves it singular)."""
    identity = torch.eye(len(covariance), dtype=torch.float64)
    return torch.linalg.pinv(covariance + regularizer * identity, hermitian=True)


def with_uncertainty(model: Potential | Ensemble, uncertainty: Mapping,
                     buffers: Mapping[str, torch.Tensor] = ()) -> Potential | Ensemble:
    """A copy of ``model`` whose config's ``uncertainty`` is ``uncertainty``, with its weights,
    metadata and (LLPR) ``buffers`` of ``model.uncertainty``."""
    dtype = model.dtype
    fitted = build_potential({**model.config, "uncertainty": dict(uncertainty)}, dtype=dtype)
    missing, unexpected = fitted.load_state_dict(model.state_dict(), strict=False)
    mismatched = [name for name in missing + unexpected if not name.startswith("uncertainty.")]
    if mismatched:
        raise RuntimeError(f"the fitted model's weights do not match: {mismatched}")
    for name, value in dict(buffers).items():
        getattr(fitted.uncertainty, name).copy_(value)
    fitted.metadata = dict(model.metadata)
    return fitted.to(next(model.parameters()).device).eval()


def fit_llpr(model: Potential, train, valid, batch_size: int = 16) -> Potential:
    """``model`` with a last-layer prediction rigidity fitted on ``train`` (FᵀF) and calibrated
    on ``valid`` (ς², α, β), as a new model (``equipot.model.llpr``)."""
    covariance = feature_covariance(model, train, batch_size)
    observed = residuals(model, valid, batch_size, llpr_features=True)
    reference = float(covariance.diagonal().mean()) / len(train)
    best = None
    for relative in RELATIVE_REGULARIZERS:
        regularizer = relative * max(reference, 1e-300)
        inverse = inverse_covariance(covariance, regularizer)
        sigma_e = rigidity(observed.energy_inputs, inverse)
        sigma_f = rigidity(observed.force_inputs, inverse)
        alpha = scale_factor(observed.energy_errors, sigma_e)
        beta = scale_factor(observed.force_errors, sigma_f)
        nll = sum(gaussian_nll(errors, sigmas) for errors, sigmas in (
            (observed.energy_errors, alpha * sigma_e),
            (observed.force_errors, beta * sigma_f.unsqueeze(-1))) if errors.numel())
        if math.isfinite(nll) and (best is None or nll < best[0]):
            best = (nll, LLPROptions(regularizer, alpha, beta), inverse)
    if best is None:
        raise ValueError("LLPR could not be calibrated: no finite likelihood on the "
                         "validation set (does it have energies and forces?)")
    _, options, inverse = best
    return with_uncertainty(model, {"method": "llpr", **asdict(options)},
                            {"covariance": covariance, "inverse_covariance": inverse})


def calibrate_ensemble(ensemble: Ensemble, valid, batch_size: int = 16) -> Ensemble:
    """``ensemble`` with its scales s_E, s_F fitted to the errors on ``valid``."""
    raw = with_uncertainty(ensemble, {**asdict(ensemble.options), "method": "ensemble",
                                      "energy_scale": 1.0, "forces_scale": 1.0})
    observed = residuals(raw, valid, batch_size)
    scales = {"energy_scale": scale_factor(observed.energy_errors, observed.energy_inputs),
              "forces_scale": scale_factor(observed.force_errors, observed.force_inputs)}
    return with_uncertainty(ensemble, {**asdict(ensemble.options), "method": "ensemble",
                                       **scales})
