"""LAMMPS with equipot forces (``equipot.engines.lammps``): on a periodic triclinic Cu–Au cell
LAMMPS sees the calculator's energy, forces and virial; NVE conserves energy as ASE's
VelocityVerlet does on the same model; NPT changes the volume."""

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.data import atomic_masses
from ase.md.verlet import VelocityVerlet

from equipot import EquipotCalculator
from equipot.engines.lammps import attach, load_lammps
from equipot.errors import EquipotInputError

from conftest import MODEL_CONFIG, make_model

lammps = load_lammps()
NKTV2P = 1.6021765e6  # LAMMPS metal units: bar per eV/Å³
ELEMENTS = ["Cu", "Au"]


@pytest.fixture(scope="module")
def model():
    """Random float64 SchNet for Cu and Au with ZBL."""
    return make_model({**MODEL_CONFIG, "species": [29, 79], "reference_energies": [-4.0, -3.0],
                       "energy_terms": [{"name": "zbl"}]})


def triclinic_cu_au():
    """32 atoms, every other one Au, in a sheared (lower-triangular, as LAMMPS wants) cell."""
    atoms = bulk("Cu", "fcc", a=3.75, cubic=True).repeat(2)
    atoms.numbers[::2] = 79
    shear = np.array([[1.0, 0.0, 0.0], [0.08, 1.0, 0.0], [-0.05, 0.06, 1.0]])
    atoms.set_cell(atoms.cell.array @ shear, scale_atoms=True)
    atoms.rattle(0.05, seed=0)
    return atoms


def lammps_with(atoms, model, **options):
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    (lx, _, _), (xy, ly, _), (xz, yz, lz) = atoms.cell.array.tolist()
    lmp.commands_string(f"""
        units metal
        atom_style atomic
        atom_modify map array
        boundary p p p
        region cell prism 0 {lx!r} 0 {ly!r} 0 {lz!r} {xy!r} {xz!r} {yz!r}
        create_box 2 cell
        mass 1 {float(atomic_masses[29])!r}
        mass 2 {float(atomic_masses[79])!r}
        thermo_style custom step pe ke etotal vol pxx pyy pzz pxy pxz pyz
        """)
    for number, (x, y, z) in zip(atoms.numbers, atoms.positions.tolist()):
        lmp.command(f"create_atoms {1 if number == 29 else 2} single {x!r} {y!r} {z!r} "
                    f"units box remap yes")
    fix = attach(lmp, model, ELEMENTS, **options)
    return lmp, fix


def test_energy_forces_and_virial_are_the_calculators(model):
    atoms = triclinic_cu_au()
    lmp, fix = lammps_with(atoms, model)
    lmp.command("run 0")
    atoms.calc = EquipotCalculator(model)
    energy, forces, stress = (atoms.get_potential_energy(), atoms.get_forces(),
                              atoms.get_stress())
    assert lmp.get_thermo("pe") == pytest.approx(energy, rel=1e-6)
    ids = lmp.numpy.extract_atom("id")[:len(atoms)]
    lammps_forces = np.empty_like(forces)
    lammps_forces[ids - 1] = lmp.numpy.extract_atom("f")[:len(atoms)]
    np.testing.assert_allclose(lammps_forces, forces, rtol=1e-6, atol=1e-9)
    # LAMMPS's pressure at 0 K is the virial's: P = -σ (in bar).
    pressure = [lmp.get_thermo(name) / NKTV2P for name in ("pxx", "pyy", "pzz", "pyz", "pxz",
                                                           "pxy")]
    np.testing.assert_allclose(pressure, -stress, rtol=1e-6, atol=1e-9)
    assert np.abs(stress).max() > 1e-3  # a test of the virial, not of zeros
    assert fix.calls == 1


def test_nve_conserves_energy_as_ases_velocity_verlet(model):
    atoms = triclinic_cu_au()
    lmp, _ = lammps_with(atoms, model)
    lmp.commands_string("""
        velocity all create 300 4928 mom yes rot no dist gaussian
        timestep 0.001
        fix nve all nve
        run 0
        """)
    ids = lmp.numpy.extract_atom("id")[:len(atoms)]
    velocities = np.empty((len(atoms), 3))
    velocities[ids - 1] = lmp.numpy.extract_atom("v")[:len(atoms)]  # Å/ps
    lammps_energies = [lmp.get_thermo("etotal")]
    for _ in range(100):
        lmp.command("run 10 pre no post no")
        lammps_energies.append(lmp.get_thermo("etotal"))

    atoms.calc = EquipotCalculator(model)
    atoms.set_velocities(velocities / (1000 * units.fs))
    dynamics = VelocityVerlet(atoms, 1 * units.fs)
    ase_energies = []
    dynamics.attach(lambda: ase_energies.append(atoms.get_total_energy()), interval=10)
    dynamics.run(1000)
    assert ase_energies[0] == pytest.approx(lammps_energies[0], rel=1e-6)
    lammps_spread, ase_spread = (np.ptp(e) / len(atoms) for e in (lammps_energies, ase_energies))
    assert ase_spread < 1e-3  # eV/atom: the model and step conserve energy in ASE
    assert lammps_spread < 1.25 * ase_spread + 1e-6  # 0.55 and 0.51 meV/atom here


def test_npt_changes_the_volume(model):
    atoms = triclinic_cu_au()
    lmp, _ = lammps_with(atoms, model)
    lmp.commands_string("""
        velocity all create 300 87287 mom yes rot no
        timestep 0.002
        fix npt all npt temp 300 300 0.1 tri 20000 20000 0.5
        run 0
        """)
    volume = lmp.get_thermo("vol")
    lmp.command("run 200")
    assert abs(lmp.get_thermo("vol") / volume - 1) > 1e-3


def test_refuses_units_other_than_metal(model):
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    lmp.commands_string("units real\nregion b block 0 5 0 5 0 5\ncreate_box 1 b")
    with pytest.raises(EquipotInputError, match="units metal"):
        attach(lmp, model, ["Cu"])


def test_the_runner_attaches_the_model_before_the_first_run(model, tmp_path):
    from equipot.cli.lammps import main
    from equipot.model.checkpoint import save_model

    save_model(tmp_path / "model.pt", model, {"dtype": "float64"})
    atoms = triclinic_cu_au()
    (lx, _, _), (xy, ly, _), (xz, yz, lz) = atoms.cell.array.tolist()
    atom_lines = "\n".join(f"create_atoms {1 if number == 29 else 2} single {x!r} {y!r} {z!r} "
                           f"units box remap yes"
                           for number, (x, y, z) in zip(atoms.numbers, atoms.positions.tolist()))
    script = tmp_path / "in.lammps"
    script.write_text(f"""units metal
atom_style atomic
region cell prism 0 {lx!r} 0 {ly!r} 0 {lz!r} {xy!r} {xz!r} {yz!r}
create_box 2 cell
{atom_lines}
mass * 100.0
run 0
print "PE $(pe:%.12f)"
""")
    main([str(tmp_path / "model.pt"), str(script), "--elements", *ELEMENTS,
          "--log", str(tmp_path / "log.lammps")])
    atoms.calc = EquipotCalculator(model)
    printed = (tmp_path / "log.lammps").read_text().split("PE ")[-1].split()[0]
    assert float(printed) == pytest.approx(atoms.get_potential_energy(), rel=1e-10)


def test_the_runner_names_a_failing_lammps_command(model, tmp_path):
    from equipot.cli.lammps import main
    from equipot.model.checkpoint import save_model

    save_model(tmp_path / "model.pt", model, {"dtype": "float64"})
    script = tmp_path / "in.lammps"
    script.write_text("units metal\nregion b block 0 5 0 5 0 5\ncreate_box 1 b\nrun 0\n"
                      "fix oops all nosuchfix\n")
    with pytest.raises(SystemExit, match="LAMMPS stopped in .*in.lammps"):
        main([str(tmp_path / "model.pt"), str(script), "--elements", "Cu", "--log", "none"])
