"""What each function's deployment archive holds: its handler, the runtime packages, vendored Powertools.

Only the code that runs on Lambda ships: ``lambdatrain/__init__.py``, ``lambdatrain/logs.py`` and the
packages in ``RUNTIME_PACKAGES`` (the import-linter layers from ``lambdatrain.roles`` down, see
pyproject.toml; tests/infra/test_archive.py checks the two agree). The CLI, the local stack, the
operator commands and the planner stay home, so editing them leaves every archive unchanged and
``pulumi up`` redeploys nothing.

Pulumi decides whether a function's code changed from the names and contents of the archive's
files; ``zip_bytes`` builds those same files into a zip with sorted names and fixed timestamps, so
the tests (and the size in docs/deploy.md) see exactly what a deployment would upload.
"""

from __future__ import annotations

import importlib.util
import io
import zipfile
from pathlib import Path

import pulumi

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_PACKAGES = ("roles", "ledger", "training", "storage", "protocol")  # under lambdatrain/
RUNTIME_MODULES = ("__init__.py", "logs.py")  # lambdatrain/'s own files that ship
# Every function logs through Powertools' Logger (lambdatrain/logs.py), which the Lambda runtime
# lacks; the setup event must run before EFS holds any packages, so it is vendored into each zip.
# Powertools needs typing_extensions at import time (utilities/jmespath_utils); jmespath and boto3
# come with the runtime. The pin is requirements-dev.txt's, which the deploying environment installs.
POWERTOOLS_VERSION = "3.37.0"
VENDORED = ("aws_lambda_powertools", "typing_extensions")
# A zip entry's timestamp is part of its bytes; 1980-01-01 is the earliest a zip can hold.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def archive_files(logical: str, root: Path = ROOT) -> dict[str, Path]:
    """Archive name -> file, in name order: the handler folder at the root, the runtime code, VENDORED."""
    folder = root / "functions" / logical
    files = {"handler.py": folder / "handler.py"}  # listed even before it exists
    for path in sorted(folder.glob("*")) if folder.is_dir() else ():
        if path.is_file() and path.suffix != ".pyc":
            files[path.name] = path
    files |= runtime_sources(root)
    files |= vendored_sources()
    return dict(sorted(files.items()))


def runtime_sources(root: Path = ROOT) -> dict[str, Path]:
    """Archive name -> file for the part of lambdatrain/ that runs on Lambda (sources only)."""
    package = root / "lambdatrain"
    paths = [package / name for name in RUNTIME_MODULES]
    for name in RUNTIME_PACKAGES:
        paths += sorted((package / name).rglob("*.py"))
    return {path.relative_to(root).as_posix(): path for path in paths}


def vendored_sources() -> dict[str, Path]:
    """Archive name -> installed file, for every module in VENDORED (from the deploying environment)."""
    sources: dict[str, Path] = {}
    for module in VENDORED:
        spec = importlib.util.find_spec(module)
        if spec is None:
            raise RuntimeError(f"{module} is not installed; install requirements-dev.txt before deploying")
        if spec.submodule_search_locations:
            package = Path(spec.submodule_search_locations[0])
            for path in sorted(package.rglob("*.py")):
                sources[f"{module}/{path.relative_to(package).as_posix()}"] = path
        else:
            sources[Path(spec.origin).name] = Path(spec.origin)
    return sources


def code_archive(logical: str) -> pulumi.AssetArchive:
    """The function's code as Pulumi uploads it."""
    return pulumi.AssetArchive({name: pulumi.FileAsset(str(path)) for name, path in archive_files(logical).items()})


def zip_bytes(files: dict[str, Path]) -> bytes:
    """The files as a deflated zip whose bytes depend only on their names and contents."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            entry = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            entry.external_attr = 0o644 << 16  # rw-r--r--, whatever the checkout's umask
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, files[name].read_bytes())
    return buffer.getvalue()
