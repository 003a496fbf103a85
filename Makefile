# The two commands that do everything on a fresh machine:
#   make demo   run the main job on the built-in default workload
#   make test   run the test suite
#   make docs   build the documentation site into site/ (strict: any warning fails)
# Each creates (or reuses) the virtual environment in .venv.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench docs clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/batchlaw demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests src/batchlaw --doctest-modules

docs: $(STAMP)
	$(PY) -m mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(PY) bench/monitor_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache site
