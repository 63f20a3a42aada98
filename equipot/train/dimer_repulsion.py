"""Training penalty that teaches the network to push apart atoms closer than any in the data.

The ZBL prior repels at nuclear distances, but between its switch-off and the shortest distance
a pair ever has in the training set nothing constrains the network, and there its extrapolation
often attracts: a trained model then fails the short-range check
(``equipot.analysis.short_range``). A smooth prior cannot fix that afterwards: where the
network's dimer slope at r_min is attractive, any energy that stays smooth and agrees with it on
the data dips just below r_min. So the training itself is told. Every training batch gets K
isolated dimers of every element pair appended, at distances drawn anew each step, stratified
over [r_f, r_min] (r_min: the check's threshold, the pair's shortest training distance; r_f: the
model's distance floor, below which its network is blind and ZBL alone decides,
``equipot.physics.distance_floor``; 0.1 Å without one: a network free to extrapolate to 0.1 Å
can answer the penalty with walls of 10¹¹ eV there, which end training in overflow), and the
loss gains

    L_rep = w · mean over dimers of max(0, dE/dr + m)

with E the model's full energy (ZBL included) and dE/dr = (F_a − F_b)·r̂ from the forces the
model computes anyway. Zero for a curve falling at least as steeply as m (eV/Å) towards r_min:
the check's monotonic rise, with a margin. The dimers ride in the same forward pass as the batch
(a few dozen two-atom graphs), so the penalty costs a few percent of a step, not a second pass.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch_geometric.data import Batch

from equipot import keys
from equipot.data.graph import MIN_DISTANCE, atoms_per_structure
from equipot.physics.elements import element_pairs, repulsion_thresholds


class DimerRepulsion(nn.Module):
    """Appends dimers to a batch and scores how much they attract below r_min (see module)."""

    def __init__(self, species: list[int], shortest_distances: list[list[float | None]] | None,
                 floors: torch.Tensor | None, *, weight: float, margin: float,
                 samples_per_pair: int):
        """``shortest_distances``: [S][S] Å, aligned with ``species`` (the model config's);
        ``floors``: [S, S] Å, the model's distance floor (``Potential.distance_floor``), below
        which its network is blind and no dimer is drawn; None: draw down to 0.1 Å."""
        super().__init__()
        if samples_per_pair < 1:
            raise ValueError(f"dimer_repulsion.samples_per_pair must be ≥ 1, got "
                             f"{samples_per_pair}")
        self.weight, self.margin, self.samples = weight, margin, samples_per_pair
        thresholds = repulsion_thresholds(species, shortest_distances)
        pairs = element_pairs(species)
        numbers = torch.tensor([(species[i], species[j]) for i, j in pairs])  # [P, 2]
        self.register_buffer("numbers", numbers.repeat_interleave(samples_per_pair, 0).flatten(),
                             persistent=False)  # [2D], D = P K dimers, atoms a, b of each
        # Per pair [P], Å: dimers are drawn between the floor (lowest) and r_min (highest).
        highest = torch.tensor([thresholds[pair][0] for pair in pairs], dtype=torch.float64)
        lowest = (torch.full_like(highest, MIN_DISTANCE) if floors is None else
                  torch.stack([floors[pair].double() for pair in pairs]).clamp(MIN_DISTANCE))
        self.register_buffer("highest", highest, persistent=False)
        self.register_buffer("lowest", lowest.clamp(max=highest), persistent=False)

    @property
    def num_dimers(self) -> int:
        return self.numbers.numel() // 2

    def distances(self) -> torch.Tensor:
        """[D] Å: per pair, one random distance in each of K equal slices of [r_f, r_min]."""
        device = self.highest.device
        slices = torch.arange(self.samples, dtype=torch.float64, device=device)
        fractions = (slices + torch.rand(len(self.highest), self.samples, dtype=torch.float64,
                                         device=device)) / self.samples
        low, high = self.lowest.unsqueeze(1), self.highest.unsqueeze(1)
        return (low + (high - low) * fractions).flatten()

    def append_to(self, batch) -> Batch:
        """The model inputs of ``batch`` followed by D fresh dimers along z, atom a at the
        origin, as one batch (labels are left out: the loss reads them from ``batch``)."""
        device, count = batch[keys.POSITIONS].device, self.num_dimers
        positions = torch.zeros(count, 2, 3, dtype=torch.float64, device=device)
        positions[:, 1, 2] = self.distances()
        dimer_atoms = torch.arange(0, 2 * count, 2, device=device)
        edges = torch.stack([torch.stack([dimer_atoms, dimer_atoms + 1], 1).flatten(),
                             torch.stack([dimer_atoms + 1, dimer_atoms], 1).flatten()])
        dimers = {keys.ATOMIC_NUMBERS: self.numbers,
                  keys.POSITIONS: positions.flatten(0, 1),
                  keys.CELL: torch.zeros(count, 3, 3, dtype=torch.float64, device=device),
                  keys.PBC: torch.zeros(count, 3, dtype=torch.bool, device=device),
                  keys.SHIFTS: torch.zeros(2 * count, 3, dtype=torch.float64, device=device),
                  keys.TOTAL_CHARGE: torch.zeros(count, dtype=torch.float64, device=device)}
        fields = {key: torch.cat([batch[key].to(value.dtype), value])
                  for key, value in dimers.items() if key in batch}
        num_atoms, num_graphs = batch[keys.POSITIONS].shape[0], batch.num_graphs
        fields[keys.EDGE_INDEX] = torch.cat([batch[keys.EDGE_INDEX], edges + num_atoms], 1)
        dimer_of_atom = torch.arange(count, device=device).repeat_interleave(2)
        fields[keys.BATCH] = torch.cat([batch[keys.BATCH], dimer_of_atom + num_graphs])
        atoms_per_graph = torch.cat([atoms_per_structure(batch),
                                     torch.full((count,), 2, device=device)])
        fields["ptr"] = torch.cat([atoms_per_graph.new_zeros(1), atoms_per_graph.cumsum(0)])
        return Batch(**fields)

    def forward(self, predicted: Mapping[str, torch.Tensor], batch
                ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Split the predictions for ``append_to(batch)`` into those of ``batch``'s structures
        and the weighted penalty L_rep of the dimers (needs their forces)."""
        num_atoms, num_graphs = batch[keys.POSITIONS].shape[0], batch.num_graphs
        own = {key: value[:num_atoms if keys.FIELDS[key].per == keys.ATOM else num_graphs]
               for key, value in predicted.items()}
        dimer_forces = predicted[keys.FORCES][num_atoms:, 2].view(-1, 2)  # [D, (a, b)] along z
        slope = 0.5 * (dimer_forces[:, 0] - dimer_forces[:, 1])  # dE/dr, eV/Å
        return own, self.weight * torch.relu(slope + self.margin).mean()
