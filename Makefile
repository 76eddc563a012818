# Set-up and checks. `make run` runs the embedded default study, `make test` the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= results/default

.PHONY: install run test test-fast lint bench figures readme-figure

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/memjax run --out $(OUT)
	$(VENV)/bin/memjax estimate $(OUT)
	$(VENV)/bin/memjax report $(OUT)

readme-figure: install
	$(PY) docs/readme_figure.py $(OUT) docs/default-study.png

# tests/suite_timing.py gives the run one fresh persistent compilation cache and prints the
# 30 costliest tests with their compile seconds and the cache's hit rate.
# Two pytest-xdist workers, each test file on one (its module fixtures computed once).
test: install
	$(PY) -m pytest -n 2 --dist loadfile -m "slow or not slow" -q

test-fast: install
	$(PY) -m pytest -n 2 --dist loadfile -q

lint: install
	$(VENV)/bin/ruff check memjax tests experiments paper_figures docs
	$(VENV)/bin/ruff format --check memjax tests experiments paper_figures docs

bench: install
	$(VENV)/bin/memjax bench --replicas 256 --epochs 10

figures: install
	$(PY) -m paper_figures --quick

# --- neural-tangents in its own pinned environment (see legacy/nt/README.md) ---------------
# neural-tangents 0.6.5 needs jax<=0.4.23, so it lives in .venv-nt and never in .venv.
# `make nt-check` rebuilds .venv-nt if needed and fails if neural-tangents' kernels drifted
# from tests/fixtures/nt_mlp_kernels.*; `make nt-kernels` writes CNN kernel matrices for
# memjax.theory (defaults: first 400 train / 200 test MNIST-1D signals, a few minutes).
NT_PYTHON ?= python3.11
NT_VENV ?= .venv-nt
NT_PY := $(NT_VENV)/bin/python
NT_FIXTURE := tests/fixtures/nt_mlp_kernels
NT_DATASET ?= mnist1d
NT_ARCH ?= cnn1d_gap
NT_N_TRAIN ?= 400
NT_N_TEST ?= 200
NT_OUT ?= results/nt
NT_DATA := $(NT_OUT)/$(NT_DATASET)_$(NT_N_TRAIN)_$(NT_N_TEST).npz

.PHONY: nt-env nt-fixture nt-check nt-kernels

$(NT_VENV)/.installed: legacy/nt/requirements.txt
	$(NT_PYTHON) -m venv $(NT_VENV)
	$(NT_PY) -m pip install -q --no-deps -r legacy/nt/requirements.txt
	$(NT_PY) -c "import neural_tangents, jax; assert jax.__version__ == '0.4.23', jax.__version__"
	touch $@

nt-env: $(NT_VENV)/.installed

nt-fixture: nt-env
	$(NT_PY) legacy/nt/reference_kernels.py mlp-fixture --out $(NT_FIXTURE)

nt-check: nt-env
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(NT_PY) legacy/nt/reference_kernels.py mlp-fixture --out "$$tmp/nt_mlp_kernels" && \
	$(NT_PY) legacy/nt/reference_kernels.py compare $(NT_FIXTURE) "$$tmp/nt_mlp_kernels"

nt-kernels: install nt-env
	$(PY) legacy/nt/export_dataset.py $(NT_DATASET) --n-train $(NT_N_TRAIN) \
		--n-test $(NT_N_TEST) --out $(NT_DATA)
	$(NT_PY) legacy/nt/reference_kernels.py dataset --data $(NT_DATA) --arch $(NT_ARCH) \
		--out $(NT_DATA:.npz=_$(NT_ARCH).npz)
