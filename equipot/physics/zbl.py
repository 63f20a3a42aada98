"""ZBL repulsion prior: the universal screened nuclear repulsion, switched off near bond lengths.

Ziegler, Biersack, Littmark, *The Stopping and Range of Ions in Solids* (Pergamon 1985):

    V(r) = (Z_i Z_j k_e / r) φ(r / a),     a = 0.46850 Å / (Z_i^0.23 + Z_j^0.23)
    φ(x) = 0.18175 e^(−3.19980 x) + 0.50986 e^(−0.94229 x)
         + 0.28022 e^(−0.40290 x) + 0.02817 e^(−0.20162 x)

with k_e = e²/(4πε₀) = 14.399645 eV·Å and a = 0.8854 a₀ / (Z_i^0.23 + Z_j^0.23). The pair
energy is V(r) s(r), where the switch s is 1 below r_in, 0 from r_out on and in between

    s = 1 − 10t³ + 15t⁴ − 6t⁵,    t = (r − r_in) / (r_out − r_in),

whose first and second derivatives vanish at both ends (energy, forces and force derivatives
stay continuous). Both radii scale with the pair's covalent radii (ASE's, Cordero 2008):
r_in, r_out = (inner_factor, outer_factor) × (R_i + R_j). Since V > 0 falls with r and s does
not rise, the switched pair energy rises monotonically as r → 0.

Defaults, inner 0.5 and outer 0.8: covalent radii sum to about a single-bond length (C–H
1.07 Å, C–C 1.52 Å), and the shortest bonds in the bundled MD sets (rMD17 ethanol, acac, 3BPA,
conjugated bonds included) lie at 0.82–0.97 of that sum, so the prior is exactly zero on their
training data and at equilibrium: it never fights the network where the network has data. It
is at full strength below half a bond length, where no chemistry happens and a network left to
itself may attract. ZBL is no model of a bond: at the C–H bond length it still gives about 3 eV.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from ase.data import chemical_symbols

from equipot import keys
from equipot.errors import EquipotInputError
from equipot.nn.geometry import Geometry
from equipot.nn.scatter import scatter_sum
from equipot.physics.elements import COULOMB_CONSTANT, covalent_radius_sums
from equipot.physics.term import EnergyTerm, TermContext

SCREENING_LENGTH = 0.46850  # Å, 0.8854 a₀
SCREENING_EXPONENT = 0.23
SCREENING_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
SCREENING_DECAYS = (3.19980, 0.94229, 0.40290, 0.20162)


def smooth_switch(t: torch.Tensor) -> torch.Tensor:
    """1 − 10t³ + 15t⁴ − 6t⁵ of t clamped to [0, 1]: 1 for t ≤ 0, 0 for t ≥ 1, C² everywhere."""
    t = t.clamp(0.0, 1.0)
    return 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t**2)


@dataclass(frozen=True)
class ZBLOptions:
    inner_factor: float = 0.5  # r_in / (R_i + R_j): full strength below
    outer_factor: float = 0.8  # r_out / (R_i + R_j): zero beyond; r_out ≤ the cutoff


class ZBLRepulsion(EnergyTerm):
    """Per-atom energies [N] eV: e_i = ½ Σ_j V(r_ij) s(r_ij) over the edges of atom i."""

    name = "zbl"
    Options = ZBLOptions
    fixed = True  # no learned parts: statistics are fitted to the labels minus this prior

    def __init__(self, context: TermContext, options: ZBLOptions):
        super().__init__()
        species, cutoff = context.species, context.cutoff
        inner_factor, outer_factor = options.inner_factor, options.outer_factor
        if not 0.0 <= inner_factor < outer_factor:
            raise EquipotInputError(f"zbl needs 0 ≤ inner_factor < outer_factor, got "
                                    f"{inner_factor} and {outer_factor}", field="energy_terms")
        z = torch.tensor([float(number) for number in species])
        radius_sum = covalent_radius_sums(species).to(z)  # [S, S] Å
        outer_radius = outer_factor * radius_sum
        widest = int(outer_radius.argmax())
        if float(outer_radius.max()) > cutoff:
            pair = "–".join(chemical_symbols[species[k]] for k in divmod(widest, len(species)))
            raise EquipotInputError(
                f"zbl switches off at r_out = {outer_factor} × (R_i + R_j) = "
                f"{float(outer_radius.max()):.3f} Å for {pair}, beyond the model cutoff "
                f"{cutoff} Å: lower outer_factor or raise the cutoff", field="energy_terms")
        self.inner_factor, self.outer_factor = float(inner_factor), float(outer_factor)
        # Per species pair [S, S]: Z_i Z_j k_e (eV·Å), a (Å), r_in and r_out (Å).
        self.register_buffer("charge_product", COULOMB_CONSTANT * z[:, None] * z[None, :],
                             persistent=False)
        power = z**SCREENING_EXPONENT
        self.register_buffer("screening_length", SCREENING_LENGTH / (power[:, None] + power),
                             persistent=False)
        self.register_buffer("inner_radius", inner_factor * radius_sum, persistent=False)
        self.register_buffer("outer_radius", outer_radius, persistent=False)
        self.register_buffer("coefficients", torch.tensor(SCREENING_COEFFICIENTS),
                             persistent=False)
        self.register_buffer("decays", torch.tensor(SCREENING_DECAYS), persistent=False)

    def screening(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x) = Σ_k c_k exp(−d_k x), x = r/a dimensionless; [E] → [E]."""
        return (self.coefficients * torch.exp(-self.decays * x.unsqueeze(-1))).sum(-1)

    def pair_energy(self, lengths: torch.Tensor, species_i: torch.Tensor,
                    species_j: torch.Tensor) -> torch.Tensor:
        """V(r) s(r) in eV [E] of edges of ``lengths`` [E] Å between species indices [E]."""
        inner = self.inner_radius[species_i, species_j]
        outer = self.outer_radius[species_i, species_j]
        repulsion = (self.charge_product[species_i, species_j] / lengths
                     * self.screening(lengths / self.screening_length[species_i, species_j]))
        return repulsion * smooth_switch((lengths - inner) / (outer - inner))

    def forward(self, geometry: Geometry, features: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        species = geometry.species
        pair = self.pair_energy(geometry.lengths, species[geometry.centre],
                                species[geometry.neighbour])
        return {keys.ATOMIC_ENERGIES: scatter_sum(0.5 * pair, geometry.centre,
                                                  geometry.num_atoms)}
