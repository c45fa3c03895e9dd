# Every target wraps a command; no logic lives here. `make help` lists them.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch. GPU users: see README "Install".
TORCH_SPEC ?= torch==2.13.0
ARGS ?=
# pytest-xdist workers for `make test` (each test file runs in one of them, in order).
TEST_WORKERS ?= 2
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.DEFAULT_GOAL := help
.PHONY: help install lock train test test-slow lint format wheelhouse bare-machine clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed ## Create .venv and install tasklight with the pinned dependencies

lock: ## Resolve the newest releases in a scratch venv and rewrite constraints.txt with them
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q "$(TORCH_SPEC)" && .venv-lock/bin/python -m pip install -q -e ".[dev]"
	head -3 constraints.txt > constraints.new
	.venv-lock/bin/python -m pip freeze --exclude-editable | grep -v '^torch==' >> constraints.new
	mv constraints.new constraints.txt && rm -rf .venv-lock

train: $(VENV)/.installed ## Train (default: the quickstart); Hydra overrides in ARGS="..."
	$(PY) -m framework.train $(ARGS)

test: $(VENV)/.installed ## Run the default test suite (CPU, a few minutes; TEST_WORKERS processes)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)

test-slow: $(VENV)/.installed ## Run only the slow tests (real data sets in ../shared/data)
	$(PY) -m pytest -m "slow" $(ARGS)

lint: $(VENV)/.installed ## Check style with ruff
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(VENV)/.installed ## Format the code with ruff
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

wheelhouse: $(VENV)/.installed ## Wheels + data a bare GPU machine needs (.wheelhouse/, under 64 MiB)
	$(PY) bench/device/wheelhouse.py $(ARGS)

bare-machine: ## Simulate the lent GPU machine (Python 3.12, torch 2.11) and smoke-run gpu_check.sh
	bash bench/device/bare_machine.sh

clean: ## Remove .venv, run logs and caches
	rm -rf $(VENV) .venv-lock logs .pytest_cache .ruff_cache
