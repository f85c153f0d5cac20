# Two commands on a fresh machine (Python 3.11): `make book` and `make test`.
# Both create .venv with the pinned requirements and an editable fa_tutor when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fa_tutor-installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup test book quick-test clean-book student lab

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra

quick-test: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not notebook"

book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going

clean-book:
	rm -rf _build

lab: $(STAMP)
	$(BIN)/jupyter lab
