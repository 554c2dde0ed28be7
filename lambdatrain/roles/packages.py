"""Third-party packages on the EFS mount: where the handlers find them and how setup installs them.

torch, torchvision and numpy unpack to far more than Lambda's 250 MB deployment-package limit, so,
as in the paper (section 5.D), they live on the EFS file system that every function mounts. The
starter's ``{"setup": true}`` event calls :func:`install_packages` once per deployment; every
handler calls :func:`add_packages_to_path` before it imports torch.

The pins below are the Lambda's own, separate from the development environment's torch in
``requirements-dev.txt``: the Lambda runtime is CPython 3.12 on Amazon Linux 2023 and needs
CPU-only wheels built for it (the CUDA builds alone would not fit anywhere near a Lambda).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Callable, Mapping, Sequence

from lambdatrain.protocol.errors import ConfigError
from lambdatrain.roles.settings import DEFAULT_MOUNT, DEFAULT_PACKAGES, ENV_MOUNT, ENV_PACKAGES, RuntimeSettings

# The CPU builds the functions import. x86_64 CPU wheels carry the "+cpu" local version and are
# served only by the PyTorch CPU index; PyPI's aarch64 wheels of the same release are CPU-only.
LAMBDA_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "x86_64": ("torch==2.5.1+cpu", "torchvision==0.20.1+cpu", "numpy==2.1.3", "xxhash==4.1.0"),
    "arm64": ("torch==2.5.1", "torchvision==0.20.1", "numpy==2.1.3", "xxhash==4.1.0"),
}
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
LAMBDA_PYTHON = "3.12"  # must match the runtime in components/functions.py
# Lambda's architecture name -> the machine name in wheel platform tags.
_MACHINE = {"x86_64": "x86_64", "arm64": "aarch64"}
# Written last into an installed folder: what it holds, so a repeated setup can be a no-op.
MARKER = "lambdatrain-requirements.txt"

Runner = Callable[..., subprocess.CompletedProcess]


def packages_dir(source: Mapping[str, str] | RuntimeSettings) -> Path:
    """The folder on the mount that holds the packages.

    ``source`` is either an environment mapping (``ENV_MOUNT`` / ``ENV_PACKAGES``; the handlers
    call this before anything else is importable) or a ``RuntimeSettings``, whose ``packages`` is
    already resolved below the mount by ``lambdatrain.roles.settings.load``.
    """
    if isinstance(source, RuntimeSettings):
        return source.packages
    mount = Path(source.get(ENV_MOUNT) or DEFAULT_MOUNT)
    packages = Path(source.get(ENV_PACKAGES) or DEFAULT_PACKAGES)
    return packages if packages.is_absolute() else mount / packages


def add_packages_to_path(source: Mapping[str, str] | RuntimeSettings) -> Path | None:
    """Make the mount's packages importable; returns the folder, or None where it does not exist.

    The folder is appended, not prepended: the function's own code and the runtime's boto3 win,
    the mount only adds what they lack. Calling it twice adds the folder once.
    """
    folder = packages_dir(source)
    if not folder.is_dir():
        return None
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    return folder


def pip_command(
    staging: Path, requirements_file: Path, *, arch: str, python_version: str = LAMBDA_PYTHON
) -> list[str]:
    """The pip command line that installs binary wheels for the Lambda platform into ``staging``."""
    if arch not in _MACHINE:
        raise ConfigError(f"unknown architecture {arch!r}; expected one of {sorted(_MACHINE)}")
    machine = _MACHINE[arch]
    # torch's x86_64 CPU wheels are tagged plain linux_x86_64, so that tag is accepted too.
    platforms = [f"manylinux2014_{machine}", f"manylinux_2_28_{machine}", f"linux_{machine}"]
    command = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check"]
    command += ["--target", str(staging), "--only-binary=:all:"]
    for platform in platforms:
        command += ["--platform", platform]
    command += ["--python-version", python_version, "--implementation", "cp"]
    command += ["--extra-index-url", TORCH_CPU_INDEX, "-r", str(requirements_file)]
    return command


def install_packages(
    target: Path,
    requirements: Sequence[str],
    *,
    arch: str = "x86_64",
    runner: Runner = subprocess.run,
) -> bool:
    """Install ``requirements`` into ``target``, replacing what is there; False if already current.

    pip installs into a staging folder beside ``target`` (same file system, so the renames are
    atomic) and only a complete install is renamed into place: a crash or timeout mid-install
    leaves the old packages untouched. A folder whose marker lists the same requirements is kept,
    so a redelivered setup event does no work.
    """
    target = Path(target)
    wanted = "\n".join(requirements) + "\n"
    marker = target / MARKER
    if marker.is_file() and marker.read_text() == wanted:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    staging = target.with_name(f".{target.name}.staging-{token}")
    staging.mkdir()
    try:
        requirements_file = staging / MARKER
        requirements_file.write_text(wanted)
        runner(pip_command(staging, requirements_file, arch=arch), check=True)
        _swap_into_place(staging, target, token)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return True


def _swap_into_place(staging: Path, target: Path, token: str) -> None:
    # Two renames: between them the folder is briefly absent, which is harmless because setup
    # runs before any training run; the old folder is deleted only after the new one is live.
    old = target.with_name(f".{target.name}.old-{token}")
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
