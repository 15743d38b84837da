# make run: serve the app on the committed weights.  make test: the whole test suite (what CI runs).
# make test-fast: the edit loop (no kills, fuzzing of the server, load or browser; few hypothesis examples).
# make lint: ruff and the import layers (import-linter; tests/test_layers.py for train.py and app.py, which it
# cannot take).  make train: retrain (TEXT=PATH or TEXT=tiny-shakespeare: on a plain text instead; OUT=DIR).
# make space SPACE=OWNER/NAME: publish the app as a Hugging Face Space.  make model-repo MODEL=OWNER/NAME: the weights.
# Each target creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build goes in first, so the requirements' `torch` is already satisfied (no CUDA download).
TORCH ?= torch==2.13.0
SHARED_CORPUS := ../shared/data/toy-story-1995-screenplay.txt
CORPUS ?= $(if $(wildcard $(SHARED_CORPUS)),$(SHARED_CORPUS),)
# make train TEXT=...: a plain text (a path, or tiny-shakespeare) instead of the screenplay; OUT: where to.
TEXT ?=
OUT ?= weights
# Extra options for publishing, e.g. ARGS=--dry-run or ARGS=--private.
ARGS ?=

.PHONY: run test test-fast lint train install dev space model-repo

$(VENV)/.runtime: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
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
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

test-fast: $(VENV)/.dev
	HYPOTHESIS_PROFILE=dev $(PY) -m pytest -q -x -m "not slow and not browser"

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q tests/test_layers.py

train: $(VENV)/.runtime
	$(PY) train.py --out $(OUT) $(if $(TEXT),--text $(TEXT),$(if $(CORPUS),--corpus $(CORPUS)))

# Checked before the virtualenv is made, so a missing name costs nothing.
ifneq ($(filter space,$(MAKECMDGOALS)),)
$(if $(SPACE),,$(error set SPACE=OWNER/NAME, e.g. make space SPACE=you/toystory-gpt))
endif
ifneq ($(filter model-repo,$(MAKECMDGOALS)),)
$(if $(MODEL),,$(error set MODEL=OWNER/NAME, e.g. make model-repo MODEL=you/toystory-gpt-weights))
endif

# The corpus, when present, is only read: publishing checks that no file sent holds a run of its text.
space: $(VENV)/.runtime
	$(PY) -m toystory_gpt publish space $(SPACE) $(if $(CORPUS),--corpus $(CORPUS)) $(ARGS)

model-repo: $(VENV)/.runtime
	$(PY) -m toystory_gpt publish model $(MODEL) $(if $(CORPUS),--corpus $(CORPUS)) $(ARGS)
