# medslm — the two commands: `make run` and `make test`. (`make cells` regenerates the notebooks' parameters cells.)
PYTHON     ?= python3
VENV       ?= .venv
PROFILE    ?= params/smoke.yaml
# A plain `torch` from PyPI is a multi-GB CUDA build; on CPU machines pin the local CPU wheel.
# Override on GPU machines, e.g. `make run TORCH_SPEC='torch>=2.4'`. An importable torch is kept.
TORCH_SPEC ?= torch==2.13.0
ARGS       ?=
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.medslm-installed

.PHONY: run test lint pytest lab bench clean env cells

env: $(STAMP)

$(STAMP): pyproject.toml
	@if [ ! -x $(PY) ]; then \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then \
	    echo "torch found in $(PYTHON): creating $(VENV) with system site packages"; \
	    $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else $(PYTHON) -m venv $(VENV); fi; \
	fi
	$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/medslm run $(PROFILE) $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check lib tests notebooks bench

pytest: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

test: lint pytest

cells: $(STAMP)  ## regenerate the notebooks' parameters cells from lib/medslm/params.py
	$(VENV)/bin/medslm cells

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

bench: $(STAMP)
	@for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf outputs/*/ .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
