# driftlab: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU torch by default (a local wheel where the machine has one); a GPU user sets
# TORCH_SPEC, e.g. make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PYTEST_ARGS ?=
# test workers (pytest-xdist), one torch/BLAS thread each: on small models two threads per process only add
# OpenMP barriers, and two processes with two threads each on two cores oversubscribe them
TEST_JOBS ?= 2

.PHONY: demo test lint install clean bench-peers bench-gpu tutorials

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q $(FIND_LINKS) $(TORCH_SPEC)
	$(BIN)/python -m pip install -q $(FIND_LINKS) -e '.[test]'
	touch $@

install: $(VENV)/.installed

# longest first, so that the lanes end together
DEMO := drift-digits central-rmsprop eos-digits controllers-digits central-flow-toy pf-branch pf-toys eos-adam \
	eos-momentum pf-quadratic corridors bea-order
# experiments at a time, one torch/BLAS thread each (their models are small: a second thread in one process
# gains less than a second process); every progress line is prefixed with its experiment's name
DEMO_JOBS ?= 2

demo: install
	@printf '%s\n' $(DEMO) | OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 xargs -P $(DEMO_JOBS) -I{} bash -c \
		'set -o pipefail; $(BIN)/driftlab run {} --out results/{} --overwrite 2>&1 | sed -u "s/^/[{}] /"'
	@echo "gallery written to figures/; results in results/"

# the peers of `driftlab run bench-anchors` (optional; --no-deps keeps the CPU torch in place)
bench-peers: install
	$(BIN)/python -m pip install -q --no-deps pyhessian==0.1 hessian-eigenthings==1.0.0a5 \
		curvlinops-for-pytorch==3.0.1 einops einconv opt-einsum linear_operator backpack-for-pytorch unfoldNd

# on a CUDA machine (install a CUDA torch with TORCH_SPEC): CUDA tests and the HVP/eigen/flow tables, ≤ 8 min,
# written to docs/benchmarks_gpu.md
bench-gpu: install
	$(BIN)/python -m experiments.benchmarks.gpu_report --budget 480

# the tutorials (jupytext percent scripts, executed by the tests) as executed notebooks in build/tutorials
tutorials: install
	$(BIN)/python -m pip install -q $(FIND_LINKS) -e '.[tutorials]'
	$(BIN)/python -m ipykernel install --sys-prefix --name driftlab --display-name driftlab > /dev/null
	@mkdir -p build/tutorials
	@for f in docs/tutorials/*.py; do \
		cd build/tutorials && PYTHONPATH=$(CURDIR) ../../$(BIN)/jupytext --to ipynb --set-kernel driftlab --execute \
			--output $$(basename $$f .py).ipynb ../../$$f || exit 1; cd ../..; done
	@echo "notebooks written to build/tutorials/"

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_JOBS) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) results .pytest_cache
