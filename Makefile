# Two commands on a fresh clone:  make demo   and   make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench lesson clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Train the default preset (Bayesian PMF, saved as a DotProductBias) on the bundled ml-latest-small,
## print the epoch table, metrics and predictions,
## then ask the saved model for recommendations and similar movies.
demo: $(STAMP)
	$(BIN)/collabkit train --data ml-latest-small --out runs/demo
	@echo; echo "== top 5 for user 1 among films with 20+ ratings (collabkit recommend --model runs/demo --user 1 -n 5 --min-ratings 20)"
	@$(BIN)/collabkit recommend --model runs/demo --user 1 -n 5 --min-ratings 20
	@echo; echo "== like Toy Story (collabkit similar --model runs/demo --item 'Toy Story (1995)' -n 5)"
	@$(BIN)/collabkit similar --model runs/demo --item "Toy Story (1995)" -n 5

## Install and run the test suite.
test: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m pytest -q

## Regenerate every number and figure of docs/lesson.md (about half a minute with ml-100k: docs/figures/results.json
## records 33 s; ml-100k if found, else the sample).
lesson: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python examples/lesson.py --out docs/figures

## Benchmarks (write their results to docs/benchmarks.md by hand, with the command).
bench: $(STAMP)
	$(BIN)/python bench/lesson_epoch.py
	$(BIN)/python bench/recommend_all.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
