# Set-up and checks. `make run` runs the embedded default study, `make test` the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= results/default

.PHONY: install run test test-fast lint bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/memjax run --out $(OUT)
	$(VENV)/bin/memjax estimate $(OUT)

test: install
	$(PY) -m pytest -m "slow or not slow" -q

test-fast: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check memjax tests experiments paper_figures
	$(VENV)/bin/ruff format --check memjax tests experiments paper_figures

bench: install
	$(VENV)/bin/memjax bench --replicas 256 --epochs 10
