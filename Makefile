# Set-up, tests and the demo pipeline. `make demo` on a fresh machine: venv, default pair, all stages.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CUDA user sets TORCH to a CUDA build (or installs torch in the venv first).
TORCH ?= torch==2.13.0
SEQUOIA := $(BIN)/sequoia

PAIR ?= qwen2.5-coder
DEVICE ?= cpu
DTYPE ?= bfloat16
# Empty TEMPERATURE: greedy. Otherwise e.g. `make demo TEMPERATURE=0.6 TOP_P=0.9`.
TEMPERATURE ?=
TOP_P ?= 1.0
WIDTH ?= 8
PROMPTS ?= 4
MAX_TOKENS ?= 64
MAX_DEPTH ?= 8
NEW_TOKENS ?= 128
DEMO_PROMPT ?= Write a Python function that checks whether a string is a palindrome, with a docstring and two examples.

ifeq ($(TEMPERATURE),)
SETTING := greedy
SAMPLING := --greedy
else
SETTING := t$(TEMPERATURE)-p$(TOP_P)
SAMPLING := --temperature $(TEMPERATURE) --top-p $(TOP_P)
endif
RUN := runs/$(PAIR)/$(DEVICE)-$(DTYPE)/$(SETTING)
MODELS := --pair $(PAIR) --device $(DEVICE) --dtype $(DTYPE)

.PHONY: setup lint test demo fetch bench bench-quick gpu-check clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test,lint,bench]"
	touch $@

lint: setup
	$(BIN)/ruff check .

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

fetch: setup
	$(SEQUOIA) fetch-models $(PAIR)

$(RUN)/acceptance.json: | fetch
	$(SEQUOIA) measure-acceptance $(MODELS) --data mt-bench --max-prompts $(PROMPTS) $(SAMPLING) --width $(WIDTH) --seed 0 --out $@

runs/$(PAIR)/$(DEVICE)-$(DTYPE)/profile.json: | fetch
	$(SEQUOIA) profile-hw $(MODELS) --max-tokens $(MAX_TOKENS) --out $@

$(RUN)/tree.json: $(RUN)/acceptance.json runs/$(PAIR)/$(DEVICE)-$(DTYPE)/profile.json
	$(SEQUOIA) optimize --acceptance $< --profile runs/$(PAIR)/$(DEVICE)-$(DTYPE)/profile.json --max-depth $(MAX_DEPTH) --out $@

$(RUN)/sequoia.json: $(RUN)/tree.json
	$(SEQUOIA) decode $(MODELS) --tree $< --prompt "$(DEMO_PROMPT)" $(SAMPLING) --seed 0 --max-new-tokens $(NEW_TOKENS) --stats $@

$(RUN)/autoregressive.json: | fetch
	$(SEQUOIA) decode $(MODELS) --method autoregressive --prompt "$(DEMO_PROMPT)" $(SAMPLING) --seed 0 --max-new-tokens $(NEW_TOKENS) --stats $@

demo: $(RUN)/sequoia.json $(RUN)/autoregressive.json
	$(SEQUOIA) compare $(RUN)/sequoia.json $(RUN)/autoregressive.json

# The benchmark (docs/results.md): `make bench` (the full run, hours on a small CPU) and
# `make bench-quick`, under runs/. RESUME=--resume picks an interrupted run up where it stopped.
RESUME ?=
bench: fetch
	$(SEQUOIA) bench $(MODELS) --out-dir runs/bench $(RESUME)

bench-quick: fetch
	$(SEQUOIA) bench --quick $(MODELS) --out-dir runs/bench-quick $(RESUME)

# The GPU check (stages/gpu_check/), report in runs/gpu-check/: `make gpu-check DEVICE=cuda`
# first runs the exactness tests on the device, then the check, and fails if either failed;
# `make gpu-check DEVICE=cpu` (CI) runs the check alone, on shrunk shapes. On a machine without
# the venv (no network), PYTHON_BIN=python3 runs that python from the source tree, installing nothing.
PYTHON_BIN ?= $(BIN)/python
GPU_TESTS := $(wildcard tests/test_decode.py tests/test_verifier.py tests/test_quantize.py tests/test_engine.py)
gpu-check: $(if $(filter $(BIN)/python,$(PYTHON_BIN)),setup)
	rc=0; if [ "$(DEVICE)" != cpu ]; then \
	  SEQUOIA_TEST_DEVICE=$(DEVICE) $(PYTHON_BIN) -m pytest -q -p no:cacheprovider $(GPU_TESTS) || rc=$$?; fi; \
	$(PYTHON_BIN) -c 'from sequoia_cli.cli import main; main()' gpu-check --device $(DEVICE) && exit $$rc

clean:
	rm -rf runs
