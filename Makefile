# The two commands of the README, each doing its own set-up on a fresh machine:
#   make run    the main job on the embedded default
#   make test   lint and the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
LINKED := $(VENV)/.linked
# Folders whose files the strict editable tree links: packages, and the shipped weights.
PACKAGES := footprints geo geo/synth models models/weights tasks flows

.PHONY: run test lint format clean

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: on CPU machines this takes the local CPU wheel rather than the
	# registry's CUDA build with its gigabytes of dependencies.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]" --config-settings editable_mode=strict
	# panopticapi's own PQ code, without its requirements: they pin numpy < 2 and pull
	# pycocotools, scikit-image and matplotlib, while its evaluation needs numpy and Pillow alone.
	$(BIN)/pip install --quiet --no-deps panopticapi-lite==0.2.0
	touch $(INSTALLED)

# Strict editable mode installs a tree of links to the sources (build/__editable__.*), which the
# type checker and editors resolve like any installed package. A module added or removed changes
# its folder, and the tree is laid again (in seconds, without dependencies).
$(LINKED): $(INSTALLED) $(wildcard $(PACKAGES))
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . --config-settings editable_mode=strict
	touch $(LINKED)

run: $(LINKED)
	$(BIN)/footprints demo --out runs/demo

test: lint
	$(BIN)/pytest

# import-linter runs from outside the checkout, where `footprints` is the installed package
# (in the checkout's root it would find footprints/ alone, without geo/, models/, ...).
lint: $(LINKED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/basedpyright
	cd $(VENV) && bin/lint-imports --no-cache ../pyproject.toml

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build runs .pytest_cache .ruff_cache
