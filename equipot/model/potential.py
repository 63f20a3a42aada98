"""The Potential: structure → energy, and the one place where forces and stress are taken.

    E = Σ_i [ E0(z_i) + shift + scale · Σ_k readout_k(x⁽ᵏ⁾)_i + Σ_terms e_i ],
    x⁽⁰⁾ = embedding(z, edge geometry),   x⁽ᵏ⁾ = block_k(x⁽ᵏ⁻¹⁾, edge geometry)
    F = −∂E/∂pos,   σ = (1/V) ∂E/∂ε  (ε: symmetric strain applied to positions and cell)

The network runs in its own dtype (float32 by default). Edge vectors are formed in float64
(positions far from the origin keep their precision) and per-atom energies are summed in
float64 with the float64 reference energies, so totals of thousands of eV keep meV precision.
Forces and stress come back in float64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain

import numpy as np
import torch
from torch import nn

from equipot import keys
from equipot.errors import EquipotInputError
from equipot.nn.geometry import Geometry, edge_vectors
from equipot.nn.scatter import scatter_sum
from equipot.physics.term import EnergyTerm


def check_irreps_chain(named_modules: Sequence[tuple[str, nn.Module]]) -> None:
    """Fail at build time, naming both modules, when one's output irreps ≠ the next one's input."""
    for (name_a, a), (name_b, b) in zip(named_modules[:-1], named_modules[1:]):
        if a.irreps_out != b.irreps_in:
            raise ValueError(f"{name_a} gives irreps {a.irreps_out}, but {name_b} takes "
                             f"{b.irreps_in}: the model's blocks do not fit together")


class Potential(nn.Module):
    """``config``: the model config it was built from (``equipot.model.build``), kept plain
    and saved with the weights; ``metadata``: what a model file says about the model's
    training (empty for a new model). ``readouts`` maps a stage (0: the embedding, k: block k,
    counted from 1) to the module reading per-atom energies from that stage's features;
    stages without one are left out. ``embedding=None`` (no blocks, no readouts) makes a
    Potential of its energy terms alone. ``distance_floor``
    (``equipot.physics.distance_floor``): the edge lengths the network reads are floored per
    pair of elements; energy terms read the true ones. ``uncertainty`` (None, or set by
    ``build_potential``, ``equipot.model.llpr``): a module mapping the scaled last-layer
    features [N, H] and the last readout's inputs [N, X] to predicted standard deviations,
    returned with the predictions."""

    def __init__(self, config: Mapping, species: Sequence[int], cutoff: float,
                 embedding: nn.Module | None, radial_basis: nn.Module, envelope: nn.Module,
                 blocks: Sequence[nn.Module], readouts: Mapping[int, nn.Module],
                 reference_energies: Sequence[float], shift: float, scale: float,
                 energy_terms: Sequence[EnergyTerm] = (), distance_floor: nn.Module | None = None):
        super().__init__()
        self.config = dict(config)
        self.metadata: dict = {}
        stages = [("embedding", embedding)] + [(f"block {k} ({type(block).__name__})", block)
                                               for k, block in enumerate(blocks, 1)]
        if embedding is None:
            if blocks or readouts:
                raise ValueError("a Potential without an embedding has no blocks or readouts")
        else:
            check_irreps_chain(stages)
            if not readouts or not set(readouts) <= set(range(len(stages))):
                raise ValueError(f"readouts are needed at stages within 0 … {len(blocks)}, "
                                 f"got {sorted(readouts)}")
        for stage, readout in readouts.items():
            check_irreps_chain([stages[stage], (f"readout {stage}", readout)])
        self.species = [int(z) for z in species]
        self.cutoff = float(cutoff)
        self.shift, self.scale = float(shift), float(scale)
        self.embedding = embedding
        self.radial_basis = radial_basis
        self.envelope = envelope
        self.blocks = nn.ModuleList(blocks)
        self.readouts = nn.ModuleDict({str(stage): readouts[stage] for stage in sorted(readouts)})
        last = str(max(readouts)) if readouts else None  # the stage whose inputs LLPR reads
        self.inputs_stage = last if last and self.readouts[last].has_hidden_layers else None
        self.energy_terms = nn.ModuleList(energy_terms)
        self.distance_floor = distance_floor
        self.uncertainty: nn.Module | None = None  # see equipot.model.llpr
        for term in energy_terms:  # terms reading features read the last stage's
            if term.reads_features:
                check_irreps_chain([stages[-1], (f"energy term {type(term).__name__}", term)])
        lookup = torch.full((max(self.species) + 1,), -1, dtype=torch.long)
        lookup[self.species] = torch.arange(len(self.species))
        self.register_buffer("species_of_z", lookup, persistent=False)
        self.register_buffer("reference_energies",
                             torch.tensor(reference_energies, dtype=torch.float64),
                             persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        """The network's dtype (that of the first floating-point parameter or buffer)."""
        return next(tensor.dtype for tensor in chain(self.parameters(), self.buffers())
                    if tensor.is_floating_point())

    def check_species(self, atomic_numbers: np.ndarray, source: str = "<atoms>",
                      index: int | None = None) -> None:
        """Raise a clear error for elements the model was not trained on."""
        check_species(self.species, atomic_numbers, source, index)

    def forward(self, batch, compute_forces: bool = True, compute_stress: bool = False,
                create_graph: bool | None = None) -> dict[str, torch.Tensor]:
        """Energies [G] and per-atom energies [N] (float64, eV); forces [N, 3] (eV/Å) and
        stress [G, 3, 3] (eV/Å³, zero for non-periodic structures) when asked for; what
        energy terms give besides energies (keys.CHARGES [N] e, keys.DIPOLE [G, 3] e·Å); and,
        with an uncertainty method, keys.ENERGY_UNCERTAINTY [G], keys.FORCES_UNCERTAINTY [N] …

        ``create_graph`` (default: ``self.training``) keeps the graph of forces and stress
        for a loss on them; inference skips the double-backward graph.
        """
        create_graph = self.training if create_graph is None else create_graph
        with torch.set_grad_enabled(torch.is_grad_enabled() or compute_forces or compute_stress):
            return self._forward(batch, compute_forces, compute_stress, create_graph)

    def _forward(self, batch, compute_forces, compute_stress, create_graph,
                 collect_features=False):
        # Edge geometry in float64 (exact far from the origin, in big cells), network in dtype.
        dtype = self.dtype
        z = batch[keys.ATOMIC_NUMBERS]
        atom_graph = batch[keys.BATCH]
        num_graphs = batch.num_graphs
        positions = batch[keys.POSITIONS].to(torch.float64)
        cell = batch[keys.CELL].to(torch.float64)
        if compute_forces:
            positions = positions.detach().requires_grad_(True)
        gradient_inputs = [positions] if compute_forces else []
        if compute_stress:
            volume = torch.linalg.det(cell).abs()
            # E(ε) with positions and cell deformed by (1 + ε), ε symmetric; σ = (1/V) ∂E/∂ε.
            displacement = torch.zeros_like(cell, requires_grad=True)
            gradient_inputs.append(displacement)
            strain = 0.5 * (displacement + displacement.transpose(1, 2))
            positions = positions + torch.einsum("ni,nij->nj", positions, strain[atom_graph])
            cell = cell + cell @ strain

        centre, neighbour = batch[keys.EDGE_INDEX]
        shifts = batch[keys.SHIFTS].to(torch.float64)
        vectors = edge_vectors(positions, centre, neighbour, shifts,
                               cell[atom_graph[centre]]).to(dtype)
        lengths = torch.linalg.vector_norm(vectors, dim=-1)
        species = self.species_of_z[z]
        geometry = Geometry(  # the true geometry, which energy terms read
            atomic_numbers=z, species=species, batch=atom_graph, num_graphs=num_graphs,
            positions=positions, cell=cell, pbc=batch[keys.PBC], centre=centre,
            neighbour=neighbour, shifts=shifts, vectors=vectors, lengths=lengths,
            radial_functions=self.radial_basis, envelope_function=self.envelope,
            total_charge=batch[keys.TOTAL_CHARGE] if keys.TOTAL_CHARGE in batch else None)
        network_geometry = geometry
        if self.distance_floor is not None:
            floored = self.distance_floor(lengths, species[centre], species[neighbour])
            network_geometry = geometry.with_lengths(
                vectors * (floored / lengths).unsqueeze(-1), floored)

        collected = ([], []) if collect_features or self.uncertainty is not None else None
        features, network_energies = None, lengths.new_zeros(z.shape[0])
        if self.embedding is not None:
            features = self.embedding(network_geometry)
            network_energies = self._read(0, features, network_geometry, collected)
            for stage, block in enumerate(self.blocks, 1):
                features = block(features, network_geometry)
                network_energies = network_energies + self._read(stage, features,
                                                                 network_geometry, collected)
        if collect_features:
            return self._rigidity_features(collected)
        atomic_energies = (self.scale * network_energies + self.shift).double()
        atomic_energies = atomic_energies + self.reference_energies[species]
        term_outputs = {}  # charges, dipoles … of terms that give more than energies
        for term in self.energy_terms:
            term_outputs.update(term(geometry, features))
            atomic_energies = atomic_energies + term_outputs.pop(keys.ATOMIC_ENERGIES).double()
        energy = scatter_sum(atomic_energies, atom_graph, num_graphs)
        out = {keys.ENERGY: energy, keys.ATOMIC_ENERGIES: atomic_energies, **term_outputs}
        if self.uncertainty is not None:
            out.update(self.uncertainty(*self._rigidity_features(collected), species,
                                        atom_graph, num_graphs))
        if not gradient_inputs:
            return out

        gradients = torch.autograd.grad(energy.sum(), gradient_inputs, create_graph=create_graph,
                                        allow_unused=True, materialize_grads=True)
        if compute_forces:
            out[keys.FORCES] = -gradients[0]
        if compute_stress:
            periodic = batch[keys.PBC].any(dim=1)
            safe_volume = torch.where(periodic, volume, torch.ones_like(volume))
            stress = gradients[-1] / safe_volume[:, None, None]
            out[keys.STRESS] = torch.where(periodic[:, None, None], stress,
                                           torch.zeros_like(stress))
        if not create_graph:  # autograd.grad freed the graph: nothing can flow back any more
            out = {name: value.detach() for name, value in out.items()}
        return out

    def _read(self, stage: int, features: torch.Tensor, geometry: Geometry,
              collected: tuple[list, list] | None) -> torch.Tensor | float:
        """Per-atom energies [N] read from ``stage``'s features, or 0 where it has no readout;
        its last-layer features [N, H] (and [N, 1] ones for a bias) appended to
        ``collected[0]``, and the last readout's inputs [N, X] to ``collected[1]`` where it
        has hidden layers (otherwise its inputs are its last-layer features)."""
        if str(stage) not in self.readouts:
            return 0.0
        readout = self.readouts[str(stage)]
        if collected is None:
            return readout(features, geometry)
        last_layer, inputs = collected
        x = readout.inputs(features, geometry)
        phi = readout.hidden_layers(x)
        last_layer.append(phi)
        if readout.last_layer.bias is not None:
            last_layer.append(torch.ones_like(phi[:, :1]))
        if str(stage) == self.inputs_stage:
            inputs.append(x)
        return readout.last_layer(phi).squeeze(-1)

    def _rigidity_features(self, collected: tuple[list, list]
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """φ [N, H] float64, scale × the last-layer features, in which the energy is linear,
        and x [N, X] float64, the last readout's inputs (X = 0 without them); detached."""
        last_layer, inputs = collected
        phi = self.scale * torch.cat(last_layer, dim=1).double()
        x = torch.cat(inputs, dim=1).double() if inputs else phi.new_zeros(len(phi), 0)
        return phi.detach(), x.detach()

    @property
    def num_last_layer_features(self) -> int:
        """H: the inputs of every readout's last linear layer, and one per bias."""
        return sum(readout.last_layer.in_features + (readout.last_layer.bias is not None)
                   for readout in self.readouts.values())

    @property
    def num_readout_inputs(self) -> int:
        """X: the width of the last readout's inputs where it has hidden layers, else 0."""
        return self.readouts[self.inputs_stage].num_inputs if self.inputs_stage else 0

    def rigidity_features(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(φ [N, H], x [N, X]) float64 without gradients: each atom's scaled last-layer
        features (its per-atom energy is w · φ_i + constants, w the readouts' last-layer
        weights) and the inputs of the last readout (``num_readout_inputs``)."""
        if self.embedding is None:
            raise ValueError("a Potential of energy terms alone has no last-layer features")
        with torch.no_grad():
            return self._forward(batch, False, False, False, collect_features=True)

    def last_layer_features(self, batch) -> torch.Tensor:
        """φ [N, H] of ``rigidity_features``."""
        return self.rigidity_features(batch)[0]


def check_species(species: Sequence[int], atomic_numbers: np.ndarray, source: str = "<atoms>",
                  index: int | None = None) -> None:
    """Raise an error naming the elements of ``atomic_numbers`` not among a model's
    ``species``."""
    unknown = sorted(set(np.asarray(atomic_numbers).tolist()) - set(species))
    if unknown:
        raise EquipotInputError(f"elements {unknown} are unknown to the model (trained on "
                                f"{list(species)})", source, index, keys.ATOMIC_NUMBERS)
