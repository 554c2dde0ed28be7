"""Regenerate ``lambdatrain/roles/pins.py``: the Lambda's packages, every transitive one, with hashes.

    .venv/bin/python functions/requirements/lock.py            # needs PyPI; writes the module

For each architecture it runs, for every pin of ``PYPI`` below (the closure of torch's CPU build,
torchvision, numpy and xxhash; the versions are requirements-dev.txt's and the development
environment's, i.e. the tested ones),

    pip download --isolated --index-url https://pypi.org/simple --no-deps --only-binary=:all:
        --platform manylinux2014_<machine> --platform manylinux_2_28_<machine> --platform linux_<machine>
        --python-version 3.12 --implementation cp --dest DIR NAME==VERSION

and hashes the one wheel it gets with SHA-256. torch and torchvision come from the PyTorch CPU
index (``TORCH_CPU``), which this machine cannot reach: they are written pinned, without hashes,
and marked unverified. ``--isolated`` keeps pip's local configuration (find-links, extra indexes,
constraints) out, so every hash is of the file the public registry serves.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "lambdatrain" / "roles" / "pins.py"
PYPI_INDEX = "https://pypi.org/simple"
MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}  # Lambda's architecture -> wheel tag machine
# torch 2.14.1's CPU build requires filelock, typing-extensions>=4.10.0, setuptools>=77.0.3,
# sympy>=1.13.3 (-> mpmath), networkx>=2.5.1, jinja2 (-> MarkupSafe) and fsspec>=0.8.5 (its
# METADATA without the CUDA lines); torchvision 0.29.1 requires numpy, torch and pillow.
PYPI = ("numpy==2.4.6", "xxhash==4.1.0", "pillow==12.3.0", "filelock==4.3.1", "typing-extensions==4.16.0",
        "setuptools==84.2.1", "sympy==1.14.0", "mpmath==1.3.0", "networkx==3.6.1", "jinja2==3.1.6",
        "markupsafe==3.0.4", "fsspec==2026.9.0")
TORCH_CPU = ("torch==2.14.1+cpu", "torchvision==0.29.1+cpu")


def download_command(pin: str, machine: str, dest: Path) -> list[str]:
    platforms = [f"manylinux2014_{machine}", f"manylinux_2_28_{machine}", f"linux_{machine}"]
    return [sys.executable, "-m", "pip", "download", "--isolated", "--quiet", "--index-url", PYPI_INDEX,
            "--no-deps", "--only-binary=:all:", *[a for p in platforms for a in ("--platform", p)],
            "--python-version", "3.12", "--implementation", "cp", "--dest", str(dest), pin]


def hashed(pin: str, machine: str) -> str:
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(download_command(pin, machine, Path(folder)), check=True)
        (wheel,) = Path(folder).iterdir()
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return f"{pin} --hash=sha256:{digest}  # {wheel.name}"


def main() -> None:
    lines = {arch: [hashed(pin, machine) for pin in PYPI] for arch, machine in MACHINES.items()}
    # A pure-Python wheel is the same file on both machines: written once, as _ANY.
    common = [line for line in lines["x86_64"] if all(line in pins for pins in lines.values())]
    platform = {arch: [line for line in pins if line not in common] for arch, pins in lines.items()}
    body = "".join(f"    {arch!r}: (\n" + "".join(f"        {line!r},\n" for line in pins) + "    ),\n"
                   for arch, pins in platform.items())
    template = OUT.read_text().split("# --- generated below", 1)[0]
    OUT.write_text(template + "# --- generated below by functions/requirements/lock.py; do not edit ---\n"
                   f"_PLATFORM: dict[str, tuple[str, ...]] = {{\n{body}}}\n"
                   "_ANY: tuple[str, ...] = (\n" + "".join(f"    {line!r},\n" for line in common) + ")\n"
                   "PYPI_PINS = {arch: pins + _ANY for arch, pins in _PLATFORM.items()}\n"
                   "# Unverified: no hash. The PyTorch CPU index was not reachable where this was generated.\n"
                   f"TORCH_CPU_PINS: tuple[str, ...] = {TORCH_CPU!r}\n")


if __name__ == "__main__":
    main()
