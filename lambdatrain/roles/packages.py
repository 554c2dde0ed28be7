"""Third-party packages on the EFS mount: where the handlers find them and how setup installs them.

torch, torchvision and numpy unpack to far more than Lambda's 250 MB deployment-package limit, so,
as in the paper (section 5.D), they live on the EFS file system that every function mounts. The
setup step ``packages`` (``lambdatrain.roles.setup``) calls :func:`install_packages`; every
handler calls :func:`add_packages_to_path` before it imports torch.

What is installed is ``lambdatrain.roles.pins``: every transitive package pinned, hashed where the
hash is known. Each lock is installed by its own pip run with ``--index-url`` (one index per run:
``--extra-index-url`` would merge two indexes and let either serve any name) and ``--no-deps``
(the lock is the whole closure), with ``--require-hashes`` where every line has a hash. A stack
may point setup at a mirror and a lock of its own (``LAMBDATRAIN_PACKAGES_INDEX`` and
``LAMBDATRAIN_PACKAGES_LOCK``, a hashed requirements file), as the local stack's tests do.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from lambdatrain.protocol.errors import ConfigError, LambdaTrainError
from lambdatrain.roles.pins import PYPI_INDEX, PYPI_PINS, TORCH_CPU_INDEX, TORCH_CPU_PINS
from lambdatrain.roles.settings import DEFAULT_MOUNT, DEFAULT_PACKAGES, ENV_MOUNT, ENV_PACKAGES, RuntimeSettings

LAMBDA_PYTHON = "3.12"  # must match the runtime in components/functions.py
# Lambda's architecture name -> the machine name in wheel platform tags.
_MACHINE = {"x86_64": "x86_64", "arm64": "aarch64"}
# Written last into an installed folder: the locks it was installed from, so a repeated setup can be a no-op.
MARKER = "lambdatrain-requirements.txt"

Runner = Callable[..., subprocess.CompletedProcess]


class PackageError(LambdaTrainError):
    """pip could not run, or could not install the lock."""


@dataclass(frozen=True)
class Lock:
    """One pip run: requirement lines, all served by ``index``."""

    index: str
    lines: tuple[str, ...]

    @property
    def hashed(self) -> bool:
        """Every line carries a hash, so pip runs with --require-hashes."""
        return all("--hash=" in line for line in self.lines)

    @property
    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


def lambda_locks(arch: str) -> tuple[Lock, ...]:
    """The shipped locks for ``arch``: PyPI's hashed wheels, then torch's CPU builds (unverified)."""
    if arch not in _MACHINE:
        raise ConfigError(f"unknown architecture {arch!r}; expected one of {sorted(_MACHINE)}")
    return Lock(PYPI_INDEX, PYPI_PINS[arch]), Lock(TORCH_CPU_INDEX, TORCH_CPU_PINS)


def custom_lock(index: str, lock_file: Path) -> tuple[Lock, ...]:
    """A stack's own lock (``LAMBDATRAIN_PACKAGES_LOCK``) served by its own index."""
    try:
        lines = tuple(line.strip() for line in Path(lock_file).read_text().splitlines()
                      if line.strip() and not line.lstrip().startswith("#"))
    except OSError as exc:
        raise ConfigError(f"cannot read the packages lock {lock_file}: {exc.strerror}") from exc
    lock = Lock(index, lines)
    if not lines or not lock.hashed:
        raise ConfigError(f"the packages lock {lock_file} must pin every package with --hash=sha256:...")
    return (lock,)


def marker_text(locks: Sequence[Lock]) -> str:
    return "".join(f"# --index-url {lock.index}\n{lock.text}" for lock in locks)


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


def check_pip(runner: Runner = subprocess.run) -> str:
    """pip's version line; PackageError in one line where pip cannot run in this runtime."""
    try:
        done = runner([sys.executable, "-m", "pip", "--version"], check=False, capture_output=True, text=True)
    except OSError as exc:
        raise PackageError(f"pip cannot run in this runtime ({sys.executable}: {exc.strerror})") from exc
    if done.returncode != 0:
        last = (done.stderr or done.stdout or "").strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise PackageError(f"pip cannot run in this runtime ({sys.executable} -m pip: {last[0]}); "
                           "setup installs the packages with pip")
    return done.stdout.strip()


def pip_command(staging: Path, requirements_file: Path, lock: Lock, *, arch: str,
                python_version: str = LAMBDA_PYTHON) -> list[str]:
    """The pip command line that installs one lock's binary wheels for the Lambda platform into ``staging``."""
    if arch not in _MACHINE:
        raise ConfigError(f"unknown architecture {arch!r}; expected one of {sorted(_MACHINE)}")
    machine = _MACHINE[arch]
    # torch's CPU wheels have been tagged plain linux_<machine>, so that tag is accepted too.
    platforms = [f"manylinux2014_{machine}", f"manylinux_2_28_{machine}", f"linux_{machine}"]
    command = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
               "--isolated", "--no-deps", "--target", str(staging), "--only-binary=:all:"]
    for platform in platforms:
        command += ["--platform", platform]
    command += ["--python-version", python_version, "--implementation", "cp", "--index-url", lock.index]
    if lock.hashed:
        command.append("--require-hashes")
    return command + ["-r", str(requirements_file)]


def install_packages(target: Path, locks: Sequence[Lock], *, arch: str = "x86_64", runner: Runner = subprocess.run,
                     scratch: Path | None = None) -> bool:
    """Install ``locks`` into ``target``, replacing what is there; False if already current.

    pip installs into a staging folder beside ``target`` (same file system, so the renames are
    atomic) and only a complete install is renamed into place: a crash or timeout mid-install
    leaves the old packages untouched, and its staging folder is swept by the next setup
    (:func:`sweep`). A folder whose marker lists the same locks is kept, so a repeated setup does
    no work. ``scratch`` is pip's temporary folder (TMPDIR), which setup sweeps too.
    """
    target = Path(target)
    wanted = marker_text(locks)
    if installed(target) == wanted:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    staging = target.with_name(f".{target.name}.staging-{token}")
    staging.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)} if scratch is not None else None
    try:
        for lock in locks:
            requirements = staging / f".lock-{hashlib.sha256(lock.text.encode()).hexdigest()[:12]}.txt"
            requirements.write_text(lock.text)
            _pip(runner, pip_command(staging, requirements, lock, arch=arch), env)
            requirements.unlink()
        (staging / MARKER).write_text(wanted)
        _swap_into_place(staging, target, token)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return True


def installed(target: Path) -> str | None:
    marker = Path(target) / MARKER
    return marker.read_text() if marker.is_file() else None


def _pip(runner: Runner, command: list[str], env: dict[str, str] | None) -> None:
    try:
        runner(command, check=True, env=env)
    except subprocess.CalledProcessError as exc:
        index = command[command.index("--index-url") + 1]
        raise PackageError(f"pip install from {index} failed with exit status {exc.returncode} "
                           "(its output is in the starter's log)") from exc


def sweep(target: Path) -> list[str]:
    """Remove what a killed install left beside ``target`` (staging and old folders); their names.

    Only call it holding the setup lock: no other install can be using them then.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    stale = [*target.parent.glob(f".{target.name}.staging-*"), *target.parent.glob(f".{target.name}.old-*")]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return sorted(p.name for p in stale)


def _swap_into_place(staging: Path, target: Path, token: str) -> None:
    # Two renames: between them the folder is briefly absent, which is harmless because setup
    # runs before any training run; the old folder is deleted only after the new one is live.
    old = target.with_name(f".{target.name}.old-{token}")
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
