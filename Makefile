# Two commands a user needs (README Quickstart): `make train` and `make test`.
# Every install step lives here and in requirements-dev.txt, so a fresh clone needs nothing else.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The shared CIFAR-10 training split when it is there; otherwise the cache or the official download.
DATA ?= $(wildcard ../shared/data/cifar10-jpeg-train.tar.gz)
WORKERS ?= 4
EPOCHS ?= 1
OUT ?= out/train
STACK ?= dev
TRAIN_ARGS ?= --model vgg19_cifar --width 0.125 --max-train-samples 4000

.PHONY: venv train test graph bench clean

venv: $(STAMP)

$(STAMP): requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The main job on the local stack. DATA=PATH: cifar-10-python.tar.gz, an image folder (or a
# .tar/.tar.gz of one) or a prepared directory; without it the cache or the official download.
train: venv
	$(VENV)/bin/lambdatrain local train $(if $(DATA),--data $(DATA)) --workers $(WORKERS) \
		--epochs $(EPOCHS) --out $(OUT) $(TRAIN_ARGS)

test: venv
	$(PY) -m pytest -q

# What `pulumi up` would create, offline (no credentials, no Pulumi CLI needed).
graph: venv
	$(PY) -m components.plan $(STACK)

# The benchmarks print one JSON object each as their last line (docs/benchmarks.md); ~13 min on 2 cores.
bench: venv
	$(PY) -m bench.combine
	$(PY) -m bench.overhead
	$(PY) -m bench.convergence
	$(PY) -m bench.planner

clean:
	rm -rf $(VENV) out .pytest_cache
