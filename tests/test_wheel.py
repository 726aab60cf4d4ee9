"""jessy as an installed wheel, not a checkout: schemas, plans and runtime files are package
data, and every command a user runs first works from another folder.

The wheel is built from this checkout and installed with --no-deps into a fresh venv
outside the repository; the dependencies (click, torch, ...) come from jessy's own venv
through a plain path line in a .pth file, which adds that folder to sys.path without
running its .pth files (so the checkout's editable finder is never loaded).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, SPEC_EXAMPLES, require_env

pytestmark = pytest.mark.backend("mlx")


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    dist = work / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
                    str(ROOT)], check=True, cwd=work, timeout=600)
    wheels = list(dist.glob("jessy_adapters-*.whl"))
    assert len(wheels) == 1, wheels
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                    str(wheels[0])], check=True, timeout=300)
    site = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "jessy_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def jessy(venv: Path, *args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(venv / "bin" / "jessy"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_installed_package_is_the_wheel_not_the_checkout(wheel_venv, tmp_path):
    out = subprocess.run([str(wheel_venv / "bin" / "python"), "-I", "-c",
                          "import jessy_adapters, jessy_mlx, json; "
                          "from jessy_adapters.paths import package_file; "
                          "print(json.dumps([jessy_adapters.__file__, jessy_mlx.__file__, "
                          "str(package_file('schemas', 'spec.schema.json'))]))"],
                         cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    for path in json.loads(out):
        assert Path(path).resolve().is_relative_to(wheel_venv.resolve()), path
        assert not Path(path).resolve().is_relative_to(ROOT), path
        assert Path(path).exists()


def test_wheel_commands_work_from_another_folder(wheel_venv, tmp_path, smollm2):
    spec = SPEC_EXAMPLES / "quickstart.yaml"
    r = jessy(wheel_venv, "validate", str(spec), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout

    r = jessy(wheel_venv, "backends", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    names = {b["name"] for b in json.loads(r.stdout)}
    assert {"mlx", "unsloth", "llamafactory", "axolotl", "skypilot"} <= names

    r = jessy(wheel_venv, "plan", "--plan", "A", str(spec), cwd=tmp_path)
    assert r.returncode == 0, r.stderr

    for backend in ("mlx", "unsloth", "llamafactory", "axolotl"):
        out = tmp_path / f"native-{backend}"
        r = jessy(wheel_venv, "translate", "--backend", backend, str(spec), "--out", str(out),
                  cwd=tmp_path)
        assert r.returncode == 0, (backend, r.stderr)
        assert (out / "command.txt").is_file(), backend

    for command in ("compare", "import", "data", "eval", "export"):  # every sub-package ships
        r = jessy(wheel_venv, command, "--help", cwd=tmp_path)
        assert r.returncode == 0, (command, r.stderr)
    import_src = ROOT / "tests" / "data" / "import"
    native = next(import_src.glob("*.yaml"))
    r = jessy(wheel_venv, "import", str(native), "-o", str(tmp_path / "imported.yaml"),
              "--model", smollm2, cwd=tmp_path)
    assert "Traceback" not in r.stderr, r.stderr

    r = jessy(wheel_venv, "model", "build", "tiny-qwen2", cwd=tmp_path)  # package templates
    assert r.returncode == 0, r.stderr

    r = jessy(wheel_venv, "model", "build", "smollm2-135m-instruct", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip().splitlines()[-1]) == Path(smollm2)


def test_wheel_trains_for_real(wheel_venv, tmp_path, tiny_model, toy_data):
    require_env("mlx")
    spec = tmp_path / "wheel.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "wheel", "model": {"name_or_path": tiny_model, "max_seq_length": 64},
        "data": {"train": str(toy_data), "validation_split": 0.25}, "lora": {"r": 4},
        "training": {"max_steps": 3, "batch_size": 4, "learning_rate": 0.01,
                     "logging_steps": 1}}))
    r = jessy(wheel_venv, "run", "--backend", "mlx", "--no-fallback", str(spec),
              "--output", "runs", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    [run_dir] = (tmp_path / "runs").iterdir()
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "succeeded"
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    # the MLX entry script that ran is the wheel's copy
    command = (run_dir / "attempts" / "01-mlx" / "command.txt").read_text()
    assert str(wheel_venv) in command or "site-packages" in command, command
