# Two entry points for a fresh Debian machine: `make train` and `make test`.
# Each sets up what is missing (venv, data, test tools) and skips what is already there.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed-$(shell cat requirements.txt | md5sum | cut -c1-8)
APT := $(shell [ "$$(id -u)" = 0 ] && command -v apt-get)
export MPLBACKEND := Agg

.PHONY: train test check coverage setup data test-tools lint format tune tune-quick ui dashboard \
	server

train: setup
	$(PY) train.py $(ARGS)

# Everything (what CI runs). The slow tests often wait on child processes, servers and
# heartbeats, so a worker more than the cores keeps the CPU busy. Each test goes to the next
# free worker, slow ones first; tests sharing a module's fixture go together (tests/scheduling.py).
test: setup test-tools lint
	$(PY) -m pytest -n 3 --dist loadgroup $(PYTEST_ARGS)

# The edit-test loop: lint and the fast unit tests, no browser, no database, no real runs.
check: setup lint
	$(PY) -m pytest -m "not slow and not gpu" -n 2 $(PYTEST_ARGS)

# Line coverage of the project's packages and both CLIs, over the whole suite.
coverage: setup test-tools
	$(PY) -m pytest -n 3 --dist loadgroup --cov=data_utils --cov=models --cov=experiments \
	  --cov=train --cov=tune --cov-report=term-missing:skip-covered $(PYTEST_ARGS)

setup: $(VENV_STAMP) data

# The bytecode is compiled on all cores at once, where pip would compile file by file; like
# pip, it skips what does not compile (test files written for newer Pythons).
$(VENV_STAMP): requirements.txt
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q --no-compile -r requirements.txt
	.venv/bin/python -m compileall -q -j 0 .venv/lib > /dev/null 2>&1 || true
	rm -f .venv/.installed-* && touch $@

# Debian's package where apt and root allow it; otherwise data_utils tries torchvision's download
# and, failing that, says which options are left.
data: $(VENV_STAMP)
	@if [ -z "$$FASHION_MNIST_DIR" ] && [ ! -f data/FashionMNIST/raw/t10k-labels-idx1-ubyte.gz ] \
	   && [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] && [ -n "$(APT)" ]; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; fi
	@$(PY) -m data_utils

# The browser test needs Debian's chromium; the distributed-study test needs PostgreSQL 15.
test-tools:
	@missing=""; command -v chromium >/dev/null || missing="$$missing chromium"; \
	 command -v pg_virtualenv >/dev/null || missing="$$missing postgresql postgresql-common"; \
	 if [ -n "$$missing" ]; then \
	   if [ -z "$(APT)" ]; then echo "install as root:$$missing" >&2; exit 2; fi; \
	   apt-get update -qq && apt-get install -y -qq $$missing; fi

lint: $(VENV_STAMP)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: $(VENV_STAMP)
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

# MLflow's browser UI over the local store. Our runs carry file:// artifact URIs, which the server
# reads straight from mlruns/; --default-artifact-root only places experiments the UI creates.
# Job execution (GenAI judges) would start eight more Python processes and triple the start time.
UI_PORT ?= 5000
ui: setup
	@echo "MLflow UI: http://127.0.0.1:$(UI_PORT)  (ready in a few seconds; Ctrl-C stops it)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
	  .venv/bin/mlflow server --workers 1 --host 127.0.0.1 --port $(UI_PORT) \
	  --backend-store-uri sqlite:///mlruns/mlflow.db --default-artifact-root ./mlruns/artifacts

# A tracking server that asks for a user and password (MLflow's basic-auth app) on 127.0.0.1,
# its state, secrets and admin password under mlruns/server/; it prints how to add users and
# what nodes export. Many machines: docs/multi-node.md.
SERVER_PORT ?= 5000
server: setup
	$(PY) -m experiments.tracking.server serve --port $(SERVER_PORT) $(ARGS)

# Optuna's own dashboard over the study storage tune.py writes by default.
DASHBOARD_PORT ?= 8080
dashboard: setup
	@echo "Optuna dashboard: http://127.0.0.1:$(DASHBOARD_PORT)  (Ctrl-C stops it)"
	.venv/bin/optuna-dashboard sqlite:///mlruns/optuna.db --host 127.0.0.1 --port $(DASHBOARD_PORT)

# The default CPU study. Its base config, and so its trial 0 (the baseline), is `make train`'s
# recipe; experiments/spaces/cpu.yaml is what the other trials change. Every trial is trained
# for the recipe's 15 epochs unless successive halving stops it at epoch 6 or 12 (half go on
# at each); then the best config trains again with 3 fresh seeds and the baseline with 2 (its
# own trial is the third), and the study says whether the best beats the baseline beyond seed
# noise. A width-32 trial costs about 3 runs of the recipe: 6 trials keep the whole flow, the
# retrain included, within 30 times make train's train() (benchmarks/bench_tune.py). best.yaml lands in mlruns/studies/tune-cpu/. Rerunning
# resumes the study; ARGS="--retrain-best" then retrains the winner on all 60k images and
# registers it; ARGS="--study-name NAME" starts another.
tune: setup
	$(PY) tune.py --space experiments/spaces/cpu.yaml --study-name tune-cpu --n-trials 6 \
	  --pruner sha --prune-from-epoch 6 --reduction-factor 2 --confirm-top 1 --seeds 3 $(ARGS)

# The same flow in a few minutes (3 epochs on 10k images), to see it work end to end.
tune-quick: setup
	$(PY) tune.py --config experiments/configs/tune_quick.yaml --space experiments/spaces/cpu.yaml \
	  --study-name tune-quick --n-trials 6 --pruner sha --prune-from-epoch 1 --confirm-top 1 \
	  --seeds 2 $(ARGS)
