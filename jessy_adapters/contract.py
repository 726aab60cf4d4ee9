"""The backend contract suite: one definition, run on every built-in backend and, through the
pytest plugin `jessy_adapters.testing` (entry point `pytest11: jessy`), on any installed
backend plugin::

    pytest --jessy-backend mybackend

jessy's own tests/contract/ runs it for every built-in backend by importing these tests. The
fixtures they need beyond this module's (`backend_name`, `tiny_model`, `toy_data`) come from
`jessy_adapters.testing.fixtures`: the plugin registers them when asked to run the contract,
and jessy's tests/conftest.py imports them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .backend import RunInputs, TranslationRefused
from .data import prepare
from .envs import BackendEnv
from .paths import SPECS_DIR
from .plugins import load_registry
from .spec import CORE_FIELDS, backend_fields, leaf_paths, load_schema, load_spec  # noqa: F401
from .testing.mutations import IGNORED, carried_field_outcomes


def translate_example(name: str, example: Path, tmp: Path, model_dir: Path):
    """Translate an example spec against a stand-in model folder; (translation, refusal)."""
    backend = load_registry().get(name)
    spec = load_spec(example)
    data = prepare(spec, tmp / "data")
    inputs = RunInputs(str(model_dir), data)
    try:
        return backend.translate(spec, inputs, tmp / "attempt", BackendEnv(name)), None
    except TranslationRefused as exc:
        return None, exc


@pytest.fixture
def stand_in_model(tmp_path) -> Path:
    """Just enough of a model folder for translation (which reads only config.json)."""
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"num_hidden_layers": 30,
                                               "model_type": "llama"}))
    return d


# The example specs live in a checkout; an installed wheel runs the contract without them.
EXAMPLES = sorted((SPECS_DIR / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_contract_every_example_translates_or_is_refused_by_path(backend_name, example,
                                                                 tmp_path, stand_in_model):
    translation, refusal = translate_example(backend_name, example, tmp_path, stand_in_model)
    if refusal is not None:
        assert refusal.refusals and all(r.spec_path.startswith("/") and r.reason
                                        for r in refusal.refusals)
        return
    assert translation.command and translation.files
    backend = load_registry().backends[backend_name]
    if backend.produces == "weights" and backend.runs_here:
        assert translation.total_steps and translation.total_steps > 0


def _skip_if_not_training(backend_name: str) -> None:
    if load_registry().backends[backend_name].produces == "nothing":
        pytest.skip(f"{backend_name} trains nothing (baseline backend)")


def _skip_if_remote(backend_name: str) -> None:
    if not load_registry().backends[backend_name].runs_here:
        pytest.skip(f"{backend_name} trains on another machine: its own tests validate the "
                    "task it launches")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_contract_every_field_is_carried_or_refused(backend_name, example, tmp_path,
                                                   stand_in_model):
    _skip_if_not_training(backend_name)
    translation, refusal = translate_example(backend_name, example, tmp_path, stand_in_model)
    if refusal is not None:
        pytest.skip(f"refused as a whole: {refusal}")
    missing = [p for p in backend_fields() if p not in translation.carried]
    assert missing == [], f"{backend_name} neither carries nor refuses: {missing}"


def test_contract_every_carried_field_changes_the_native_files_or_is_refused(
        backend_name, tmp_path, stand_in_model):
    """Each field the backend says it carries, given another valid value, changes what it
    writes, or is refused by its path, or noted; for every example spec, with no backend
    environment (translation only)."""
    _skip_if_not_training(backend_name)
    backend = load_registry().get(backend_name)
    problems, checked = [], 0
    for example in EXAMPLES:
        outcomes = carried_field_outcomes(backend, example, tmp_path / example.stem,
                                          stand_in_model)
        if outcomes is None:
            continue
        checked += 1
        problems += [f"{example.name}: {path}: {outcome}" for path, outcome in outcomes.items()
                     if outcome.startswith(IGNORED)]
    if not checked:
        pytest.skip(f"{backend_name} refuses every example spec as a whole")
    assert problems == [], f"{backend_name} declares carried but ignores: {problems}"


def test_contract_check_is_cheap_and_explains_itself(backend_name, tmp_path):
    import importlib
    import sys

    before = set(sys.modules)
    backend = load_registry().get(backend_name)
    avail = backend.check(BackendEnv(backend_name, tmp_path / "none"))
    heavy = {"torch", "mlx", "unsloth", "transformers", "axolotl", "llamafactory"}
    loaded = {m.split(".")[0] for m in set(sys.modules) - before}
    assert avail.reason
    if backend.produces == "weights" and backend.environment == "own":  # in its own venv
        assert not avail.ok and "jessy env create" in avail.reason
    assert not (loaded & heavy), loaded
    importlib.invalidate_caches()


# --- real runs: need the backend's environment ---------------------------------------------

@pytest.fixture
def backend_env(backend_name):
    """The backend's environment, ready to train in: its own venv (`jessy env create`), or,
    for `environment = "jessy"`, jessy's interpreter once `check` finds its libraries there.
    Skips otherwise, unless JESSY_REQUIRE_BACKENDS names the backend (then it fails)."""
    import os

    _skip_if_not_training(backend_name)
    _skip_if_remote(backend_name)
    backend = load_registry().get(backend_name)
    env = BackendEnv(backend_name)
    if backend.environment == "jessy":
        avail = backend.check(env)
        ready = avail.ok
        message = f"{backend_name} cannot run in jessy's environment: {avail.reason}"
    else:
        ready = env.exists()
        message = f"{backend_name} environment missing (jessy env create {backend_name})"
    if not ready:
        required = {b.strip() for b in os.environ.get("JESSY_REQUIRE_BACKENDS", "").split(",")}
        if backend_name in required:
            pytest.fail(message + " but JESSY_REQUIRE_BACKENDS requires it")
        pytest.skip(message)
    return env


def tiny_spec(tmp_path: Path, model: str, data: Path, name: str = "contract",
              training: dict | None = None, method: str = "lora", **sections):
    """A small real-training spec (rank-4 LoRA, or `method: full`, a few steps) for tests of
    any backend."""
    import yaml

    doc = {"name": name,
           "model": {"name_or_path": str(model), "max_seq_length": 128},
           "data": {"train": str(data), "validation_split": 0.25},
           "method": method,
           **({} if method == "full" else {"lora": {"r": 4, "alpha": 8}}),
           "training": {"max_steps": 8, "batch_size": 4, "learning_rate": 0.01,
                        "logging_steps": 1, "lr_scheduler": "constant", **(training or {})}}
    doc.update(sections)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_spec(path)


def _spec(tmp_path: Path, model: str, data: Path):
    return tiny_spec(tmp_path, model, data)


def _run(backend_name, spec, tmp_path):
    from .run.runner import Runner

    return Runner(load_registry(), console=lambda m: None).run(spec, [backend_name],
                                                               tmp_path / "runs")


def peft_output_change(model: str, adapter: Path) -> float:
    """Largest change the adapter makes to the base model's logits on a fixed input."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    ids = torch.tensor([list(range(1, 12))])
    with torch.no_grad():
        plain = base(ids).logits.clone()
        tuned = PeftModel.from_pretrained(base, str(adapter))(ids).logits
    return float((tuned - plain).abs().max())


def test_contract_tiny_run_is_valid_learns_and_loads_in_peft(backend_name, backend_env,
                                                              tiny_model, toy_data, tmp_path):
    _skip_if_not_training(backend_name)
    import jsonschema

    result = _run(backend_name, _spec(tmp_path, tiny_model, toy_data), tmp_path)
    m = result.manifest
    assert m["status"] == "succeeded", m["failure"]
    jsonschema.validate(json.loads((result.path / "run.json").read_text()),
                        load_schema("run-manifest"))
    events = [json.loads(x) for x in (result.path / "metrics.jsonl").open()]
    for e in events:
        jsonschema.validate(e, load_schema("metrics-event"))
    losses = [e["loss"] for e in events if e.get("loss") is not None]
    assert len(losses) >= 4 and sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, losses
    assert (result.path / "plots" / "loss.png").exists()
    assert peft_output_change(tiny_model, result.path / "adapter") > 1e-3


def test_contract_wrong_model_path_is_classified_with_log(backend_name, backend_env, toy_data,
                                                          tmp_path):
    _skip_if_not_training(backend_name)
    empty = tmp_path / "empty-model"
    empty.mkdir()
    result = _run(backend_name, _spec(tmp_path, str(empty), toy_data), tmp_path)
    attempt = result.manifest["attempts"][0]
    assert result.manifest["status"] == "failed"
    assert attempt["failure"]["kind"] in ("config_rejected", "crashed")
    assert (result.path / attempt["dir"] / "stderr.log").stat().st_size > 0


def test_contract_unreadable_data_is_a_data_error_before_any_attempt(backend_name, tiny_model,
                                                                     tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "response": "a"}\n{not json}\n')
    result = _run(backend_name, _spec(tmp_path, tiny_model, bad), tmp_path)
    assert result.manifest["failure"]["kind"] == "data_error"
    assert f"{bad}:2:" in result.manifest["failure"]["reason"]
    assert result.manifest["attempts"] == []


def test_contract_unhonourable_spec_is_config_rejected(backend_name, backend_env, tiny_model,
                                                       toy_data, tmp_path, monkeypatch):
    _skip_if_not_training(backend_name)
    monkeypatch.delenv("JESSY_MASTER_ADDR", raising=False)
    spec = _spec(tmp_path, tiny_model, toy_data)
    spec.data["resources"] = {**spec.data["resources"], "nodes": 2}  # no rendezvous given
    result = _run(backend_name, spec, tmp_path)
    attempt = result.manifest["attempts"][0]
    assert attempt["status"] == "failed", attempt
    assert attempt["failure"]["kind"] == "config_rejected"
    assert (result.path / attempt["dir"] / "refused.txt").read_text().startswith("/resources")


def test_contract_full_fine_tuning_writes_a_loadable_model(backend_name, backend_env,
                                                           tiny_model, toy_data, tmp_path):
    """method: full ends in model/, a plain Hugging Face folder with every weight of the
    base model, that transformers loads on its own and that answers differently."""
    _skip_if_not_training(backend_name)
    import torch
    from transformers import AutoModelForCausalLM

    spec = tiny_spec(tmp_path, tiny_model, toy_data, training={"learning_rate": 0.001},
                     method="full")
    result = _run(backend_name, spec, tmp_path)
    m = result.manifest
    assert m["status"] == "succeeded", m["failure"]
    assert m["adapter"] is None and not (result.path / "adapter").exists()
    assert m["full_model"]["path"] == "model" and m["full_model"]["format"] == "hf"
    losses = [json.loads(x).get("loss") for x in (result.path / "metrics.jsonl").open()]
    losses = [x for x in losses if x is not None]
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, losses
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    tuned = AutoModelForCausalLM.from_pretrained(result.path / "model", dtype=torch.float32)
    assert m["full_model"]["parameters"] == sum(
        t.numel() for t in base.state_dict().values()) - (
        base.lm_head.weight.numel() if base.config.tie_word_embeddings else 0)
    ids = torch.tensor([list(range(1, 12))])
    with torch.no_grad():
        change = (tuned(ids).logits - base(ids).logits).abs().max()
    assert float(change) > 1e-3
