"""Last-layer prediction rigidity (LLPR): the uncertainty of one trained model, no retraining.

Bigi, Chong, Ceriotti, Grasselli, *A prediction rigidity formalism for low-cost uncertainties in
trained neural networks*, Mach. Learn.: Sci. Technol. 5, 045018 (2024). A Potential's energy is
linear in its last-layer features (``Potential.last_layer_features``: φ_i [H] per atom, the
inputs of every readout's last linear layer times the model's scale, a 1 per bias):

    E_A = w · f_A + const,   f_A = Σ_{i ∈ A} φ_i.

Energies: treating the last-layer weights w as the solution of a least-squares fit to the
training energies (rows f of F), with prior precision ς², gives

    σ²(E_A) = α² f_Aᵀ (FᵀF + ς² I)⁻¹ f_A,     σ²(e_i) = α² φ_iᵀ (FᵀF + ς² I)⁻¹ φ_i

for a structure's energy and a per-atom energy (the local prediction rigidity of Chong et al.,
JCTC 19, 4619 (2023)).

Forces: their exact LLPR variance needs the Jacobian ∂f/∂r_i (H backward passes per call), and
on acetylacetone it grew least of all forms out of distribution (docs/benchmarks.md). Instead,
since forces label every atom, each training atom's environment counts as a data point of its
element s, described by ψ_i = [φ_i, x_i], its last-layer features and the inputs x_i of the
last readout (the invariant vector its hidden layers start from; none for a linear readout,
whose inputs φ_i are): with Ψ_s the rows ψ_j of the training atoms of element s,

    σ²(F_i,a) = β_s² ψ_iᵀ (Ψ_sᵀ Ψ_s + λ² D_s)⁻¹ ψ_i,   s the element of atom i,

the leverage of atom i's environment among the training environments of its element, D_s the
diagonal of Ψ_sᵀΨ_s / N_s (each feature is regularised relative to its own mean square: ψ
joins features of different kinds and sizes). It costs two small quadratic forms per atom
beyond the forward pass. Each element's leverage is measured among its own N_s training atoms
(about dim ψ / N_s in distribution), so its size says nothing of that element's error level:
β_s is one scale per element. On acetylacetone this σ orders structures by force error with
Spearman 0.82–0.93 and grows 1.55–2.0× from 300 K to 600 K data (MACE, PaiNN, SchNet,
DimeNet++; NequIP 1.45×), where φ_i alone with one β grew 1.42–1.50× (MACE;
docs/benchmarks.md); each atom's structure-level rigidity σ(e_i)/α, the first form, did not
order structures at all (Spearman −0.01). Files written before format 6 (``force_features:
last_layer``) keep ψ_i = φ_i. α, β_s, ς² and λ² are calibrated on validation data
(``equipot.uncertainty.fitting``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from equipot import keys
from equipot.nn.scatter import scatter_sum

LAST_LAYER, LAST_LAYER_AND_INPUTS = "last_layer", "last_layer_and_inputs"


@dataclass(frozen=True)
class LLPROptions:
    regularizer: float = 0.0  # ς² / (mean diagonal of FᵀF per training structure)
    atom_regularizer: float = 0.0  # λ² (relative: D_s above; before format 6, to its mean)
    energy_scale: float = 1.0  # α
    # β_s, 1/Å: one per element of the model's species, in order (one number: every element's)
    forces_scale: float | tuple[float, ...] = 1.0
    force_features: str = LAST_LAYER_AND_INPUTS  # ψ_i: [φ_i, x_i], or φ_i (LAST_LAYER)


class LastLayerRigidity(nn.Module):
    """Scaled last-layer features φ [N, H], the last readout's inputs x [N, X] and species
    indices [N] → σ of the energies [G], per-atom energies [N] and force components [N] (eV,
    eV, eV/Å). Buffers saved with the model, filled by
    ``equipot.uncertainty.fitting.fit_llpr``: ``covariance`` FᵀF [H, H] and
    ``atom_covariance`` Ψ_sᵀΨ_s [S, H', H'] (H' = dim ψ) of the training set (kept so that the
    model can be calibrated again), and their regularised inverses ``inverse_covariance`` and
    ``inverse_atom_covariance``; ``forces_scales`` β_s [S] comes from the options."""

    method = "llpr"

    def __init__(self, num_features: int, num_inputs: int, num_species: int,
                 options: LLPROptions):
        super().__init__()
        if options.force_features not in (LAST_LAYER, LAST_LAYER_AND_INPUTS):
            raise ValueError(f"uncertainty.force_features must be {LAST_LAYER_AND_INPUTS} or "
                             f"{LAST_LAYER}, got {options.force_features!r}")
        self.options = options
        scales = torch.as_tensor(options.forces_scale, dtype=torch.float64)
        if scales.dim() > 1 or scales.numel() not in (1, num_species):
            raise ValueError(f"uncertainty.forces_scale needs one number, or one per element "
                             f"({num_species}), got {options.forces_scale}")
        self.register_buffer("forces_scales", scales.expand(num_species).clone(),
                             persistent=False)
        size = num_features + (num_inputs if options.force_features == LAST_LAYER_AND_INPUTS
                               else 0)
        for name in ("covariance", "inverse_covariance"):
            self.register_buffer(name, torch.zeros(num_features, num_features,
                                                   dtype=torch.float64))
        for name in ("atom_covariance", "inverse_atom_covariance"):
            self.register_buffer(name, torch.zeros(num_species, size, size, dtype=torch.float64))

    def forward(self, features: torch.Tensor, inputs: torch.Tensor, species: torch.Tensor,
                batch: torch.Tensor, num_graphs: int) -> dict[str, torch.Tensor]:
        totals = scatter_sum(features, batch, num_graphs)  # f_A [G, H]
        inverse = self.inverse_covariance.double()
        environments = environment_features(features, inputs, self.options.force_features)
        return {keys.ENERGY_UNCERTAINTY: self.options.energy_scale * rigidity(totals, inverse),
                keys.ATOMIC_ENERGIES_UNCERTAINTY: (self.options.energy_scale
                                                   * rigidity(features, inverse)),
                keys.FORCES_UNCERTAINTY: self.forces_scales.double()[species] * rigidity(
                    environments, self.inverse_atom_covariance.double(), species)}


def environment_features(features: torch.Tensor, inputs: torch.Tensor,
                         force_features: str = LAST_LAYER_AND_INPUTS) -> torch.Tensor:
    """ψ [N, H'] from φ [N, H] and x [N, X]: [φ, x], or φ alone (``LAST_LAYER``)."""
    if force_features == LAST_LAYER:
        return features
    return torch.cat([features, inputs], dim=1)


def rigidity(features: torch.Tensor, inverse_covariance: torch.Tensor,
             species: torch.Tensor | None = None) -> torch.Tensor:
    """√(xᵀ C⁻¹ x) [items] of each row x of ``features`` [items, H] (float64); with ``species``
    [items], C⁻¹ [S, H, H] is taken per item's species."""
    if species is None:
        projected = features @ inverse_covariance  # [items, H]
    else:  # one product with every species' C⁻¹ side by side, then each item's own
        size = features.shape[1]
        # C⁻¹ is symmetric, so its rows stacked over species, transposed, are [H, S·H] as a view
        every = features @ inverse_covariance.reshape(-1, size).T  # [items, S·H]
        projected = every.view(features.shape[0], inverse_covariance.shape[0], size).gather(
            1, species.view(-1, 1, 1).expand(-1, 1, size)).squeeze(1)
    return (projected * features).sum(-1).clamp_min(0).sqrt()
