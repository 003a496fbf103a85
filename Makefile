# The two commands that do everything on a fresh machine:
#   make demo   run the main job on the built-in default workload
#   make test   run the test suite (all of it: about 5 minutes on 2 cores)
# and, for working on one part:
#   make test-fast     a subset that touches every module, in about a minute (tests marked `fast`)
#   make docs          build the documentation site into site/ (strict: any warning fails)
#   make docs-check    build it and look at it in headless Chromium (screenshots in build/docs-screenshots)
#   make docs-outputs  rewrite the output blocks of README.md and docs/ from what their blocks print
# Each creates (or reuses) the virtual environment in .venv.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench docs docs-check docs-outputs clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/batchlaw demo

# Two passes: everything on 2 workers, then the tests marked `serial` alone (they time a real server, whose
# capacity halves when the other worker trains beside it).
test: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not serial" tests src/batchlaw --doctest-modules
	$(PY) -m pytest -q -m serial tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 -m fast tests src/batchlaw --doctest-modules

docs: $(STAMP)
	$(PY) -m mkdocs build --strict --site-dir site

docs-check: docs
	$(PY) tests/docs_check.py site --screenshots build/docs-screenshots

docs-outputs: $(STAMP)
	$(PY) tests/docs_runner.py

bench: $(STAMP)
	$(PY) bench/monitor_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache site
