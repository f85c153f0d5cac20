# Two commands on a fresh machine (Python 3.11): `make book` and `make test`.
# Both create .venv with the pinned requirements and an editable fa_tutor when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fa_tutor-installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup test book quick-test clean-book student lab vendor browser-test

# Local copies of MathJax and the widget manager, so the built book renders offline.
# Installed from the npm registry at build time (never committed); skipped with a note if npm is missing.
VENDOR := _vendor/static/vendor
NPM_PKGS := mathjax@3.2.2 @jupyter-widgets/html-manager@1.0.15 requirejs@2.3.8

# JupyterLab opens the chapters (MyST .md) as notebooks on double-click: jupytext's viewer
# becomes the default for markdown in this environment's lab settings.
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json
LAB_VIEWERS := {"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": \
  {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}}}

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@mkdir -p $(dir $(LAB_SETTINGS)) && echo '$(LAB_VIEWERS)' > $(LAB_SETTINGS)
	@touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra

quick-test: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not notebook"

book: $(STAMP) vendor
	$(BIN)/jupyter-book build . -W -n --keep-going

vendor: $(VENDOR)/.done
$(VENDOR)/.done:
	@if command -v npm >/dev/null 2>&1; then \
	  rm -rf _vendor/npm $(VENDOR) && mkdir -p _vendor/npm $(VENDOR) && \
	  { npm install --prefix _vendor/npm --no-audit --no-fund --silent $(NPM_PKGS) && \
	    cp -r _vendor/npm/node_modules/mathjax/es5 $(VENDOR)/mathjax && \
	    cp -r _vendor/npm/node_modules/@jupyter-widgets/html-manager/dist $(VENDOR)/html-manager && \
	    cp _vendor/npm/node_modules/requirejs/require.js $(VENDOR)/require.js && touch $@ ; } \
	  || { echo "npm install failed: the book will load MathJax and widgets from their CDNs"; rm -rf $(VENDOR); } ; \
	else echo "npm not found: the book will load MathJax and widgets from their CDNs"; fi

browser-test: $(STAMP)
	$(BIN)/python -m pytest -q -ra tests/test_browser.py

clean-book:
	rm -rf _build

lab: $(STAMP)
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root)
