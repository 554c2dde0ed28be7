"""The functions' deployment archives: what each zip holds, and that it imports on a bare runtime.

"Bare runtime" means what AWS's python3.12 image offers beside the standard library (boto3 and
its dependencies) and an EFS mount with no packages yet, which is where the setup event runs.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components.functions import POWERTOOLS_VERSION, VENDORED
from lambdatrain.roles import settings as env

# What the Lambda Python runtime ships besides the standard library.
LAMBDA_RUNTIME_PACKAGES = ("boto3", "botocore", "jmespath", "s3transfer", "urllib3", "dateutil", "six")


def _assets(plan, logical):
    return plan.functions()[logical].inputs["code"].assets


def _materialize(assets, dest: Path) -> Path:
    for name, asset in assets.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(asset.path, target)
    return dest


def _runtime_packages(dest: Path) -> Path:
    """A folder that holds only the packages the Lambda runtime provides (links into this venv)."""
    dest.mkdir()
    for name in LAMBDA_RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        origin = Path(spec.submodule_search_locations[0]) if spec.submodule_search_locations else Path(spec.origin)
        (dest / origin.name).symlink_to(origin)
    return dest


def _run_bare(code: str, paths: list[Path], env_vars: dict[str, str]) -> subprocess.CompletedProcess:
    # -S: no site-packages, so numpy, torch and everything else of the dev environment is absent.
    prelude = f"import sys; sys.path[:0] = {[str(p) for p in paths]!r}; "
    environ = {"PATH": os.environ.get("PATH", ""), "AWS_DEFAULT_REGION": "us-east-1", **env_vars}
    return subprocess.run([sys.executable, "-S", "-c", prelude + code], capture_output=True, text=True,
                          env=environ, timeout=120)


@pytest.mark.parametrize("logical", env.FUNCTIONS)
def test_every_archive_holds_handler_package_and_powertools(dev, logical):
    assets = _assets(dev, logical)
    assert assets["handler.py"].path.endswith(f"functions/{logical}/handler.py")
    assert {"lambdatrain/__init__.py", "lambdatrain/roles/edge.py", "lambdatrain/roles/setup.py"} <= set(assets)
    assert {"aws_lambda_powertools/__init__.py", "aws_lambda_powertools/logging/logger.py"} <= set(assets)
    assert "typing_extensions.py" in assets
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in assets)


def test_vendored_powertools_is_the_pinned_release():
    assert VENDORED[0] == "aws_lambda_powertools"
    assert importlib.metadata.version("aws-lambda-powertools") == POWERTOOLS_VERSION
    pins = Path(__file__).resolve().parents[2].joinpath("requirements-dev.txt").read_text().split()
    assert f"aws-lambda-powertools=={POWERTOOLS_VERSION}" in pins


def test_vendored_powertools_imports_on_the_bare_runtime(dev, tmp_path):
    archive = _materialize(_assets(dev, env.STARTER), tmp_path / "task")
    runtime = _runtime_packages(tmp_path / "runtime")
    result = _run_bare("from aws_lambda_powertools import Logger; Logger(service='t')", [archive, runtime], {})
    assert result.returncode == 0, result.stderr


def test_starter_handler_loads_before_setup_installed_anything(dev, tmp_path):
    archive = _materialize(_assets(dev, env.STARTER), tmp_path / "task")
    runtime = _runtime_packages(tmp_path / "runtime")
    mount = tmp_path / "mnt"
    mount.mkdir()
    result = _run_bare("import handler, lambdatrain.roles.setup", [archive, runtime],
                       {env.ENV_MOUNT: str(mount), env.ENV_TABLE: "t"})
    assert result.returncode == 0, result.stderr
