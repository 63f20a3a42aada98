"""Electrostatic energy of atomic charges: a Coulomb sum for molecules, an Ewald sum for crystals.

Per-atom energies e_i = ½ k_e q_i φ_i (eV), k_e = 14.399645 eV·Å/e², with φ_i the potential at
atom i of every other charge and, in a crystal, of every periodic image (Ewald 1921):

    molecule    φ_i = Σ_{j≠i} q_j s(r_ij) / r_ij
    crystal     φ_i = Σ'_{j,n} q_j [erfc(α r_ijn) − 1 + s(r_ijn)] / r_ijn            real space
                    + (4π/V) Σ_{k≠0} e^{−k²/4α²}/k² Re[e^{−ik·r_i} S(k)]            reciprocal
                    − 2α q_i / √π                                                  self
                    − π Q / (V α²)                                                 background

with S(k) = Σ_j q_j e^{ik·r_j}, Q = Σ_j q_j and Σ' over images n, leaving out j = i for n = 0.
The background term is the energy of a uniform compensating charge: it makes a charged cell's
energy finite and independent of α. s(r) = 1 for point charges; Gaussian charges of width σ
(Å) shield the short range with s(r) = erf(r / 2σ), so that a pair interacts through
erf(r / 2σ) / r, finite at r = 0. A molecule's sum is the real-space sum at α = 0 without images.

One accuracy ε sets the three parameters of a crystal of N atoms in a volume V (Fincham,
Mol. Simul. 13, 1 (1994): real and reciprocal sums then cost alike, O(N^{3/2}) in all):

    p = √(−ln ε),    α = √π (N / V²)^{1/6},    r_c = p / min(α, 1/2σ),    k_max = 2 α p

so that the largest neglected terms, erfc(α r_c) and e^{−k_max²/4α²}, are of order ε.

Everything is differentiable twice in positions and cell (forces, stress, force training).
α, r_c, k_max, the real-space pairs and the integer k-vector indices are found without
gradient: the energy does not depend on α (up to ε), and the pairs' vectors and the k-vectors
are rebuilt from positions and cell inside the graph. Structures that are periodic along some
but not all axes (slabs, wires) are rejected: the 3D sum would couple a slab to its copies.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from equipot.errors import EquipotInputError
from equipot.neighbors import neighbor_list
from equipot.nn.geometry import edge_vectors
from equipot.nn.k_vectors import half_space_indices
from equipot.nn.scatter import scatter_sum
from equipot.physics.elements import COULOMB_CONSTANT


def electrostatic_energies(charges: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor,
                           pbc: torch.Tensor, batch: torch.Tensor, accuracy: float = 1e-8,
                           alpha: float | None = None, shielding_width: float | None = None
                           ) -> torch.Tensor:
    """Per-atom electrostatic energies e_i = ½ k_e q_i φ_i [N] (eV) of a batch of structures.

    charges [N] (e), positions [N, 3] (Å), cell [G, 3, 3] (Å, rows are lattice vectors),
    pbc [G, 3] bool, batch [N] (structure of each atom, sorted). Structures without
    periodicity get the Coulomb sum, fully periodic ones the Ewald sum. ``alpha`` (1/Å)
    overrides the splitting parameter chosen from ``accuracy``; ``shielding_width`` σ (Å)
    makes the charges Gaussians (None: point charges).
    """
    periodic = pbc.all(dim=1)
    partly_periodic = pbc.any(dim=1) & ~periodic
    if partly_periodic.any():
        index = int(partly_periodic.nonzero()[0])
        raise EquipotInputError(
            f"electrostatics needs structures periodic along all three axes or none; this one "
            f"has pbc={pbc[index].tolist()}", index=index, field="pbc")
    shielding = None if shielding_width is None else 1.0 / (2.0 * shielding_width)
    potentials = coulomb_potentials(charges, positions, batch, ~periodic, shielding)
    if periodic.any():
        potentials = potentials + ewald_potentials(charges, positions, cell, batch, periodic,
                                                   accuracy, alpha, shielding)
    return 0.5 * COULOMB_CONSTANT * charges * potentials


def pair_potentials(charges: torch.Tensor, centre: torch.Tensor, neighbour: torch.Tensor,
                    lengths: torch.Tensor, alpha: torch.Tensor | float, shielding: float | None
                    ) -> torch.Tensor:
    """φ_i = Σ_pairs q_j [erfc(α r) − erfc(r / 2σ)] / r [N] over pairs (centre i, neighbour j)
    of lengths r [P] (Å), with α [P] or scalar (1/Å) and shielding 1/2σ (1/Å, None: σ = 0)."""
    kernel = torch.erfc(alpha * lengths) / lengths
    if shielding is not None:
        kernel = kernel - torch.erfc(shielding * lengths) / lengths
    return scatter_sum(charges[neighbour] * kernel, centre, charges.shape[0])


def coulomb_potentials(charges: torch.Tensor, positions: torch.Tensor, batch: torch.Tensor,
                       selected: torch.Tensor, shielding: float | None) -> torch.Tensor:
    """φ_i = Σ_{j≠i} q_j s(r_ij)/r_ij over all pairs of each ``selected`` [G] structure [N]
    (0 for atoms of other structures)."""
    centre, neighbour = pairs_within_structures(batch, selected)
    lengths = torch.linalg.vector_norm(positions[neighbour] - positions[centre], dim=-1)
    return pair_potentials(charges, centre, neighbour, lengths, 0.0, shielding)


def pairs_within_structures(batch: torch.Tensor, selected: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ordered pair (i, j), i ≠ j, of atoms in the same ``selected`` [G] structure:
    centre and neighbour indices [P] (batch [N] sorted, as torch_geometric makes it)."""
    atoms_per_structure = torch.bincount(batch, minlength=selected.shape[0])
    first_atom = atoms_per_structure.cumsum(0) - atoms_per_structure
    partners = (atoms_per_structure * selected)[batch]  # [N] atoms in i's structure, i included
    centre = torch.repeat_interleave(torch.arange(batch.shape[0], device=batch.device), partners)
    first_pair_of_centre = partners.cumsum(0) - partners
    rank = torch.arange(centre.shape[0], device=batch.device) - first_pair_of_centre[centre]
    neighbour = first_atom[batch[centre]] + rank
    distinct = centre != neighbour
    return centre[distinct], neighbour[distinct]


def ewald_parameters(num_atoms: torch.Tensor, volume: torch.Tensor, accuracy: float,
                     alpha: float | None, shielding: float | None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """α (1/Å), real-space cutoff r_c (Å) and k_max (1/Å), each [G], for structures of
    ``num_atoms`` [G] in ``volume`` [G] (Å³), as the module docstring states; no gradient."""
    p = math.sqrt(-math.log(accuracy))
    volume = volume.detach()
    if alpha is None:
        alpha = math.sqrt(math.pi) * (num_atoms.to(volume.dtype) / volume**2) ** (1.0 / 6.0)
    else:
        alpha = torch.full_like(volume, float(alpha))
    smallest_decay = alpha if shielding is None else alpha.clamp(max=shielding)
    return alpha, p / smallest_decay, 2.0 * alpha * p


def ewald_potentials(charges: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor,
                     batch: torch.Tensor, periodic: torch.Tensor, accuracy: float,
                     alpha: float | None, shielding: float | None) -> torch.Tensor:
    """φ_i of the Ewald sum [N] for atoms of the ``periodic`` [G] structures (0 elsewhere)."""
    structures = periodic.nonzero().squeeze(1)  # [P] the periodic structures
    local_index = torch.cumsum(periodic, 0) - 1  # structure → its place among them
    atoms = periodic[batch].nonzero().squeeze(1)  # [M] their atoms
    structure = local_index[batch[atoms]]  # [M] in 0 … P−1
    q, r, cells = charges[atoms], positions[atoms], cell[structures]
    volume = torch.linalg.det(cells).abs()
    num_atoms = torch.bincount(structure, minlength=structures.shape[0])
    alpha, real_cutoff, k_max = ewald_parameters(num_atoms, volume, accuracy, alpha, shielding)

    centre, neighbour, shifts = periodic_pairs(r, cells, structure, real_cutoff)
    vectors = edge_vectors(r, centre, neighbour, shifts.to(r.dtype), cells[structure[centre]])
    lengths = torch.linalg.vector_norm(vectors, dim=-1)
    real = pair_potentials(q, centre, neighbour, lengths, alpha[structure[centre]], shielding)
    reciprocal = reciprocal_potentials(q, r, cells, volume, structure, alpha, k_max)
    total_charge = scatter_sum(q, structure, structures.shape[0])
    self_interaction = -2.0 * alpha[structure] * q / math.sqrt(math.pi)
    background = (-math.pi * total_charge / (volume * alpha**2))[structure]
    potentials = charges.new_zeros(charges.shape[0])
    return potentials.index_add(0, atoms, real + reciprocal + self_interaction + background)


def periodic_pairs(positions: torch.Tensor, cells: torch.Tensor, structure: torch.Tensor,
                   cutoffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs (i, j, S) of atoms of the same 3D-periodic structure closer than its cutoff
    [P] (Å), own periodic images included, from vesin (data/neighbors.py) without gradient.

    positions [M, 3], cells [P, 3, 3], structure [M] sorted. Returns centre, neighbour [E]
    and integer shifts S [E, 3] (int64): r_ij = pos[j] − pos[i] + S @ cell.
    """
    positions_np = positions.detach().cpu().numpy()
    cells_np = cells.detach().cpu().numpy()
    counts = torch.bincount(structure, minlength=cells.shape[0]).cpu().numpy()
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    periodic = np.ones(3, dtype=bool)
    pairs = [neighbor_list(positions_np[start:start + count], cell, periodic, cutoff)
             for start, count, cell, cutoff in zip(starts, counts, cells_np, cutoffs.tolist())]
    centre = np.concatenate([i + start for (i, _, _), start in zip(pairs, starts)])
    neighbour = np.concatenate([j + start for (_, j, _), start in zip(pairs, starts)])
    shifts = np.concatenate([shift for _, _, shift in pairs])
    device = positions.device
    return (torch.as_tensor(centre, device=device), torch.as_tensor(neighbour, device=device),
            torch.as_tensor(shifts, device=device))


def reciprocal_potentials(charges: torch.Tensor, positions: torch.Tensor, cells: torch.Tensor,
                          volume: torch.Tensor, structure: torch.Tensor, alpha: torch.Tensor,
                          k_max: torch.Tensor) -> torch.Tensor:
    """φ_i = (4π/V) Σ_{0<|k|≤k_max} e^{−k²/4α²}/k² Re[e^{−ik·r_i} S(k)] [M].

    k = 2π m A⁻ᵀ for integer m (A: the cell, rows a_d), so k·r = 2π m·s with fractional
    coordinates s = r A⁻¹. k and −k contribute alike: the sum runs over half of the m and
    doubles them. positions [M, 3], cells [P, 3, 3], volume, alpha, k_max [P], structure [M].
    """
    inverse = torch.linalg.inv(cells)
    lattice_lengths = torch.linalg.vector_norm(cells.detach(), dim=-1)  # [P, 3] |a_d|
    # |m_d| = |k·a_d| / 2π ≤ k_max |a_d| / 2π
    bounds = (k_max.detach()[:, None] * lattice_lengths / (2 * math.pi)).floor().amax(0)
    m = half_space_indices(bounds.long().tolist(), positions.dtype, positions.device)  # [K, 3]
    k = 2 * math.pi * torch.einsum("kd,ped->pke", m, inverse)  # [P, K, 3]
    k_squared = k.square().sum(-1)
    # 2 × (4π/V) e^{−k²/4α²}/k² (both k and −k), [P, K]; 0 beyond each structure's k_max
    weight = 2 * 4 * math.pi / volume[:, None] * torch.exp(
        -k_squared / (4 * alpha[:, None] ** 2)) / k_squared
    weight = torch.where(k_squared <= k_max[:, None] ** 2, weight, torch.zeros_like(weight))
    fractional = torch.einsum("md,mde->me", positions, inverse[structure])
    phase = 2 * math.pi * fractional @ m.T  # [M, K] k·r_i
    cos, sin = torch.cos(phase), torch.sin(phase)
    num_structures = cells.shape[0]
    structure_cos = scatter_sum(charges[:, None] * cos, structure, num_structures)  # Re S(k)
    structure_sin = scatter_sum(charges[:, None] * sin, structure, num_structures)  # Im S(k)
    return (weight[structure] * (cos * structure_cos[structure]
                                 + sin * structure_sin[structure])).sum(-1)
