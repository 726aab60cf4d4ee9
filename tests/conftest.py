"""Shared fixtures: the real SmolLM2 model, a tiny random Llama, toy data (all three from
jessy_adapters.testing.fixtures), backend environments.

Tests that need a backend environment skip when it is missing, unless
JESSY_REQUIRE_BACKENDS lists that backend (CI sets it), in which case they fail.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SPEC_EXAMPLES = ROOT / "specs" / "examples"

sys._called_from_test = True  # noqa: SLF001 (llm's convention for "we are in a test")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The contract's fixtures, defined once for jessy's tests and the pytest plugin alike: the
# real SmolLM2 (`smollm2`), the tiny random Llama with its tokenizer (`tiny_model`), the toy
# facts (`toy_data`).
from jessy_adapters.testing.fixtures import smollm2, tiny_model, toy_data  # noqa: E402, F401


def require_env(backend: str):
    from jessy_adapters.envs import BackendEnv

    env = BackendEnv(backend)
    if env.exists():
        return env
    required = {b.strip() for b in os.environ.get("JESSY_REQUIRE_BACKENDS", "").split(",")}
    message = f"{backend} environment missing (jessy env create {backend})"
    if backend in required:
        pytest.fail(message + " but JESSY_REQUIRE_BACKENDS requires it")
    pytest.skip(message)


@pytest.fixture(scope="session")
def mlx_env():
    return require_env("mlx")


def write_spec(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def clean_home(tmp_path, monkeypatch):
    """An empty JESSY_HOME (no environments) that still sees the built models."""
    from jessy_adapters.paths import models_dir

    real_models = models_dir()
    home = tmp_path / "home"
    (home).mkdir()
    if real_models.exists():
        (home / "models").symlink_to(real_models)
    monkeypatch.setenv("JESSY_HOME", str(home))
    yield home
    shutil.rmtree(home, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Markers derived from what a test needs, so `-m "not backend and not slow"` is the
    pure core: a backend environment (any `*_env` fixture, or a module/test marked
    `backend`) -> `backend`; the built SmolLM2 (the `smollm2` fixture, which the tiny
    models' tokenizer also comes from) -> `slow`."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if any(n.endswith("_env") for n in names):
            item.add_marker(pytest.mark.backend("derived"))
        if "smollm2" in names:
            item.add_marker(pytest.mark.slow)


def run_and_kill_backend(runner, run, ready, timeout: float = 300):
    """Start `run()` (a Runner.run call) in a thread; SIGKILL the backend process the first
    time `ready()` says so; return (the finished run, whether it was killed)."""
    import signal
    import threading
    import time

    box = {}
    thread = threading.Thread(target=lambda: box.update(run=run()))
    thread.start()
    deadline, killed = time.monotonic() + timeout, False
    while thread.is_alive() and time.monotonic() < deadline and not killed:
        if runner._child is not None and ready():
            os.killpg(runner._child.pid, signal.SIGKILL)
            killed = True
        time.sleep(0.2)
    thread.join(timeout=600)
    return box["run"], killed


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only): a disk that fills up for real."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def assert_finished(m: dict, status: str) -> None:
    """run.json ended as `status`, with a reason unless it succeeded, no attempt running."""
    assert m["status"] == status and m["finished"], m
    assert m["failure"] is None if status == "succeeded" else m["failure"]["reason"], m
    assert all(a["status"] != "running" for a in m["attempts"]), m["attempts"]
