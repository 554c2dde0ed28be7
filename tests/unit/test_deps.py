"""lambdatrain.roles.packages: the package folder on the mount and the setup install, with a fake pip."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from lambdatrain.roles import packages as deps
from lambdatrain.protocol.errors import ConfigError
from lambdatrain.roles.settings import ENV_MOUNT, ENV_PACKAGES, ENV_TABLE, RuntimeSettings, load


class FakePip:
    """Stands in for subprocess.run: records each command and 'installs' a folder per lock it is given."""

    def __init__(self, fail: bool = False):
        self.commands: list[list[str]] = []
        self.fail = fail

    def __call__(self, command, check, env=None, **kwargs):
        assert check is True
        self.commands.append(command)
        if self.fail:
            raise subprocess.CalledProcessError(1, command)
        staging = Path(command[command.index("--target") + 1])
        for line in Path(command[command.index("-r") + 1]).read_text().split("\n"):
            if line:
                name = line.split("==")[0]
                (staging / name).mkdir()
                (staging / name / "__init__.py").write_text("")
        return subprocess.CompletedProcess(command, 0)


INDEX = "http://127.0.0.1:1/simple"


def lock(*lines: str) -> tuple[deps.Lock, ...]:
    return (deps.Lock(INDEX, lines),)


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


def test_lambda_locks_pin_the_whole_closure_with_hashes_where_known():
    for arch in ("x86_64", "arm64"):
        pypi, torch = deps.lambda_locks(arch)
        assert pypi.index == "https://pypi.org/simple" and torch.index == "https://download.pytorch.org/whl/cpu"
        names = {line.split("==")[0] for line in pypi.lines + torch.lines}
        # torch's CPU build's and torchvision's requirements, transitively (pins.py says where from)
        assert names == {"torch", "torchvision", "numpy", "xxhash", "pillow", "filelock", "typing-extensions",
                         "setuptools", "sympy", "mpmath", "networkx", "jinja2", "markupsafe", "fsspec"}, arch
        assert pypi.hashed and all(len(line.split("--hash=sha256:")[1].split()[0]) == 64 for line in pypi.lines)
        assert not torch.hashed and torch.lines == ("torch==2.14.1+cpu", "torchvision==0.29.1+cpu")


def test_lambda_pins_are_the_tested_versions():
    dev = (Path(__file__).resolve().parents[2] / "requirements-dev.txt").read_text().split()
    for arch in ("x86_64", "arm64"):
        pinned = {line.split()[0].split("+")[0] for lock in deps.lambda_locks(arch) for line in lock.lines}
        assert {p for p in dev if p.split("==")[0] in ("torch", "torchvision", "numpy", "xxhash", "pillow")} <= pinned


@pytest.mark.parametrize("arch, machine", [("x86_64", "x86_64"), ("arm64", "aarch64")])
def test_install_runs_pip_for_the_lambda_platform(tmp_path, arch, machine):
    pip = FakePip()
    target = tmp_path / "python"
    locks = deps.lambda_locks(arch)
    assert deps.install_packages(target, locks, arch=arch, runner=pip)
    assert len(pip.commands) == 2  # one pip run per index
    for command, expected in zip(pip.commands, locks):
        assert command[1:4] == ["-m", "pip", "install"]
        assert {"--only-binary=:all:", "--no-deps", "--isolated"} <= set(command)
        assert f"manylinux2014_{machine}" in _option_values(command, "--platform")
        assert _option_values(command, "--python-version") == [deps.LAMBDA_PYTHON]
        assert _option_values(command, "--index-url") == [expected.index]
        assert "--extra-index-url" not in command  # never two indexes in one run
        assert ("--require-hashes" in command) == expected.hashed
    assert (target / "torch" / "__init__.py").is_file()
    assert (target / deps.MARKER).read_text() == deps.marker_text(locks)
    assert sorted(p.name for p in target.iterdir() if p.name.startswith(".")) == []  # no lock files left


def test_install_leaves_no_staging_folder_behind(tmp_path):
    deps.install_packages(tmp_path / "python", lock("numpy==2.1.3"), runner=FakePip())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["python"]


def test_install_is_noop_when_requirements_unchanged(tmp_path):
    target = tmp_path / "python"
    deps.install_packages(target, lock("numpy==2.1.3"), runner=FakePip())
    pip = FakePip()
    assert deps.install_packages(target, lock("numpy==2.1.3"), runner=pip) is False
    assert pip.commands == []


def test_install_replaces_outdated_packages(tmp_path):
    target = tmp_path / "python"
    deps.install_packages(target, lock("numpy==2.0.0"), runner=FakePip())
    (target / "stale.py").write_text("")
    assert deps.install_packages(target, lock("numpy==2.1.3"), runner=FakePip())
    assert not (target / "stale.py").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["python"]


def test_failed_install_keeps_the_old_packages(tmp_path):
    target = tmp_path / "python"
    deps.install_packages(target, lock("numpy==2.0.0"), runner=FakePip())
    with pytest.raises(deps.PackageError, match=f"pip install from {INDEX} failed with exit status 1"):
        deps.install_packages(target, lock("numpy==2.1.3"), runner=FakePip(fail=True))
    assert (target / deps.MARKER).read_text() == deps.marker_text(lock("numpy==2.0.0"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["python"]


def test_unknown_architecture_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown architecture"):
        deps.install_packages(tmp_path / "python", lock("numpy==2.1.3"), arch="sparc", runner=FakePip())


def test_sweep_removes_what_a_killed_install_left(tmp_path):
    target = tmp_path / "python"
    deps.install_packages(target, lock("numpy==2.1.3"), runner=FakePip())
    for name in (".python.staging-0badc0de", ".python.old-0badc0de"):
        (tmp_path / name / "torch").mkdir(parents=True)
    (tmp_path / "datasets").mkdir()
    assert deps.sweep(target) == [".python.old-0badc0de", ".python.staging-0badc0de"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["datasets", "python"]


def test_custom_lock_must_pin_every_line_with_a_hash(tmp_path):
    path = tmp_path / "lock.txt"
    path.write_text("# a comment\nprobe==1.0 --hash=sha256:" + "0" * 64 + "\n")
    (custom,) = deps.custom_lock(INDEX, path)
    assert custom.hashed and custom.lines == ("probe==1.0 --hash=sha256:" + "0" * 64,)
    path.write_text("probe==1.0\n")
    with pytest.raises(ConfigError, match="must pin every package with --hash"):
        deps.custom_lock(INDEX, path)


def test_pip_that_cannot_run_is_one_line():
    def no_pip(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "Traceback ...\n/usr/bin/python: No module named pip\n")

    with pytest.raises(deps.PackageError) as info:
        deps.check_pip(no_pip)
    assert "pip cannot run in this runtime" in str(info.value) and "No module named pip" in str(info.value)
    assert "\n" not in str(info.value)


def test_pip_runs_in_this_interpreter():
    assert deps.check_pip().startswith("pip ")


def test_pins_are_what_the_lock_script_resolves():
    """pins.py is generated; its pins must be the script's, so a version bump there is regenerated."""
    path = Path(__file__).resolve().parents[2] / "functions" / "requirements" / "lock.py"
    spec = importlib.util.spec_from_file_location("lambda_lock", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for arch in script.MACHINES:
        pypi, torch = deps.lambda_locks(arch)
        assert sorted(line.split()[0] for line in pypi.lines) == sorted(script.PYPI)
        assert torch.lines == script.TORCH_CPU
