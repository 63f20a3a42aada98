"""MD through the calculator's skin neighbour list equals MD that searches the neighbours at
every step (``skin=0``), to 1e-10 in float64 over 1 000 steps: in NVE with atoms wrapped back
into the cell as they cross its faces, and in NPT where the cell changes at every step. (Both
lists give the pairs in one order, so the trajectories agree to the bit; in an order that
depended on when the list was searched, the random potential's chaos at 1000 K grew the
roundoff to 3e-7 Å by the last step.)"""

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.md.nose_hoover_chain import IsotropicMTKNPT
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

from equipot import EquipotCalculator

from conftest import MODEL_CONFIG, make_model

STEPS = 1000


@pytest.fixture(scope="module")
def copper_model():
    """Random float64 SchNet for copper with unscaled weights and ZBL repulsion, which keeps
    the atoms apart at 1000 K."""
    return make_model({**MODEL_CONFIG, "species": [29], "reference_energies": [-4.0],
                       "energy_terms": [{"name": "zbl"}]}, weight_factor=1.0)


def trajectory(model, ensemble: str, skin: float):
    """(energies [STEPS], positions [STEPS, N, 3], volumes [STEPS], crossings, searches) of
    1 000 steps of 2 fs from a 32-atom copper cell at 1000 K; positions are wrapped into the
    cell after every step."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    atoms.calc = EquipotCalculator(model, skin=skin)
    MaxwellBoltzmannDistribution(atoms, temperature_K=1000, rng=np.random.default_rng(0))
    if ensemble == "nve":
        dynamics = VelocityVerlet(atoms, 2 * units.fs)
    else:
        dynamics = IsotropicMTKNPT(atoms, 2 * units.fs, temperature_K=1000,
                                   pressure_au=1e4 * units.bar, tdamp=50 * units.fs,
                                   pdamp=200 * units.fs)
    energies, positions, volumes, crossings = [], [], [], [0]

    def record():
        outside = (atoms.get_scaled_positions(wrap=False) % 1.0
                   != atoms.get_scaled_positions(wrap=False)).any(axis=1)
        crossings[0] += int(outside.sum())
        atoms.wrap()
        energies.append(atoms.get_potential_energy())
        positions.append(atoms.positions.copy())
        volumes.append(atoms.get_volume())

    dynamics.attach(record, interval=1)
    dynamics.run(STEPS)
    return (np.array(energies), np.array(positions), np.array(volumes), crossings[0],
            atoms.calc.neighbors.searches)


@pytest.mark.parametrize("ensemble", ["nve", "npt"])
def test_skin_list_md_equals_searching_every_step(copper_model, ensemble):
    energies, positions, volumes, crossings, searches = trajectory(copper_model, ensemble, 0.5)
    fresh = trajectory(copper_model, ensemble, 0.0)
    assert fresh[4] > STEPS and searches < STEPS / 3  # the skin saves searches
    assert crossings > 50  # atoms did cross the cell's faces and were wrapped back
    if ensemble == "npt":
        assert np.ptp(volumes) > 0.02 * volumes[0]  # the barostat did move the cell
    np.testing.assert_allclose(energies, fresh[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(positions, fresh[1], rtol=0, atol=1e-10)
    np.testing.assert_allclose(volumes, fresh[2], rtol=1e-12)
