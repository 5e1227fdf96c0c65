# Two commands on a fresh clone:  make demo   and   make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Train DotProductBias on the bundled ml-latest-small, print the epoch table, metrics and predictions.
demo: $(STAMP)
	$(BIN)/collabkit train --data ml-latest-small --out runs/demo

## Install and run the test suite.
test: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m pytest -q

## Benchmarks (write their results to docs/benchmarks.md by hand, with the command).
bench: $(STAMP)
	$(BIN)/python bench/lesson_epoch.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
