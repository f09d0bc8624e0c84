# tflc — two commands on a fresh machine: `make compile MODEL=contect` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL ?= contect
OUT ?= build/$(MODEL)
PIPELINE ?=
BENCH_MODEL ?= contect

.PHONY: setup compile test bench clean help

help:
	@echo "make compile MODEL=<fixture> [PIPELINE=...] [OUT=build/<fixture>]   compile a fixture into a build folder"
	@echo "make test                                                         run the test suite"
	@echo "make bench [BENCH_MODEL=contect|contect-small]                    memory/time benchmarks"
	@echo "make setup                                                        create .venv (idempotent)"

# The stamp depends on what decides the install, so a second `make setup` takes seconds.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24,<27"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e . --config-settings editable_mode=compat
	@touch $(STAMP)

setup: $(STAMP)

compile: setup
	$(BIN)/tflc compile fixtures:$(MODEL) $(if $(PIPELINE),--pipeline "$(PIPELINE)") -o $(OUT)

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m bench --model $(BENCH_MODEL)

clean:
	rm -rf build .pytest_cache .hypothesis
