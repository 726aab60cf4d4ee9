"""The contract's pytest plugin (jessy_adapters.testing): inert unless asked, then the whole
contract for each named backend; one definition of the fixtures for it and for jessy's tests.

Each check runs pytest in a subprocess on a scratch project, with plugin autoloading off and
the plugin named by `-p` (so it holds whether or not the `pytest11` entry point is installed).
The trained run through the plugin is tests/test_third_party_plugin.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jessy_adapters import contract
from jessy_adapters.backend import Backend
from jessy_adapters.plugins import Registry, RegistryError
from jessy_adapters.testing import fixtures

CONTRACT_TESTS = sorted(n for n in dir(contract) if n.startswith("test_contract"))


def pytest_in(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "JESSY_LOAD_PLUGINS")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "jessy_adapters.testing.plugin",
                           "-p", "no:cacheprovider", f"--basetemp={project / '.tmp'}", *args],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def project(tmp_path) -> Path:
    """A plugin author's checkout: one test of its own, no conftest."""
    (tmp_path / "test_mine.py").write_text("def test_mine():\n    pass\n")
    return tmp_path


def collected(proc: subprocess.CompletedProcess) -> list[str]:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [line for line in proc.stdout.splitlines() if "::" in line]


def test_the_plugin_adds_no_test_and_no_fixture_unless_asked(project):
    assert collected(pytest_in(project, "--collect-only", "-q")) == ["test_mine.py::test_mine"]
    shown = pytest_in(project, "--fixtures")
    assert shown.returncode == 0, shown.stderr
    for name in ("backend_name", "tiny_model", "toy_data", "smollm2", "stand_in_model",
                 "backend_env"):
        assert name not in shown.stdout, name
    assert "jessy contract" not in pytest_in(project, "--collect-only").stdout


def test_the_option_collects_the_whole_contract_once_per_backend(project):
    items = collected(pytest_in(project, "--jessy-backend", "mlx,ollama-modelfile",
                                "--jessy-backend", "mlx", "--collect-only", "-q"))
    assert "test_mine.py::test_mine" in items
    for backend in ("mlx", "ollama-modelfile"):
        mine = [i for i in items if f"[{backend}" in i]
        assert sorted({i.split("::")[-1].split("[")[0] for i in mine}) == CONTRACT_TESTS
        # the example-spec checks once per spec, every other check once
        assert len(mine) == len(CONTRACT_TESTS) + 2 * (len(contract.EXAMPLES) - 1)


def test_the_ini_option_names_backends_too(project):
    (project / "pytest.ini").write_text("[pytest]\njessy_backends =\n    mlx\n")
    items = collected(pytest_in(project, "--collect-only", "-q"))
    assert any("test_contract_check_is_cheap_and_explains_itself[mlx]" in i for i in items)
    header = pytest_in(project, "--collect-only").stdout
    assert "jessy contract: mlx" in header


def test_the_contract_runs_through_the_plugin(project):
    proc = pytest_in(project, "--jessy-backend", "mlx", "-k", "cheap or mine", "-q")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "2 passed" in proc.stdout  # the contract's check, and the project's own test


def test_jessy_tests_use_the_same_fixture_definitions():
    from tests import conftest

    for name in ("smollm2", "tiny_model", "toy_data"):
        assert getattr(conftest, name) is getattr(fixtures, name), name


def test_registry_refuses_an_unknown_environment():
    class Elsewhere(Backend):
        name = "elsewhere"
        environment = "docker"

        def check(self, env, require_accelerator=False): ...
        def translate(self, spec, inputs, attempt_dir, env): ...
        def normalise(self, attempt_dir, spec, inputs, adapter_dir): ...

    with pytest.raises(RegistryError, match="environment 'docker'"):
        Registry().register(Elsewhere, "test")
