"""The functions' deployment archives: exactly the code that runs on Lambda, importable from the zip alone.

"Bare runtime" means what AWS's python3.12 image offers beside the standard library (boto3 and
its dependencies) and an EFS mount with no packages yet, which is where the setup event runs.
"Byte-identical" compares ``components.archive.zip_bytes`` of two checkouts: a CLI edit must not
redeploy any function.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from components.archive import (
    POWERTOOLS_VERSION,
    ROOT,
    RUNTIME_MODULES,
    RUNTIME_PACKAGES,
    VENDORED,
    archive_files,
    vendored_sources,
    zip_bytes,
)
from lambdatrain.roles import settings as env

# What the Lambda Python runtime ships besides the standard library.
LAMBDA_RUNTIME_PACKAGES = ("boto3", "botocore", "jmespath", "s3transfer", "urllib3", "dateutil", "six")
# lambdatrain's packages that stay home: never in an archive, never imported by a handler.
HOME_PACKAGES = ("cli", "ops", "local", "planning")
# Files outside the runtime packages that the byte-identical test edits in a copy of the checkout.
HOME_EDITS = ("lambdatrain/cli/app.py", "lambdatrain/ops/control.py", "lambdatrain/local/stack.py",
              "lambdatrain/planning/planner.py", "lambdatrain/__main__.py")


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


def _run_bare(
    code: str, paths: list[Path], env_vars: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess:
    # -S: no site-packages (so none of the dev environment) unless ``paths`` names it.
    prelude = f"import sys; sys.path[:0] = {[str(p) for p in paths]!r}; "
    environ = {"PATH": os.environ.get("PATH", ""), "AWS_DEFAULT_REGION": "us-east-1", **env_vars}
    return subprocess.run([sys.executable, "-S", "-c", prelude + code], capture_output=True, text=True,
                          env=environ, timeout=120, cwd=cwd)


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


def _runtime_files_on_disk() -> set[str]:
    """Every source under lambdatrain/ that should ship, found independently of components.archive."""
    package = ROOT / "lambdatrain"
    found = {f"lambdatrain/{name}" for name in RUNTIME_MODULES}
    for path in package.rglob("*.py"):
        relative = path.relative_to(package)
        if len(relative.parts) > 1 and relative.parts[0] in RUNTIME_PACKAGES:
            found.add(f"lambdatrain/{relative.as_posix()}")
    return found


@pytest.mark.parametrize("logical", env.FUNCTIONS)
def test_archive_is_exactly_handler_runtime_packages_and_vendored(dev, logical):
    names = set(_assets(dev, logical))
    assert names == {"handler.py"} | _runtime_files_on_disk() | set(vendored_sources())
    assert not [n for n in names if n.split("/")[:2] in (["lambdatrain", p] for p in HOME_PACKAGES)]
    assert "lambdatrain/__main__.py" not in names


def test_runtime_packages_are_the_import_layers_from_roles_down():
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    layers = [module.strip() for layer in contract["layers"] for module in layer.split("|")]
    lower = {m.removeprefix("lambdatrain.") for m in layers[layers.index("lambdatrain.roles"):]}
    assert lower == set(RUNTIME_PACKAGES) | {"logs"}
    assert not lower & set(HOME_PACKAGES)


def test_declared_archive_is_the_one_the_program_deploys(plan):
    for logical in env.FUNCTIONS:
        declared = {name: Path(asset.path) for name, asset in _assets(plan, logical).items()}
        assert zip_bytes(declared) == zip_bytes(archive_files(logical))


def _unzip(data: bytes, dest: Path) -> Path:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(dest)
    return dest


REPORT_IMPORTS = (
    "import handler, json, sys, lambdatrain; "
    "print(json.dumps({'package': lambdatrain.__file__, "
    "'modules': sorted(m for m in sys.modules if m.split('.')[0] == 'lambdatrain')}))"
)


@pytest.mark.parametrize("logical", env.FUNCTIONS)
def test_every_handler_imports_from_its_archive_alone(logical, tmp_path):
    task = _unzip(zip_bytes(archive_files(logical)), tmp_path / "task")
    # The archive and the environment's site-packages (torch, as on the mount), not the repository;
    # -S also skips the .pth that puts the editable checkout on the path.
    site = Path(sysconfig.get_paths()["purelib"])
    mount = tmp_path / "mnt"
    mount.mkdir()
    result = _run_bare(REPORT_IMPORTS, [task, site], {env.ENV_MOUNT: str(mount), env.ENV_TABLE: "t"}, cwd=task)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert Path(report["package"]).is_relative_to(task)
    assert "lambdatrain.roles.edge" in report["modules"]
    home = [m for m in report["modules"] if m.split(".")[1:2] and m.split(".")[1] in HOME_PACKAGES]
    assert home == []


def _archives(root: Path) -> dict[str, bytes]:
    return {logical: zip_bytes(archive_files(logical, root)) for logical in env.FUNCTIONS}


def _copy_checkout(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("lambdatrain", "functions"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    return dest


def test_edits_outside_the_runtime_packages_leave_every_archive_byte_identical(tmp_path):
    copy = _copy_checkout(tmp_path / "checkout")
    before = _archives(copy)
    assert before == _archives(ROOT)
    for name in HOME_EDITS:
        with (copy / name).open("a") as file:
            file.write("\n# an edit that must not redeploy anything\n")
    assert _archives(copy) == before


def test_an_edit_inside_a_runtime_package_changes_every_archive(tmp_path):
    copy = _copy_checkout(tmp_path / "checkout")
    before = _archives(copy)
    with (copy / "lambdatrain/storage/efs.py").open("a") as file:
        file.write("\n# a runtime edit\n")
    after = _archives(copy)
    assert all(after[logical] != before[logical] for logical in env.FUNCTIONS)
