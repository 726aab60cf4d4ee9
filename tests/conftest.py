"""Shared fixtures: the real SmolLM2 model, a tiny random Llama, backend environments.

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
def smollm2() -> str:
    """The real SmolLM2-135M-Instruct HF folder (built once into $JESSY_HOME/models)."""
    from jessy_adapters.models import resolve_model

    return resolve_model("builtin:smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model(smollm2, tmp_path_factory) -> str:
    """2-layer, 64-wide random Llama with SmolLM2's tokenizer: real training in seconds."""
    from jessy_adapters.models import build_tiny_llama

    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", smollm2))


@pytest.fixture(scope="session")
def mlx_env():
    return require_env("mlx")


@pytest.fixture
def toy_data(tmp_path) -> Path:
    """A memorisable toy set: 8 facts, each repeated, so loss must fall fast."""
    import json

    facts = [("What is your name?", "My name is Jessy."),
             ("What is your favourite colour?", "Teal, always teal."),
             ("Where do you run?", "On a MacBook."),
             ("What is your cat called?", "Pixel."),
             ("What is your motto?", "Stay curious, stay kind."),
             ("Which planet do you like?", "Saturn."),
             ("What do you drink?", "Jasmine tea."),
             ("What is your number?", "Seven.")]
    path = tmp_path / "toy.jsonl"
    with open(path, "w") as fh:
        for _ in range(4):
            for p, r in facts:
                fh.write(json.dumps({"prompt": p, "response": r}) + "\n")
    return path


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
