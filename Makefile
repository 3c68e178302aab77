# PeerGrid developer verbs. `make test` works on a fresh machine: it creates
# .venv with Python 3.13, installs the locked toolchain and runs every gate.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON313 ?= $(shell command -v python3.13 2>/dev/null || ls -d $$HOME/.pyenv/versions/3.13*/bin/python3.13 2>/dev/null | tail -n 1)
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := $(shell sed -n 's/^uv==//p' requirements/dev.lock)
STAMP := $(VENV)/.peergrid-installed

.PHONY: help venv test lint typecheck pytest demo bench lock clean

help: ## list the verbs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): requirements/dev.lock
	@test -n "$(PYTHON313)" || { echo "Python 3.13 not found (install it, e.g. pyenv install 3.13)"; exit 1; }
	@test -x $(PY) || $(PYTHON313) -m venv $(VENV)
	$(PY) -m pip install --quiet "uv==$(UV_VERSION)"
	$(VENV)/bin/uv pip sync --quiet --python $(PY) requirements/dev.lock
	@# Development install of the repository's import roots (what an editable
	@# install would do, but visible to mypy as well); peergrid_core is reached
	@# through the repository root's link to the integration's core folder.
	$(PY) -c 'import pathlib, sysconfig; root = pathlib.Path.cwd(); pathlib.Path(sysconfig.get_paths()["purelib"], "peergrid-dev.pth").write_text("".join(f"{p}\n" for p in (root, root / "firmware")))'
	@touch $@

venv: $(STAMP) ## create or refresh the virtual environment

lint: $(STAMP) ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP) ## mypy strict on the core, the integration and the edge gateway
	$(VENV)/bin/mypy -p peergrid_core
	$(VENV)/bin/mypy -p custom_components.peergrid
	$(VENV)/bin/mypy -p edge
	$(VENV)/bin/mypy -p demo

pytest: $(STAMP) ## the test suite with coverage gates
	@rm -f .coverage .coverage.*
	$(PY) -m pytest -q --cov --cov-branch --cov-report=term --cov-fail-under=95 $(PYTEST_ARGS)
	$(VENV)/bin/coverage report --fail-under=100 --include='custom_components/peergrid/config_flow.py' 2>/dev/null || test ! -f custom_components/peergrid/config_flow.py

test: lint typecheck pytest ## every gate: lint, types, tests (what CI runs)

demo: $(STAMP) ## the main job: a live grid in Home Assistant (ARGS="--port 8124" etc.)
	$(PY) -m demo $(ARGS)

bench: $(STAMP) ## quick benchmarks (add ARGS=--full for the long run)
	$(PY) -m bench $(ARGS)

lock: ## re-resolve requirements/dev.in into requirements/dev.lock
	$(VENV)/bin/uv pip compile --quiet --python $(PY) requirements/dev.in -o requirements/dev.lock

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .coverage
