# The two commands a newcomer needs: `make demo` and `make test`. Both start from nothing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint typecheck check bench clean ui-assets

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

# The demo's triage graph embeds text (sentence-transformers, with torch pinned to its CPU build).
$(VENV)/.demo: $(VENV)/.base
	$(PY) -m pip install --quiet -e '.[torch,text]'
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PY) -m pip install --quiet -e '.[dev,torch,text,grpc,mlflow,ray,s3]'
	touch $@

demo: $(VENV)/.demo
	$(VENV)/bin/modelyard demo

test: $(VENV)/.dev
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests bench

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

check: lint typecheck test

bench: $(VENV)/.base
	bash bench/run.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The dashboard's vendored front-end files (src/modelyard/ui/static/vendor/), reproduced from
# the committed package-lock.json; the server never needs Node.
ui-assets:
	cd src/modelyard/ui && npm ci --ignore-scripts --no-audit --no-fund && \
	cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css \
	   node_modules/uplot/LICENSE static/vendor/ && rm -rf node_modules
