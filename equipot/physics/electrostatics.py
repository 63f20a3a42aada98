"""Learned atomic charges and their electrostatic energy: the long-range part of a potential.

    q̃_i = MLP(scalars of x_i) + q_0(z_i)                     charge head on the last features
    q_i  = q̃_i + (Q − Σ_{j∈G} q̃_j) / N_G                     each structure's Σ q = its charge Q
    e_i  = ½ k_e q_i φ_i                                      Coulomb or Ewald (physics/ewald.py)
    μ    = Σ_i q_i r_i                                        dipole of a molecule (e·Å)

The charges are learned from energies and forces alone, or also from reference dipoles
(``loss.dipole_weight``). Q comes from ``info["charge"]`` of each structure (default 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from e3nn import o3
from torch import nn

from equipot import keys
from equipot.nn.geometry import Geometry
from equipot.nn.readout import ScalarReadout
from equipot.nn.scatter import scatter_sum
from equipot.physics.ewald import electrostatic_energies
from equipot.physics.term import EnergyTerm, TermContext


def neutralised(charges: torch.Tensor, total_charge: torch.Tensor, batch: torch.Tensor
                ) -> torch.Tensor:
    """q_i + (Q − Σ_j q_j) / N per structure: charges [N] (e) whose sum is total_charge [G]."""
    num_graphs = total_charge.shape[0]
    num_atoms = torch.bincount(batch, minlength=num_graphs).to(charges.dtype)
    excess = total_charge - scatter_sum(charges, batch, num_graphs)
    return charges + (excess / num_atoms)[batch]


@dataclass(frozen=True)
class ElectrostaticsOptions:
    hidden: int = 16  # width of the charge MLP
    accuracy: float = 1e-8  # ε of the Ewald sum (equipot.physics.ewald.electrostatic_energies)
    shielding_width: float | None = None  # Å, Gaussian charges of width σ; None: point charges


class Electrostatics(EnergyTerm):
    """Per-atom electrostatic energies [N] (eV) of charges read from the last stage's features.
    The model's cutoff is not needed: the Coulomb sum takes every pair and the Ewald sum
    chooses its own."""

    name = "electrostatics"
    Options = ElectrostaticsOptions
    reads_features = True

    def __init__(self, context: TermContext, options: ElectrostaticsOptions):
        super().__init__()
        self.irreps_in = o3.Irreps(context.features)
        self.charge_head = ScalarReadout(self.irreps_in, options.hidden)
        self.species_charges = nn.Parameter(torch.zeros(len(context.species)))  # q_0(z), e
        self.accuracy = float(options.accuracy)
        self.shielding_width = (None if options.shielding_width is None
                                else float(options.shielding_width))

    def forward(self, geometry: Geometry, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """keys.ATOMIC_ENERGIES [N] (eV), keys.CHARGES [N] (e) and keys.DIPOLE [G, 3] (e·Å;
        zero for periodic structures, whose dipole depends on the choice of cell)."""
        positions = geometry.positions
        charges = (self.charge_head(features, geometry)
                   + self.species_charges[geometry.species]).to(positions.dtype)
        total_charge = (geometry.total_charge.to(positions.dtype)
                        if geometry.total_charge is not None
                        else positions.new_zeros(geometry.num_graphs))
        charges = neutralised(charges, total_charge, geometry.batch)
        energies = electrostatic_energies(charges, positions, geometry.cell, geometry.pbc,
                                          geometry.batch, self.accuracy,
                                          shielding_width=self.shielding_width)
        dipole = scatter_sum(charges[:, None] * positions, geometry.batch, geometry.num_graphs)
        molecule = ~geometry.pbc.any(dim=1, keepdim=True)
        return {keys.ATOMIC_ENERGIES: energies, keys.CHARGES: charges,
                keys.DIPOLE: torch.where(molecule, dipole, torch.zeros_like(dipole))}

    @torch.no_grad()
    def take_species(self, source: Electrostatics, rows: torch.Tensor) -> None:
        """``source``'s weights, its species s as species ``rows[s]`` here; a new species'
        q_0 starts at 0 e (``equipot.nn.species_rows``)."""
        self.charge_head.load_state_dict(source.charge_head.state_dict())
        self.species_charges[rows] = source.species_charges
