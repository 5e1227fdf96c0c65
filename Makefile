# Two commands on a fresh clone:  make demo   and   make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench lesson clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,distributed]'
	$(BIN)/python -m pip install --quiet -c constraints.txt --no-deps torchrec
	@# exactly one fbgemm build: torchrec's metadata names fbgemm-gpu, which would shadow fbgemm-gpu-cpu
	@test "$$($(BIN)/python -m pip list 2>/dev/null | grep -ci '^fbgemm')" = 1 || { echo "more than one fbgemm package in $(VENV)"; exit 1; }
	$(BIN)/python -c "import torchrec"
	touch $(STAMP)

install: $(STAMP)

## Train the default preset (Bayesian PMF for ratings, saved as a DotProductBias, and EASE for top-N lists)
## on the bundled ml-latest-small,
## print the epoch table, metrics and predictions,
## then ask the saved model for recommendations and similar movies.
demo: $(STAMP)
	$(BIN)/collabkit train --data ml-latest-small --out runs/demo
	@echo; echo "== top 5 for user 1 (collabkit recommend --model runs/demo --user 1 -n 5)"
	@$(BIN)/collabkit recommend --model runs/demo --user 1 -n 5
	@echo; echo "== the same, ranked by predicted rating as in the lesson (--rank-by rating): rarely rated films rise"
	@$(BIN)/collabkit recommend --model runs/demo --user 1 -n 5 --rank-by rating
	@echo; echo "== like Toy Story (collabkit similar --model runs/demo --item 'Toy Story (1995)' -n 5)"
	@$(BIN)/collabkit similar --model runs/demo --item "Toy Story (1995)" -n 5

## Install, lint (ruff), type-check (mypy) and run the test suite (pytest -m "not slow" for a quick pass).
test: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy
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
