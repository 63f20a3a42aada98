"""Other MD engines driven by equipot models: LAMMPS (lammps.py) and OpenMM (openmm.py)."""
