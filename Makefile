# The two commands of the README. Each is enough on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PARAMS ?= params/embedded.yaml
# the build folder: `make book` writes the executed chapters to $(OUT)/src and the site to $(OUT)/html
OUT ?= _build/book

.PHONY: book test world publish clean-book

# torch is installed first and pinned: pip then takes the local CPU build of 2.13.0
# instead of resolving a newer CUDA build from the index.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	touch $(STAMP)

book: $(STAMP)
	$(VENV)/bin/lsda book --params $(PARAMS) --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest -q

world: $(STAMP)
	$(VENV)/bin/lsda world --params $(PARAMS)

# Publish the built site ($(OUT)/html, from `make book`) to the gh-pages branch of the `origin`
# remote with ghp-import: -n adds .nojekyll (Sphinx's _static/ must be served), -p pushes,
# -f forces the branch to hold this build only. GitHub Pages then serves it from that branch.
publish: $(STAMP)
	@test -f $(OUT)/html/index.html || { echo "$(OUT)/html/index.html: no built book; run make book first" >&2; exit 2; }
	$(VENV)/bin/ghp-import -n -p -f $(OUT)/html

clean-book:
	rm -rf _build
