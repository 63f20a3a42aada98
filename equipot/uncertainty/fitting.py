"""Fit a model's uncertainty to data: LLPR's feature covariance from the training set, and the
calibration of LLPR or an ensemble on a validation set. The result is a model whose config says
``uncertainty: {method, ...}`` with the fitted values, saved like any other.

Calibration makes predicted σ and observed errors agree on the validation set: a scale s on σ,
s² = ⟨e²⟩ / ⟨σ²⟩, so that the RMS of the calibrated σ is the RMSE, separately for energies
(per structure; per-atom energies share it) and for force components, those of LLPR element
by element (each element's force leverage is measured among its own training atoms, so only
its own errors can scale it). (The Gaussian likelihood would be highest at s² = ⟨e²/σ²⟩
instead, which a few confident but wrong predictions inflate: on small validation sets it
made σ 25 % larger than the errors.) For LLPR the regularisers,
which shape σ across structures and atoms, are chosen on a grid by the Gaussian likelihood: ς²
by the validation energies, λ² by the force components, each grid point with its own scale(s).
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
from equipot.model.llpr import LLPROptions, environment_features, rigidity
from equipot.model.potential import Potential
from equipot.nn.scatter import scatter_sum
from equipot.uncertainty.scores import gaussian_nll

# ς² and λ² candidates, relative to the mean diagonal of FᵀF per training structure and to
# each diagonal element of Ψ_sᵀΨ_s per training atom of s.
RELATIVE_REGULARIZERS = tuple(10.0 ** k for k in range(-12, 3))


@dataclass
class Residuals:
    """Validation errors (prediction − reference) and what σ is computed from: energies [G]
    (eV) of the structures with an energy label, force components [M, 3] (eV/Å) of the atoms of
    structures with forces; for LLPR the totals of their last-layer features [G, H] and the
    atoms' ψ [M, H'] (``equipot.model.llpr``), for an ensemble the members' uncalibrated σ [G],
    [M]; the atoms' species indices [M]."""

    energy_errors: torch.Tensor
    force_errors: torch.Tensor
    energy_inputs: torch.Tensor
    force_inputs: torch.Tensor
    force_species: torch.Tensor


def scale_factor(errors: torch.Tensor, sigmas: torch.Tensor) -> float:
    """s = √(⟨e²⟩ / ⟨σ²⟩) (σ [items] broadcast over the components of errors [items, …]); 1
    for no data, or where σ is zero everywhere (a one-member ensemble)."""
    sigmas = sigmas.reshape(len(sigmas), *([1] * (errors.dim() - 1))).expand_as(errors)
    if errors.numel() == 0 or not bool((sigmas > 0).any()):
        return 1.0
    return float((errors.square().mean() / sigmas.square().mean()).sqrt())


def element_scale_factors(errors: torch.Tensor, sigmas: torch.Tensor, species: torch.Tensor,
                          num_species: int) -> torch.Tensor:
    """s_s [S] (float64): ``scale_factor`` over the items [items] of each element s; an element
    without validation items takes the scale of all items."""
    every = scale_factor(errors, sigmas)
    return torch.tensor([scale_factor(errors[species == s], sigmas[species == s])
                         if bool((species == s).any()) else every for s in range(num_species)],
                        dtype=torch.float64)


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
            features, inputs = model.rigidity_features(batch)
            energy_inputs = scatter_sum(features, batch[keys.BATCH], batch.num_graphs)
            force_inputs = environment_features(features, inputs)
        else:
            energy_inputs = predicted[keys.ENERGY_UNCERTAINTY]
            force_inputs = predicted[keys.FORCES_UNCERTAINTY]
        species = model.species_of_z[batch[keys.ATOMIC_NUMBERS]]
        parts["force_species"].append(species[has_forces])
        parts["energy_errors"].append(error(predicted, batch, keys.ENERGY)[has_energy])
        parts["force_errors"].append(error(predicted, batch, keys.FORCES)[has_forces])
        parts["energy_inputs"].append(energy_inputs[has_energy])
        parts["force_inputs"].append(force_inputs[has_forces])
    return Residuals(**{name: torch.cat(values).detach().cpu()
                        if name == "force_species" else torch.cat(values).detach().double().cpu()
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


def feature_covariances(model: Potential, dataset, batch_size: int = 16
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FᵀF [H, H] (Σ over the structures of ``dataset`` of f_A f_Aᵀ), Ψ_sᵀΨ_s [S, H', H']
    (Σ over its atoms of element s of ψ_j ψ_jᵀ), float64, and the atoms of each element [S]."""
    size, num_species = model.num_last_layer_features, len(model.species)
    atom_size = size + model.num_readout_inputs
    structures = torch.zeros(size, size, dtype=torch.float64)
    atoms = torch.zeros(num_species, atom_size, atom_size, dtype=torch.float64)
    counts = torch.zeros(num_species, dtype=torch.long)
    device = next(model.parameters()).device
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        batch = batch.to(device)
        features, inputs = model.rigidity_features(batch)
        totals = scatter_sum(features, batch[keys.BATCH], batch.num_graphs)
        structures += (totals.T @ totals).cpu()
        environments = environment_features(features, inputs)
        species = model.species_of_z[batch[keys.ATOMIC_NUMBERS]]
        for index in species.unique().tolist():  # a few elements, not atoms
            rows = environments[species == index]
            atoms[index] += (rows.T @ rows).cpu()
            counts[index] += len(rows)
    return structures, atoms, counts


def inverse_covariance(covariance: torch.Tensor, relative: float, count: torch.Tensor | float,
                       per_feature: bool = False) -> torch.Tensor:
    """(C + r c I)⁻¹, c the mean diagonal of C per data point (``count`` of them), for C
    [H, H] or [S, H, H] (each its own c); ``per_feature``: (C + r D)⁻¹, D the diagonal of C
    per data point. Float64 (a pseudo-inverse where that is singular)."""
    diagonal = covariance.diagonal(dim1=-2, dim2=-1) / torch.as_tensor(
        count, dtype=torch.float64).clamp_min(1)[..., None]
    if not per_feature:
        diagonal = diagonal.mean(-1, keepdim=True).expand_as(diagonal)
    regularized = covariance + torch.diag_embed(relative * diagonal)
    return torch.linalg.pinv(regularized, hermitian=True)


def best_regularized(errors: torch.Tensor, features: torch.Tensor, covariance: torch.Tensor,
                     count, species: torch.Tensor | None = None, per_feature: bool = False
                     ) -> tuple[float, float | list[float], torch.Tensor]:
    """(relative regulariser, scale, inverse) of the highest Gaussian likelihood of ``errors``
    [items, …] on the grid RELATIVE_REGULARIZERS (``inverse_covariance``'s, ``per_feature`` or
    not), the scale fitted at each point: one, or with ``species`` [items] one per element of
    the covariances [S, H, H]; (0, 1, pseudo-inverse) without errors."""
    best = None
    for relative in RELATIVE_REGULARIZERS if errors.numel() else (0.0,):
        inverse = inverse_covariance(covariance, relative, count, per_feature)
        sigma = rigidity(features, inverse, species)
        if species is None:
            scale = scale_factor(errors, sigma)
            scaled = scale * sigma
        else:
            scales = element_scale_factors(errors, sigma, species, len(covariance))
            scale, scaled = scales.tolist(), scales[species] * sigma
        shaped = scaled.reshape(len(sigma), *([1] * (errors.dim() - 1)))
        nll = gaussian_nll(errors, shaped) if errors.numel() else 0.0
        if math.isfinite(nll) and (best is None or nll < best[0]):
            best = (nll, relative, scale, inverse)
    if best is None:
        raise ValueError("LLPR could not be calibrated: no finite likelihood on the "
                         "validation set")
    return best[1:]


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
    """``model`` with a last-layer prediction rigidity fitted on ``train`` (FᵀF, Ψ_sᵀΨ_s) and
    calibrated on ``valid`` (ς² and α by its energies, λ² and each element's β_s by its
    forces), as a new model (``equipot.model.llpr``)."""
    structures, atoms, atom_counts = feature_covariances(model, train, batch_size)
    observed = residuals(model, valid, batch_size, llpr_features=True)
    regularizer, alpha, inverse = best_regularized(
        observed.energy_errors, observed.energy_inputs, structures, len(train))
    atom_regularizer, beta, atom_inverse = best_regularized(
        observed.force_errors, observed.force_inputs, atoms, atom_counts,
        observed.force_species, per_feature=True)
    options = LLPROptions(regularizer, atom_regularizer, alpha, beta)
    return with_uncertainty(model, {"method": "llpr", **asdict(options)}, {
        "covariance": structures, "inverse_covariance": inverse,
        "atom_covariance": atoms, "inverse_atom_covariance": atom_inverse})


def calibrate_ensemble(ensemble: Ensemble, valid, batch_size: int = 16) -> Ensemble:
    """``ensemble`` with its scales s_E, s_F fitted to the errors on ``valid``."""
    raw = with_uncertainty(ensemble, {**asdict(ensemble.options), "method": "ensemble",
                                      "energy_scale": 1.0, "forces_scale": 1.0})
    observed = residuals(raw, valid, batch_size)
    scales = {"energy_scale": scale_factor(observed.energy_errors, observed.energy_inputs),
              "forces_scale": scale_factor(observed.force_errors, observed.force_inputs)}
    return with_uncertainty(ensemble, {**asdict(ensemble.options), "method": "ensemble",
                                       **scales})
