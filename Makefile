# Two commands do everything on a fresh machine:
#   make train   trains the default config on the real data, then translates a few sentences
#   make test    ruff (format + lint) and the test suite
# `make d2l` is the book's run (about 35 s); `make evaluate`/`make translate WORKDIR=DIR` use a
# trained workdir; `make benchmark` and `make compare-torch` measure
# speed (docs/performance.md). All targets create .venv on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/fra-eng
WORKDIR ?= workdirs/default
CONFIG ?= configs/default.py
ARGS ?=

.PHONY: venv venv-torch train d2l evaluate translate benchmark compare-torch \
  compare-torch-transformer gpu-check gpu-wheels test lint clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

train: venv
	$(PY) train.py --config=$(CONFIG) --workdir=$(WORKDIR) --config.data.manual_dir=$(DATA) $(ARGS)
	$(PY) -m seq2seq_jax.translate --workdir=$(WORKDIR) "Go." "I lost." "He's calm." "I'm home." \
	  "I don't know what to do." "We will be back tomorrow."

d2l: venv
	$(PY) train.py --config=configs/d2l.py --workdir=workdirs/d2l --config.data.manual_dir=$(DATA) $(ARGS)

# A trained workdir on its test split (greedy, then beam 4), and translation of standard input.
evaluate: venv
	$(PY) -m seq2seq_jax.evaluate --workdir=$(WORKDIR) --split=test $(ARGS)
	$(PY) -m seq2seq_jax.evaluate --workdir=$(WORKDIR) --split=test --beam_size=4 $(ARGS)

translate: venv
	@$(PY) -m seq2seq_jax.translate --workdir=$(WORKDIR) $(ARGS)

benchmark: venv
	$(PY) -m seq2seq_jax.benchmark $(ARGS)

# The book's PyTorch code, to measure against (CPU build of torch 2.13.0, in its own venv).
venv-torch: .venv-torch/.installed

.venv-torch/.installed:
	$(PYTHON) -m venv .venv-torch
	.venv-torch/bin/python -m pip install -q --upgrade pip
	.venv-torch/bin/python -m pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
	.venv-torch/bin/python -m pip install -q sacrebleu
	touch $@

compare-torch: venv venv-torch
	$(PY) -m seq2seq_jax.benchmarks.torch_comparison --torch_python=.venv-torch/bin/python \
	  --data=$(DATA)/fra.txt $(ARGS)

# The book's Transformer against its PyTorch version (docs/performance.md).
compare-torch-transformer: venv venv-torch
	$(PY) -m seq2seq_jax.benchmarks.transformer_speed --torch_python=.venv-torch/bin/python \
	  --data=$(DATA)/fra.txt $(ARGS)

# The accelerator check (seq2seq_jax/benchmarks/gpu_check.py, about 10 minutes), run with
# the Python that has JAX for the accelerator (`pip install -e '.[cuda]'`, or a machine's
# own image). `gpu-wheels` (on a machine with the package index) gathers wheels of this
# project's dependencies for Python 3.12 into .gpu_wheels/, for an accelerator machine
# without one: `pip install --no-index --find-links=.gpu_wheels --no-deps .gpu_wheels/*`.
GPU_PYTHON ?= python3

gpu-check:
	$(GPU_PYTHON) -m seq2seq_jax.benchmarks.gpu_check --data=$(DATA) --torch_python=$(GPU_PYTHON) $(ARGS)

gpu-wheels: venv
	$(PY) -m pip wheel -q --no-deps -w .gpu_wheels tensorflow-datasets ml_collections \
	  tensorboardX immutabledict promise simple_parsing tensorflow-metadata etils
	$(PY) -m pip download -q --no-deps -d .gpu_wheels --only-binary=:all: --python-version 3.12 \
	  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 array_record dm-tree

lint: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

# Two workers (one per core here), each test file on one worker (its module fixtures once),
# handed out in tests/conftest.py's order (the longest files first).
test: lint
	$(VENV)/bin/pytest -n auto --dist loadfile --no-loadscope-reorder --durations=15 tests

clean:
	rm -rf $(VENV) .venv-torch workdirs .pytest_cache .ruff_cache
