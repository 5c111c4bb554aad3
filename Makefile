# Two entry points: `make demo` (the CPU demo, end to end) and `make test` (the test suite).
# Both create .venv from the lock files first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
# Rules call tunebench through the interpreter Snakemake runs under (workflow/rules/common.smk), so
# nothing here needs .venv/bin on PATH.
DEMO_CONFIG := config/demo.yaml
DEMO := --configfile $(DEMO_CONFIG)

.PHONY: venv demo example test lint clean-results gpu-lock image

venv: $(STAMP)

$(STAMP): requirements.lock requirements-nodeps.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -r requirements-nodeps.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

# A run killed outright (SIGKILL, power cut) leaves its lock: workflow_lock removes it with
# `snakemake --unlock` when no other Snakemake works in this directory, and otherwise says so.
# `tunebench validate` names the file and line of a config Snakemake would reject without saying where.
demo: $(STAMP)
	$(BIN)/tunebench validate --config $(DEMO_CONFIG)
	$(BIN)/python -m tunebench.machinery.workflow_lock -- $(DEMO)
	$(BIN)/snakemake --cores $(CORES) $(DEMO) --rerun-incomplete
	$(BIN)/snakemake --cores 1 $(DEMO) --report results/report.html
	@$(BIN)/tunebench summary --results results --rerun 'make demo'

# The worked example of a task declared in a config (examples/mathqa_choice): its results stay in its
# folder. The mirror path is made absolute because the workflow runs from that folder.
EXAMPLE := examples/mathqa_choice
example: $(STAMP)
	@test -n "$(TUNEBENCH_DATA_MIRROR)" || { echo "make example reads MathQA from the data mirror: set TUNEBENCH_DATA_MIRROR"; exit 2; }
	$(BIN)/tunebench validate --config $(EXAMPLE)/config.yaml
	TUNEBENCH_DATA_MIRROR=$(abspath $(TUNEBENCH_DATA_MIRROR)) $(BIN)/snakemake --cores $(CORES) \
	  --configfile $(EXAMPLE)/config.yaml --directory $(EXAMPLE) --rerun-incomplete
	@cat $(EXAMPLE)/results/tables/main.md

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/snakemake --lint --configfile config/demo.yaml
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The container's lock, resolved from pyproject.toml with requirements.lock's pins as constraints.
# PyPI's Linux x86_64 torch wheel is the CUDA 13.0 build, so it brings its nvidia-*, cuda-* and
# triton pins. Needs uv (pip install uv) and access to the package index.
gpu-lock:
	uv pip compile pyproject.toml --extra test --extra bench --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --constraint requirements.lock --no-emit-package deepspeed \
	  --no-annotate -o requirements-gpu.lock

# The suite's image (README "Running in a container"), with podman or docker, whichever is on PATH; prints
# its tag. LOCK=requirements.lock builds the CPU-torch variant; BASE=local makes the base from this
# machine's Debian archive (scripts/base-image.sh) where no container registry is reachable.
LOCK ?= requirements-gpu.lock
BASE ?= registry
image:
	scripts/build-image.sh $(LOCK) $(BASE)
