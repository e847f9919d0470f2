# The two commands of the README: `make run` (the app on embedded defaults) and `make test` (the whole suite).
# Every target uses the virtual environment .venv at the repository root; torch is pinned by constraints.txt so a
# CPU machine never downloads CUDA wheels. infra/install.py installs with uv (on PATH, or bootstrapped from PyPI into
# .venv; about 40 s for the app) and falls back to pip (INSTALLER=pip forces pip). `make run PORT=8080` changes the
# port (or VIDEODPO_PORT=8080; HOST=0.0.0.0 / VIDEODPO_HOST to listen beyond this machine).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
INSTALLER ?= auto

.PHONY: run test install install-dev lint bench-cpu clean-data

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml constraints.txt
	VIDEODPO_INSTALLER=$(INSTALLER) $(PY) infra/install.py
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml constraints.txt
	VIDEODPO_INSTALLER=$(INSTALLER) $(PY) infra/install.py --dev
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# `make run NO_DEMO=1`: no demo accounts or data (webapp.quickstart --no-demo)
run: install
	$(PY) -m webapp.quickstart $(if $(NO_DEMO),--no-demo) $(if $(PORT),--port $(PORT)) $(if $(HOST),--host $(HOST))

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
