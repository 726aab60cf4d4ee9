"""A third-party backend, for real (issue 14, part 5): examples/jessy-backend-peft, its own
package with its own entry point, installed into a fresh venv beside jessy, is listed by
`jessy backends` there and passes the whole contract through the pytest plugin
(`pytest --jessy-backend peft-example`) with no check skipped: the contract is enough.

The venv gets jessy from this checkout (editable, --no-deps: the example specs the contract
translates live in the checkout) and the example as a regular install from a copy (so no
build files land in the checkout); torch, transformers, peft, pytest and setuptools come from
jessy's own venv through a plain path line in a .pth file (as in tests/test_wheel.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "jessy-backend-peft"
NAME = "peft-example"

pytestmark = pytest.mark.backend(NAME)  # trains (the `*_env` fixture derives it too)

_OUTSIDE = ("PYTHONPATH", "JESSY_LOAD_PLUGINS", "PYTEST_ADDOPTS", "PYTEST_PLUGINS",
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _OUTSIDE}
    return {**env, **extra}


def _run(argv: list, cwd: Path, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"{argv}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n"
                                  f"{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def peft_example_env(tmp_path_factory) -> Path:
    """The fresh venv with jessy and the example plugin installed (no dependencies)."""
    work = tmp_path_factory.mktemp("third-party")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=work).stdout.strip()
    (Path(site) / "jessy_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # builds use jessy's setuptools (offline); the venv's own may predate PEP 660 wheels
    _run([python, "-m", "pip", "uninstall", "-q", "-y", "setuptools"], cwd=work)
    pip = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
           "--disable-pip-version-check"]
    _run(pip + ["-e", ROOT], cwd=work)
    source = shutil.copytree(EXAMPLE, work / EXAMPLE.name, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__"))
    _run(pip + [source], cwd=work)
    return venv


def test_jessy_backends_lists_the_installed_plugin(peft_example_env, tmp_path):
    where = _run([peft_example_env / "bin" / "python", "-I", "-c",
                  "import jessy_peft_example; print(jessy_peft_example.__file__)"],
                 cwd=tmp_path).stdout.strip()
    assert Path(where).resolve().is_relative_to(peft_example_env.resolve()), where
    rows = json.loads(_run([peft_example_env / "bin" / "jessy", "backends", "--json"],
                           cwd=tmp_path).stdout)
    row = next((r for r in rows if r["name"] == NAME), None)
    assert row is not None, [r["name"] for r in rows]
    assert row["plugin"] == NAME and row["can_run"], row
    assert "jessy's environment" in row["reason"], row


def test_the_example_passes_the_whole_contract_with_no_check_skipped(peft_example_env,
                                                                    smollm2, tmp_path):
    """`smollm2` builds the model the contract's tiny model borrows its tokenizer from (once,
    into $JESSY_HOME/models) before the inner session needs it."""
    from jessy_adapters import contract

    junit = tmp_path / "contract.xml"
    empty = tmp_path / "plugin-project"  # no conftest, no ini: what a plugin's checkout has
    empty.mkdir()
    proc = subprocess.run(
        [str(peft_example_env / "bin" / "python"), "-m", "pytest", "--jessy-backend", NAME,
         "-p", "no:cacheprovider", "-q", "-rA", f"--junitxml={junit}",
         f"--basetemp={tmp_path / 'inner'}"],  # never rotates away the outer session's
        cwd=empty, env=_env(JESSY_REQUIRE_BACKENDS=NAME), capture_output=True, text=True,
        timeout=600)
    tail = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    suite = ET.parse(junit).getroot().find("testsuite")
    counts = {k: int(suite.get(k)) for k in ("tests", "failures", "errors", "skipped")}
    assert counts["failures"] == counts["errors"] == counts["skipped"] == 0, (counts, tail)
    cases = [case.get("name") for case in suite.iter("testcase")]
    assert all(f"[{NAME}" in case for case in cases), cases
    ran = {case.split("[")[0] for case in cases}
    assert ran == {n for n in dir(contract) if n.startswith("test_contract")}, ran
    assert counts["tests"] == len(cases) >= len(ran) + 2  # the example specs, parametrised
