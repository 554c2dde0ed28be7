# Two commands a user needs (README Quickstart): `make train` and `make test`; `make test-fast` while editing.
# Every install step lives here and in requirements-dev.txt (every version pinned), so a fresh
# clone needs nothing else.

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
# Extra pytest arguments for test and test-fast, e.g. ARGS="-k combine -x".
ARGS ?=
# Tests in parallel (pytest-xdist), JOBS workers: one per core and one more (below). Session
# fixtures are per worker, so tests/cli's session `local train` may start on each (xdist's --dist
# loadgroup would keep them on one, but xdist 3.8 renames a test through Item._nodeid, which
# pytest 9 no longer reads).
# --dist worksteal: an idle worker takes tests queued for the other. With the default (load) the
# local stack's long tests piled up on one worker and the other idled for about a minute at the
# end (make test 5 min 12 s; the same tests with worksteal 4 min 3 s, each worker busy 210-220 s).
# One worker more than the cores: the local stack's end-to-end runs spend much of their time
# waiting (deadlines, retries, processes starting), which left a core idle (make test used 1.4 of
# 2 cores: 4 min 51 s with 2 workers, 4 min 27 s with 3). Starting them first, a share per
# worker, was slower (4 min 48 s): side by side they fight for the cores.
# pytest's exit status is make's: 5 (no test collected) fails like a failed test, so a selection
# that matches nothing never passes.
JOBS ?= $(shell echo $$(( $$(nproc) + 1 )))
PYTEST := $(PY) -m pytest -q -n $(JOBS) --dist worksteal

.PHONY: venv strace train test test-fast test-matrix graph bench clean

venv: $(STAMP)

$(STAMP): requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The main job on the local stack. DATA=PATH: cifar-10-python.tar.gz, an image folder (or a
# .tar/.tar.gz of one) or a prepared directory; without it the cache or the official download.
# Interrupted (Ctrl-C, a reboot), it is never started over: `make train` then stops and names the
# command that continues the run from its last committed round, `lambdatrain local train --resume
# --out $(OUT)` (`make train TRAIN_ARGS=--resume` is the same when WORKERS and EPOCHS are as before).
train: venv
	$(VENV)/bin/lambdatrain local train $(if $(DATA),--data $(DATA)) --workers $(WORKERS) \
		--epochs $(EPOCHS) --out $(OUT) $(TRAIN_ARGS)

# Debian's strace, for the test that checks the storage layer's byte counts against it (CI runs as
# root; elsewhere, without root, the install fails, a line says so and that one test is skipped).
strace:
	@command -v strace >/dev/null || (apt-get update -qq && apt-get install -y -qq strace) \
		|| echo "strace not installed: tests/functional/test_traffic_strace.py will be skipped"

# Every test, the local stack's end-to-end runs included (what CI runs first); budget 5 minutes on
# 2 cores. Stop 29 had it at 5 min 10-51 s (1,071 tests, CPU 524-587 s): over. Stop 30's fix to
# moto's cancelled transactions (lambdatrain/local/moto_transactions.py: the stream had gone silent
# after each duplicate detected, and rounds waited for the watchdog's deadline) brought it to
# 4 min 28 s (1,080 tests, CPU 451 s) in the working copy; in a clean clone (1,085 tests) 5 min
# 46 s in its CI run, the first there, and 4 min 45 s (CPU 508 s) right after. Stop 31, a clean
# clone: pytest's 4 min 58 s first (make's whole command 5 min 1 s), 4 min 37 s second (CPU
# 497-502 s), 4 min 51 s in another clone's CI run; the working copy 4 min 40 s. At the budget,
# not under it with margin. Stop 32, on a faster host (compute 20 % quicker): 3 min 37 s in the
# working copy (CPU 371 s), 4 min 14 s in a clean clone's CI run. It is CPU-bound (1.6-1.7 of
# the 2 cores busy). Per test (the rusage of its process and children, stop 29), the in-process
# fault suite (tests/faults/test_faults.py) takes a fifth of it and the local stack's end-to-end
# runs over a third; the worker sandboxes' cold starts (torch's import, 1.7 s each, about 100 of
# them) are a seventh.
test: venv strace
	$(PYTEST) $(ARGS)

# Unit and functional tests, without the local stack's end-to-end runs (marker `slow`): 42 s (budget 60 s).
test-fast: venv
	$(PYTEST) -m "not slow" tests/unit tests/functional $(ARGS)

# The fault suite (tests/faults) with every round recipe: float32, both compressed transports, average
# mode with float32 and with ternary_ef (tests/faults/conftest.py VARIANTS); `make test` runs two of them.
# 5 min 43 s to 6 min 45 s on 2 cores (243 tests, 3 workers, three clean clones; 7 min 44 s on a slower
# day; 4 min 34 s on stop 32's faster host); CI runs it after `make test`.
test-matrix: venv
	LAMBDATRAIN_TEST_MATRIX=1 $(PYTEST) tests/faults $(ARGS)

# What `pulumi up` would create, offline (no credentials, no Pulumi CLI needed).
graph: venv
	$(PY) -m components.plan $(STACK)

# The benchmarks print one JSON object each as their last line (docs/benchmarks.md); ~40 min on 2 cores
# (the sum of each one's measured time there, bench.planner's 17-18 min with its four recipes and 5
# repeats included, with follow's 75 s and listing's 129 s; the whole target not timed since traffic
# and protocol joined).
bench: venv
	$(PY) -m bench.combine
	$(PY) -m bench.overhead
	$(PY) -m bench.convergence
	$(PY) -m bench.planner
	$(PY) -m bench.traffic --workers 4 --transports float32,float16,bfloat16,ternary_ef,sign_ef
	$(PY) -m bench.protocol --workers 8,64,256 --invoke-latency 0.02
	$(PY) -m bench.follow
	$(PY) -m bench.listing

clean:
	rm -rf $(VENV) out .pytest_cache
