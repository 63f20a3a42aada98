"""Field names of graphs, batches and model outputs: the one place they are spelled.

Shapes use N atoms, E edges, G structures (graphs) in a batch. Units are ASE's: Å, eV.
"""

# Inputs of a structure.
ATOMIC_NUMBERS = "z"  # [N] int64
POSITIONS = "pos"  # [N, 3] Å
CELL = "cell"  # [G, 3, 3] Å, rows are lattice vectors; ignored along non-periodic axes
PBC = "pbc"  # [G, 3] bool, periodicity of each lattice vector
EDGE_INDEX = "edge_index"  # [2, E] int64, (centre i, neighbour j); both directions listed
SHIFTS = "shifts"  # [E, 3] integer cell shifts S: r_ij = pos[j] - pos[i] + S @ cell
BATCH = "batch"  # [N] int64, structure index of each atom (set by torch_geometric)
NUM_ATOMS = "num_atoms"  # [G] int64
NUM_EDGES = "num_edges"  # [G] int64; kept by datasets only (a Data derives it from edge_index)
TOTAL_CHARGE = "total_charge"  # [G] e, total charge of each structure (info["charge"], default 0)

# Labels and predictions.
ENERGY = "energy"  # [G] eV, total potential energy
FORCES = "forces"  # [N, 3] eV/Å, -dE/dpos
STRESS = "stress"  # [G, 3, 3] eV/Å³, (1/V) dE/dstrain, ASE's sign
ATOMIC_ENERGIES = "energies"  # [N] eV, per-atom contributions summing to ENERGY
DIPOLE = "dipole"  # [G, 3] e·Å, Σ q_i r_i of non-periodic structures (predicted: 0 if periodic)
CHARGES = "charges"  # [N] e, atomic partial charges (models with an electrostatics term)

LABELS = (ENERGY, FORCES, STRESS, DIPOLE)
# [G] bool per label: whether the structure has it. A structure lacking a label (or stress on a
# non-periodic one, a dipole on a periodic one) is masked out of that label's loss and metrics.
HAS_LABEL = {ENERGY: "has_energy", FORCES: "has_forces", STRESS: "has_stress",
             DIPOLE: "has_dipole"}
WEIGHT = "weight"  # [G] loss weight of each structure (info["weight"] × its config type's)

# Which outputs are per atom ([N, …]) and which per structure ([G, …]).
PER_ATOM_OUTPUTS = (FORCES, ATOMIC_ENERGIES, CHARGES)
PER_STRUCTURE_OUTPUTS = (ENERGY, STRESS, DIPOLE)
