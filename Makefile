# The two commands of the README. Each is enough on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PARAMS ?= params/embedded.yaml

.PHONY: book test world clean-book

# torch is installed first and pinned: pip then takes the local CPU build of 2.13.0
# instead of resolving a newer CUDA build from the index.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	touch $(STAMP)

book: $(STAMP)
	$(VENV)/bin/lsda book --params $(PARAMS)

test: $(STAMP)
	$(PY) -m pytest -q

world: $(STAMP)
	$(VENV)/bin/lsda world --params $(PARAMS)

clean-book:
	rm -rf _build
