"""Helpers the benchmarks share: progress on stderr, the JSON last line, machine info, memory."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def emit(result: dict[str, Any]) -> None:
    """The benchmark's result: one JSON object, the last line of stdout."""
    print(json.dumps(result, sort_keys=True, default=str), flush=True)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def peak_rss_bytes() -> int:
    """This process's high-water resident set (VmHWM): what Lambda's "Max Memory Used" reports."""
    return _status_kb("VmHWM") * 1024


def rss_bytes() -> int:
    return _status_kb("VmRSS") * 1024


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def machine() -> dict[str, Any]:
    import numpy
    import torch

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_bytes": mem, "python": platform.python_version(),
            "numpy": numpy.__version__, "torch": torch.__version__, "platform": platform.platform()}


def drop_page_cache() -> bool:
    """Empty the kernel's page cache so reads come from the disk (needs root; False if refused)."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg-train.tar.gz"


def add_data_args(parser: argparse.ArgumentParser, *, workers: int | list[int], samples: int) -> None:
    """The options every training benchmark shares: workers (one N, or a list), samples, data."""
    parser.add_argument("--workers", type=int_list if isinstance(workers, list) else int, default=workers)
    parser.add_argument("--samples", type=int, default=samples, help="training samples (first K)")
    add_dataset_args(parser)


def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    """--data and --cache-dir, as every benchmark that prepares a dataset offers them."""
    from lambdatrain.protocol.config import DATASET_CACHE, DATASET_CACHE_HELP, DATASET_HELP

    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=DATASET_HELP)
    parser.add_argument("--cache-dir", type=Path, default=DATASET_CACHE, help=DATASET_CACHE_HELP)


def prepared_dataset(args: argparse.Namespace) -> Path:
    """The prepared form of ``--data`` (prepared on first use); a dataset that cannot be found or
    read ends the benchmark with one line that says which and what to pass, not a traceback."""
    from lambdatrain.protocol.errors import DataError
    from lambdatrain.training.data import resolve_dataset

    try:
        return resolve_dataset(args.data, args.cache_dir)
    except DataError as e:
        raise SystemExit(f"{Path(sys.argv[0]).name}: {e}") from None


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _die_with_parent(parent: int) -> None:
    """Pool initializer: the child is sent SIGTERM when the benchmark dies, rather than training on
    for minutes as an orphan after a ``kill`` (Linux's PR_SET_PDEATHSIG; its local stack's
    sandboxes then exit at the end of their stdin)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: no such call, and a kill leaves the child running
        return
    # A parent that died before the call above sends no signal (prctl(2)): the child was
    # re-parented already, so it ends itself.
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def in_child(fn, *args, env: dict[str, str] | None = None):
    """``fn(*args)`` in a fresh 'spawn' process: a clean moto backend (moto keeps its state in
    process memory, so two local stacks in one process collide) and thread settings of its own."""
    import multiprocessing as mp

    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        with mp.get_context("spawn").Pool(1, initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
            return pool.apply(fn, args)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def inline_moto():
    """A started moto server that this process's boto3 clients (the in-process handlers of
    tests/harness.py) talk to, with dummy credentials; the caller stops it."""
    from lambdatrain.local.moto_server import MotoServer

    for key, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(key, value)
    server = MotoServer()
    server.start()
    os.environ["AWS_ENDPOINT_URL"] = server.url
    return server
