# make run: serve the app on the committed weights.  make test: the whole test suite (what CI runs).
# make test-fast: the edit loop (no kills, fuzzing of the server, load or browser; few hypothesis examples).
# make lint: ruff.  make train: retrain.
# Each target creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build goes in first, so the requirements' `torch` is already satisfied (no CUDA download).
TORCH ?= torch==2.13.0
SHARED_CORPUS := ../shared/data/toy-story-1995-screenplay.txt
CORPUS ?= $(if $(wildcard $(SHARED_CORPUS)),$(SHARED_CORPUS),)

.PHONY: run test test-fast lint train install dev

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.runtime
dev: $(VENV)/.dev

run: $(VENV)/.runtime
	$(PY) app.py

test: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m pytest -q

test-fast: $(VENV)/.dev
	HYPOTHESIS_PROFILE=dev $(PY) -m pytest -q -x -m "not slow and not browser"

lint: $(VENV)/.dev
	$(PY) -m ruff check .

train: $(VENV)/.runtime
	$(PY) train.py --jobs 2 $(if $(CORPUS),--corpus $(CORPUS))
