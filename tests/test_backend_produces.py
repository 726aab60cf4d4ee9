"""What a backend's attempts leave is declared (`Backend.produces`), not guessed from what its
normalise returns: a baseline that keeps nothing succeeds without an adapter, a backend that
declares weights but leaves none fails, and the registry refuses any other declaration.

Fake backends (fake_backend.py, a real subprocess) prove the core, not any backend.
"""

from __future__ import annotations

import json
import os
import re

import jsonschema
import pytest
from conftest import write_spec
from fake_backend import Plugin, make_backend

from jessy_adapters.plugins import Registry, RegistryError, load_registry
from jessy_adapters.run.runner import Runner
from jessy_adapters.spec import load_schema, load_spec


def make_spec(tmp_path, toy_data, method="lora"):
    path = write_spec(tmp_path / "spec.yaml", f"""\
model:
  name_or_path: {tmp_path}
data:
  train: {toy_data}
method: {method}
""")
    return load_spec(path)


def run(spec, tmp_path, *classes):
    os.environ["JESSY_LOAD_PLUGINS"] = ""
    try:
        registry = load_registry(extra_plugins=(Plugin(*classes),))
    finally:
        del os.environ["JESSY_LOAD_PLUGINS"]
    result = Runner(registry, console=lambda m: None).run(spec, [c.name for c in classes],
                                                          tmp_path / "runs")
    manifest = json.loads((result.path / "run.json").read_text())
    jsonschema.validate(manifest, load_schema("run-manifest"))
    return result.path, manifest


class Baseline(make_backend("baseline")):
    """Like the Modelfile baseline: keeps its files beside adapter/, never in it, and returns
    no `format` at all, so only the declaration can tell the core there are no weights."""

    produces = "nothing"

    def normalise(self, attempt_dir, spec, inputs, adapter_dir):
        export = adapter_dir.parent / "export"
        export.mkdir()
        (export / "Modelfile").write_text("FROM ./base.gguf\n")
        return {"modelfile": "export/Modelfile"}


def leaves_nothing(name: str, returns: dict):
    """Declares weights (the default) but its normalise writes none."""
    class Empty(make_backend(name)):
        def normalise(self, attempt_dir, spec, inputs, adapter_dir):
            return returns

    Empty.name = name
    return Empty


def test_a_backend_declaring_nothing_succeeds_with_outputs_and_no_adapter(tmp_path, toy_data):
    path, m = run(make_spec(tmp_path, toy_data), tmp_path, Baseline)
    assert m["status"] == "succeeded" and m["winner"] == "baseline"
    assert m["attempts"][0]["status"] == "succeeded" and m["attempts"][0]["failure"] is None
    assert m["adapter"] is None and "full_model" not in m
    assert m["outputs"] == {"modelfile": "export/Modelfile", "backend": "baseline",
                            "format": "none"}
    assert not (path / "adapter").exists() and (path / "export" / "Modelfile").is_file()


@pytest.mark.parametrize("returns", [{"format": "peft"}, {"format": "none"}, {}],
                         ids=["claims-peft", "old-none-signal", "empty"])
def test_a_backend_declaring_weights_that_leaves_no_adapter_fails(tmp_path, toy_data, returns):
    path, m = run(make_spec(tmp_path, toy_data), tmp_path,
                  leaves_nothing("hollow", returns), make_backend("solid"))
    first = m["attempts"][0]
    assert first["status"] == "failed" and first["failure"]["kind"] == "crashed"
    assert first["failure"]["reason"] == (
        "hollow declares produces = 'weights' but its normalise left no adapter_config.json "
        "in adapter/ (a backend that keeps no weights declares produces = 'nothing')")
    # the next backend of the chain runs, and only its adapter is recorded
    assert m["status"] == "succeeded" and m["winner"] == "solid"
    assert m["adapter"]["backend"] == "solid" and "outputs" not in m


def test_a_full_model_backend_that_leaves_no_weights_fails(tmp_path, toy_data):
    """The fake's normalise writes only adapter_config.json into model/: not a model."""
    path, m = run(make_spec(tmp_path, toy_data, "full"), tmp_path, make_backend("lookalike"))
    failure = m["attempts"][0]["failure"]
    assert m["status"] == "failed" and failure["kind"] == "crashed"
    assert "lookalike declares produces = 'weights' but its normalise left no model weights " \
           "(*.safetensors) in model/" in failure["reason"]
    assert "full_model" not in m and m["adapter"] is None


@pytest.mark.parametrize("value", ["adapter", "none", None, True])
def test_the_registry_refuses_an_unknown_produces(value):
    bad = make_backend("confused")
    bad.produces = value
    registry = Registry()
    with pytest.raises(RegistryError, match=(
            rf"test: backend 'confused' declares produces {re.escape(repr(value))}; "
            r"expected one of weights, nothing")):
        registry.register(bad, "test")
    assert registry.names() == []


@pytest.mark.parametrize("value", ["weights", "nothing"])
def test_the_registry_takes_both_declarations(value):
    good = make_backend("clear")
    good.produces = value
    registry = Registry()
    registry.register(good, "test")
    assert registry.names() == ["clear"]


def test_the_modelfile_baseline_declares_nothing_and_weights_is_the_default():
    from jessy_ollama_modelfile.backend import OllamaModelfileBackend

    assert OllamaModelfileBackend.produces == "nothing"
    assert make_backend("plain").produces == "weights"
