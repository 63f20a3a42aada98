"""Last-layer prediction rigidity (LLPR): the uncertainty of one trained model, no retraining.

Bigi, Chong, Ceriotti, Grasselli, *A prediction rigidity formalism for low-cost uncertainties in
trained neural networks*, Mach. Learn.: Sci. Technol. 5, 045018 (2024). A Potential's energy is
linear in its last-layer features (``Potential.last_layer_features``: φ_i [H] per atom, the
inputs of every readout's last linear layer times the model's scale, a 1 per bias):

    E_A = w · f_A + const,   f_A = Σ_{i ∈ A} φ_i.

Treating the last-layer weights w as the solution of a linear least-squares fit on the training
structures (rows f of F), with prior precision ς², gives the predicted variances

    σ²(E_A) = α² f_Aᵀ (FᵀF + ς² I)⁻¹ f_A,     σ²(e_i) = α² φ_iᵀ (FᵀF + ς² I)⁻¹ φ_i

for a structure's energy and a per-atom energy; α and ς are calibrated on validation data
(``equipot.uncertainty.fitting``). Forces: the exact LLPR variance of F_i needs the Jacobian
∂f/∂r_i (H backward passes); instead σ(F_i) = β σ(e_i)/α, atom i's own rigidity with a scale β
(1/Å) fitted to validation force errors, at no cost beyond the energy's. It ranks atoms by how
far their environments lie from the training set, not by the force's own sensitivity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from equipot import keys
from equipot.nn.scatter import scatter_sum


@dataclass(frozen=True)
class LLPROptions:
    regularizer: float = 0.0  # ς², in the units of FᵀF (eV²)
    energy_scale: float = 1.0  # α
    forces_scale: float = 1.0  # β, 1/Å


class LastLayerRigidity(nn.Module):
    """Scaled last-layer features [N, H] → σ of the energies [G], per-atom energies [N] and
    force components [N] (eV, eV, eV/Å). Buffers saved with the model, filled by
    ``equipot.uncertainty.fitting.fit_llpr``: ``covariance`` FᵀF of the training set (kept so
    that the model can be calibrated again) and ``inverse_covariance`` (FᵀF + ς² I)⁻¹."""

    method = "llpr"

    def __init__(self, num_features: int, options: LLPROptions):
        super().__init__()
        self.options = options
        for name in ("covariance", "inverse_covariance"):
            self.register_buffer(name, torch.zeros(num_features, num_features,
                                                   dtype=torch.float64))

    def forward(self, features: torch.Tensor, batch: torch.Tensor, num_graphs: int
                ) -> dict[str, torch.Tensor]:
        totals = scatter_sum(features, batch, num_graphs)  # f_A [G, H]
        structure, atom = (rigidity(values, self.inverse_covariance.double())
                           for values in (totals, features))
        return {keys.ENERGY_UNCERTAINTY: self.options.energy_scale * structure,
                keys.ATOMIC_ENERGIES_UNCERTAINTY: self.options.energy_scale * atom,
                keys.FORCES_UNCERTAINTY: self.options.forces_scale * atom}


def rigidity(features: torch.Tensor, inverse_covariance: torch.Tensor) -> torch.Tensor:
    """√(xᵀ C⁻¹ x) [items] of each row x of ``features`` [items, H] (float64)."""
    return torch.einsum("nh,hk,nk->n", features, inverse_covariance, features).clamp_min(0).sqrt()
