# The two commands of the README: `make run` (the app on embedded defaults) and `make test` (the whole suite).
# Every target uses the virtual environment .venv at the repository root; torch is pinned by constraints.txt so a
# CPU machine never downloads CUDA wheels.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: run test install install-dev lint bench-cpu clean-data

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml constraints.txt
	$(PIP) -e '.[dev]'
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(PY) -m webapp.quickstart

test: install-dev
	$(PY) -m pytest

lint: install-dev
	$(PY) -m ruff check .

bench-cpu: install-dev
	$(PY) benchmarks/model_cpu.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/sequence_parallel.py
	$(PY) benchmarks/generation.py
	$(PY) benchmarks/dpo_closed_loop.py

clean-data:
	rm -rf .data
