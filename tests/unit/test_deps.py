"""lambdatrain.roles.packages: the package folder on the mount and the setup install, with a fake pip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lambdatrain.roles import packages as deps
from lambdatrain.protocol.errors import ConfigError
from lambdatrain.roles.settings import ENV_MOUNT, ENV_PACKAGES, ENV_TABLE, RuntimeSettings, load


class FakePip:
    """Stands in for subprocess.run: records the command and 'installs' a torch folder."""

    def __init__(self, fail: bool = False):
        self.commands: list[list[str]] = []
        self.fail = fail

    def __call__(self, command, check):
        assert check is True
        self.commands.append(command)
        if self.fail:
            raise subprocess.CalledProcessError(1, command)
        staging = Path(command[command.index("--target") + 1])
        (staging / "torch").mkdir()
        (staging / "torch" / "__init__.py").write_text("")
        return subprocess.CompletedProcess(command, 0)


def _option_values(command: list[str], option: str) -> list[str]:
    return [command[i + 1] for i, part in enumerate(command) if part == option]


def test_packages_dir_defaults_below_the_mount():
    assert deps.packages_dir({ENV_MOUNT: "/mnt/x"}) == Path("/mnt/x/python")


def test_packages_dir_honours_absolute_env_folder():
    assert deps.packages_dir({ENV_MOUNT: "/mnt/x", ENV_PACKAGES: "/opt/pk"}) == Path("/opt/pk")


def test_packages_dir_from_runtime_settings(tmp_path):
    settings = load({ENV_TABLE: "t", ENV_MOUNT: str(tmp_path)})
    assert deps.packages_dir(settings) == settings.packages == tmp_path / "python"


def test_packages_dir_uses_the_settings_folder_as_given(tmp_path):
    settings = RuntimeSettings(table="t", mount=tmp_path, bucket=None, functions={}, data=tmp_path / "d",
                               packages=Path("/opt/pk"), faults=None)
    assert deps.packages_dir(settings) == Path("/opt/pk")


def test_add_packages_to_path_is_noop_without_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = list(sys.path)
    assert deps.add_packages_to_path({ENV_MOUNT: str(tmp_path)}) is None
    assert sys.path == before


def test_add_packages_to_path_appends_once(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "python").mkdir()
    env = {ENV_MOUNT: str(tmp_path)}
    assert deps.add_packages_to_path(env) == tmp_path / "python"
    deps.add_packages_to_path(env)
    assert sys.path.count(str(tmp_path / "python")) == 1
    assert sys.path[-1] == str(tmp_path / "python")


def test_lambda_requirements_are_pinned_cpu_builds():
    for arch, requirements in deps.LAMBDA_REQUIREMENTS.items():
        names = {r.split("==")[0] for r in requirements}
        assert names == {"torch", "torchvision", "numpy", "xxhash"}, arch
        assert all("==" in r for r in requirements)
    assert all(r.endswith("+cpu") for r in deps.LAMBDA_REQUIREMENTS["x86_64"] if "torch" in r)


@pytest.mark.parametrize("arch, machine", [("x86_64", "x86_64"), ("arm64", "aarch64")])
def test_install_runs_pip_for_the_lambda_platform(tmp_path, arch, machine):
    pip = FakePip()
    target = tmp_path / "python"
    assert deps.install_packages(target, deps.LAMBDA_REQUIREMENTS[arch], arch=arch, runner=pip)
    (command,) = pip.commands
    assert command[1:4] == ["-m", "pip", "install"]
    assert "--only-binary=:all:" in command
    assert f"manylinux2014_{machine}" in _option_values(command, "--platform")
    assert _option_values(command, "--python-version") == [deps.LAMBDA_PYTHON]
    assert _option_values(command, "--extra-index-url") == [deps.TORCH_CPU_INDEX]
    requirements_file = Path(_option_values(command, "-r")[0])
    assert requirements_file.name == deps.MARKER
    assert (target / "torch" / "__init__.py").is_file()
    assert (target / deps.MARKER).read_text().splitlines() == list(deps.LAMBDA_REQUIREMENTS[arch])


def test_install_leaves_no_staging_folder_behind(tmp_path):
    deps.install_packages(tmp_path / "python", ["numpy==2.1.3"], runner=FakePip())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["python"]


def test_install_is_noop_when_requirements_unchanged(tmp_path):
    target = tmp_path / "python"
    deps.install_packages(target, ["numpy==2.1.3"], runner=FakePip())
    pip = FakePip()
    assert deps.install_packages(target, ["numpy==2.1.3"], runner=pip) is False
    assert pip.commands == []


def test_install_replaces_outdated_packages(tmp_path):
    target = tmp_path / "python"
    deps.install_packages(target, ["numpy==2.0.0"], runner=FakePip())
    (target / "stale.py").write_text("")
    assert deps.install_packages(target, ["numpy==2.1.3"], runner=FakePip())
    assert not (target / "stale.py").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["python"]


def test_failed_install_keeps_the_old_packages(tmp_path):
    target = tmp_path / "python"
    deps.install_packages(target, ["numpy==2.0.0"], runner=FakePip())
    with pytest.raises(subprocess.CalledProcessError):
        deps.install_packages(target, ["numpy==2.1.3"], runner=FakePip(fail=True))
    assert (target / deps.MARKER).read_text() == "numpy==2.0.0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["python"]


def test_unknown_architecture_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown architecture"):
        deps.install_packages(tmp_path / "python", ["numpy==2.1.3"], arch="sparc", runner=FakePip())
