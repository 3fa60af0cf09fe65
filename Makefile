# recsys-fewshot: `make train` runs the default job, `make test` the test suite.
# Each target creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build on Linux.
# On a GPU machine: make TORCH="torch" (or your CUDA wheel) ...
TORCH ?= torch==2.13.0
# Data root: $RECSYS_FEWSHOT_DATA, else ../shared/datasets when it exists, else ~/.cache/recsys_fewshot
RECSYS_FEWSHOT_DATA ?= $(if $(wildcard ../shared/datasets/ml-100k),$(abspath ../shared/datasets),)
export RECSYS_FEWSHOT_DATA
ARGS ?=
PYTEST_ARGS ?=

# `make sweep` + `make report`: a small real sweep (ID-only MF vs NCF x two widths x 2 seeds on ml-100k) and its table
SWEEP_DIR ?= multirun/example
SWEEP_ARGS ?= head=mf,mlp head.dim=16,64 seed=0,1 encoder=none logger=none trainer.max_epochs=5 trainer.progress=false
REPORT_ARGS ?= --plot x=head.dim y=test/rmse

.PHONY: venv train test test-fast sweep report clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install "$(TORCH)"
	$(PY) -m pip install -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

train: venv
	$(PY) -m recsys_fewshot.train $(ARGS)

test: venv
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: venv
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# (SWEEP_DIR is replaced: stale job folders from an earlier, larger sweep would otherwise enter the report)
sweep: venv
	rm -rf $(SWEEP_DIR)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m recsys_fewshot.train -m $(SWEEP_ARGS) hydra.sweep.dir=$(SWEEP_DIR)

report: venv
	$(PY) -m recsys_fewshot.report $(SWEEP_DIR) $(REPORT_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
