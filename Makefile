# Every target bootstraps .venv (redone only when pyproject.toml changes).
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# auto = quick on a CUDA machine; on a CPU-only one the study's cpu profile when its real data is in
# DATA_DIR (residual, residual-mnist), else smoke
PROFILE ?= auto
# Real data: unless DATA_DIR is given, bench decides (bench.commands.defaults.default_data_dir, the one rule for make
# and the commands typed by hand): BENCH_DATA_DIR wins; else ../shared/data when it exists; else ./data.
# make does not ask bench itself: on a fresh clone there is no .venv to ask when the Makefile is read.
DATA_DIR ?=
RESULTS_DIR ?= results
ARGS    ?=
BENCH   := $(PY) -m bench --results-dir $(RESULTS_DIR) $(if $(DATA_DIR),--data-dir $(DATA_DIR))
STUDIES  = $(shell $(PY) -m bench list --studies --names-only 2>/dev/null)

.PHONY: install lint test bench perf report clean ablation-all help

help:
	@echo "make install | lint | test | bench | perf | report | clean"
	@echo "  lint: ruff and mypy (settings in pyproject.toml); make test runs ruff, then the tests, mypy among them"
	@echo "make ablation-<study> [PROFILE=auto|full|quick|cpu|smoke] [ARGS='--set key=value ...'] [DATA_DIR=...]"
	@echo "  PROFILE=auto (default): quick on a CUDA GPU; on a CPU the study's cpu profile when its real"
	@echo "  data set is in DATA_DIR (residual, residual-mnist), else smoke"
	@echo "  DATA_DIR: default \$$BENCH_DATA_DIR, else ../shared/data when it exists, else ./data (as bench itself)"
	@echo "make ablation-all [PROFILE=...]"

# uv installs: 53 s here with a cold cache, where pip took 100 s; a warm cache hard-links its files. It compiles
# the bytecode, as pip does: where PYTHONDONTWRITEBYTECODE is set nothing else would, and every process would
# compile its imports again (torch, pandas and torchvision: 12 s instead of 4.5 here). uv reads its own
# settings (uv.toml, UV_* variables), not pip's: the constraint files pip would apply (PIP_CONSTRAINT, else
# its configuration files, as `pip config list` shows them, the environment's first) are passed on. uv is pinned,
# as the lint tools are: the version this was checked with.
PIP_CONSTRAINT_FILES = $(shell $(PYTHON) -m pip config list 2>/dev/null | sed -n "s/^[^.]*\.constraint='\(.*\)'$$/\1/p" | head -1)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv==0.13.9
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -e '.[dev,track]' \
	  $(foreach f,$(PIP_CONSTRAINT_FILES),--constraint $(f))
	touch $(STAMP)

install: $(STAMP)

# mypy keeps its cache in .mypy_cache: a second run reads only what changed
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

# ruff, then the suite, mypy among its tests (tests/test_lint.py: it runs beside the others). One pytest-xdist
# worker per core (tests/conftest.py gives each its share of the cores as threads), handed one test at a time,
# the slow ones first (a fresh clone on 2 cores: 2 workers 5 min 33 s, 3 workers 6 min 5 s). The
# micro-benchmarks run once each, as tests (their timings: make bench).
test: $(STAMP)
	$(PY) -m ruff check .
	$(if $(DATA_DIR),BENCH_DATA_DIR=$(DATA_DIR) )$(PY) -m pytest -q tests -n auto --dist load --maxschedchunk 1 \
	  --benchmark-disable

bench: $(STAMP)
	mkdir -p $(RESULTS_DIR)/benchmarks
	$(PY) -m pytest -q tests/benchmarks --benchmark-only \
	  --benchmark-json=$(RESULTS_DIR)/benchmarks/bench-$$(date +%Y%m%d-%H%M%S).json

perf: $(STAMP)
	$(BENCH) perf $(ARGS)

# the run, then its verdicts, then the report (whose path is the last line printed)
ablation-%: $(STAMP)
	$(BENCH) run $* --profile $(PROFILE) $(ARGS)
	@$(BENCH) claims $*
	$(BENCH) report $*

ablation-all: $(STAMP)
	@for s in $(STUDIES); do $(MAKE) --no-print-directory ablation-$$s PROFILE=$(PROFILE) || exit 1; done

report: $(STAMP)
	$(BENCH) report --all

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks .mypy_cache .ruff_cache *.egg-info
