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
import re
from pathlib import Path

import pytest

from .backend import RunInputs, TranslationRefused
from .data import prepare
from .envs import BackendEnv
from .paths import SPECS_DIR
from .plugins import load_registry
from .spec import CORE_FIELDS, backend_fields, leaf_paths, load_schema, load_spec  # noqa: F401


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


# --- a carried field changes the native files, or is refused ------------------------------
# `carried` is the backend's own word. The check below holds it to that word: each carried
# field is given another valid value (derived from the JSON Schema), and the translation
# must then differ (its files, command or environment: what `jessy translate` writes), or
# refuse naming the field, or say why in a note (the three ways docs/plugins.md allows).

LIVE_WHEN = {
    "/training/epochs": {"/training/max_steps": None},
    "/training/warmup_steps": {"/training/warmup_steps": 1},
    "/training/lr_scheduler": {"/training/warmup_steps": 0},
    "/training/warmup_ratio": {"/training/warmup_steps": 0},
    "/tracking/project": {"/tracking/report_to": ["wandb"]},
    "/resources/zero_stage": {"/resources/strategy": "deepspeed"},
    "/resources/offload": {"/resources/strategy": "deepspeed", "/resources/zero_stage": 3},
}
"""Fields that mean something only when others (or they themselves) have these values, set
on both sides of the comparison: the length in epochs counts only without max_steps (the HF
Trainer's rule); warmup only when shorter than the run (the schedule cuts it to the run's
length: jessy-seed's 100 warmup updates are more than its 45) and the scheduler only after
it; a warmup ratio only without warmup_steps (the spec allows one of them); the project only when
some reporter is asked; the ZeRO stage and offload only with a sharding strategy. A backend
that refuses such a setting refuses the field with it ("refused in context")."""

UNDERIVED: dict[str, str] = {}
"""Carried fields whose other value cannot be derived, each with why; they are reported as
"not checked". /model/name_or_path is derived (a second stand-in model folder, since the
core resolves the name and hands the backend RunInputs.model_path)."""

IGNORED = "ignored"
"""The outcome of a field the backend carries but whose change reaches nothing."""


def schema_at(path: str) -> dict:
    schema = load_schema("spec")
    for part in path.strip("/").split("/"):
        schema = schema["properties"][part]
    return schema


def _within(schema: dict, x) -> bool:
    return (("minimum" not in schema or x >= schema["minimum"])
            and ("exclusiveMinimum" not in schema or x > schema["exclusiveMinimum"])
            and ("maximum" not in schema or x <= schema["maximum"])
            and ("exclusiveMaximum" not in schema or x < schema["exclusiveMaximum"]))


def other_values(schema: dict, value) -> list:
    """Valid-looking values other than `value`, nearest first, from the field's schema: an
    integer +1 (or -1) within its bounds, a number nudged within its bounds, another enum
    value, a boolean flipped, a list with one item more or fewer, another oneOf branch.
    Candidates, not verdicts: each is still validated as part of a whole spec."""
    if "enum" in schema:
        return [v for v in schema["enum"] if v != value]
    if "const" in schema:
        return [] if schema["const"] == value else [schema["const"]]
    if "oneOf" in schema:
        return [v for alt in schema["oneOf"] for v in other_values(alt, value)]
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    out: list = []
    if "boolean" in types and isinstance(value, bool):
        out.append(not value)
    if "integer" in types:
        if isinstance(value, int) and not isinstance(value, bool):
            out += [x for x in (value + 1, value - 1) if _within(schema, x)]
        elif value is None:
            out += [x for x in (schema.get("minimum", 1), 1, 2) if _within(schema, x)][:1]
    if "number" in types:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            nudges = (value * 1.5, value / 2) if value else (0.1, 0.5, 1.0)
            out += [float(x) for x in nudges if _within(schema, x) and x != value]
        elif value is None:
            out += [x for x in (0.1, 0.5, 1.0) if _within(schema, x)][:1]
    if "string" in types and (value is None or isinstance(value, str)):
        text = f"{value}-b" if value else "jessy-mutation"
        if re.search(schema.get("pattern", ""), text):
            out.append(text)
    if "array" in types:
        items = schema.get("items", {})
        if isinstance(value, list):
            if len(value) > schema.get("minItems", 0):
                out.append(value[:-1])
            extra = [x for x in items.get("enum", []) if x not in value]
            if "enum" not in items and items.get("type") == "integer":
                extra = [max(value, default=-1) + 1]
            out += [value + extra[:1]] if extra else []
        else:  # another branch's value (a oneOf's 'all'): the shortest list of this one
            least = max(1, schema.get("minItems", 0))
            out.append(list(items.get("enum", [items.get("minimum", 0)])[:least]))
    if "null" in types and value is not None:
        out.append(None)
    return out


def _nested(path: str, value) -> dict:
    *parents, key = path.strip("/").split("/")
    out: dict = {key: value}
    for part in reversed(parents):
        out = {part: out}
    return out


def _overrides(changes: dict) -> dict:
    out: dict = {}
    for path, value in changes.items():
        _deep_update(out, _nested(path, value))
    return out


def _deep_update(into: dict, extra: dict) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _deep_update(into[k], v)
        else:
            into[k] = v


def _native(translation) -> dict:
    """What `jessy translate` writes of a translation (`attempt.write_native`): its files,
    and command.txt's command and environment."""
    return {"files": translation.files, "command": translation.command,
            "env": translation.env}


def _translate(backend, spec, inputs, tmp: Path):
    try:
        return backend.translate(spec, inputs, tmp / "attempt", BackendEnv(backend.name)), None
    except TranslationRefused as exc:
        return None, exc


def _names(refusal: TranslationRefused, path: str) -> bool:
    return any(path == r.spec_path or path.startswith(r.spec_path.rstrip("/") + "/")
               for r in refusal.refusals)


def _spec_with(example: Path, changes: dict):
    """The example spec as if its author had also written `changes` (spec path -> value):
    validated with defaults, and its `raw` (what a bundle copies) holding them too."""
    import copy

    extra = _overrides(changes)
    spec = load_spec(example, overrides=extra)
    _deep_update(spec.raw, copy.deepcopy(extra))
    return spec


def _effect(path: str, before, after, refused: TranslationRefused | None) -> str | None:
    """What changing `path` did to the translation; None: nothing at all."""
    if refused is not None:
        if _names(refused, path):
            return "refused"
        return f"{IGNORED}: refused, but naming {[r.spec_path for r in refused.refusals]}"
    if _native(after) != _native(before):
        return "changed"
    if after.notes != before.notes:
        said = [n for n in after.notes if n not in before.notes] or \
            [f"no longer: {n}" for n in before.notes if n not in after.notes]
        return f"noted: {said}"
    return None


def carried_field_outcomes(backend, example: Path, tmp: Path, model_dir: Path
                           ) -> dict[str, str] | None:
    """For each field `backend` carries when translating `example`, what another value of
    it does; None when the example is refused as a whole.

    The field's other values (`other_values`, nearest first; for /model/name_or_path a
    second stand-in model folder, as the core resolves the name into RunInputs.model_path)
    are tried until one has an effect, since some are equivalent where the check runs
    (`dtype: float32` is what `auto` means on a CPU). Outcomes: "changed", "refused",
    "noted: [...]", "refused in context: ..." (see LIVE_WHEN), "not checked: why" (see
    UNDERIVED), and the failures, starting with IGNORED: no valid other value has any
    effect, or a refusal that does not name the field.

    Pure, like translation itself: nothing runs, and no backend environment is needed."""
    import shutil
    from dataclasses import replace

    from .spec import SpecError

    tmp.mkdir(parents=True, exist_ok=True)
    spec = load_spec(example)
    inputs = RunInputs(str(model_dir), prepare(spec, tmp / "data"))
    base, refused = _translate(backend, spec, inputs, tmp)
    if refused is not None:
        return None
    again, _ = _translate(backend, spec, inputs, tmp)
    assert again is not None and _native(again) == _native(base), (
        f"{backend.name}: the same spec translated twice gave different native files; "
        "translation must be pure")
    other_model = tmp / "other-model"
    if not other_model.exists():
        shutil.copytree(model_dir, other_model)
    bases: dict[str, tuple] = {}
    outcomes: dict[str, str] = {}
    for path in [p for p in backend_fields() if p in base.carried]:
        if path in UNDERIVED:
            outcomes[path] = f"not checked: {UNDERIVED[path]}"
            continue
        context = LIVE_WHEN.get(path, {})
        key = json.dumps(context, sort_keys=True)
        if key not in bases:
            try:
                live = _spec_with(example, context)
            except SpecError as exc:
                raise AssertionError(f"LIVE_WHEN[{path!r}] makes {example.name} invalid: "
                                     f"{exc}") from None
            bases[key] = (live, *_translate(backend, live, inputs, tmp))
        live, before, before_refused = bases[key]
        if before is None:
            outcomes[path] = f"refused in context {context}: {before_refused}"
            continue
        value = live.data
        for part in path.strip("/").split("/"):
            value = value[part]
        if path == "/model/name_or_path":
            candidates = [str(other_model)]
            run_inputs = replace(inputs, model_path=str(other_model))
        else:
            candidates, run_inputs = other_values(schema_at(path), value), inputs
        tried, outcome = [], None
        for candidate in candidates:
            try:
                mutated = _spec_with(example, {**context, path: candidate})
            except SpecError:
                continue  # e.g. method: full beside a lora section
            after, after_refused = _translate(backend, mutated, run_inputs, tmp)
            effect = _effect(path, before, after, after_refused)
            if effect is not None:
                same = f"; the same for {tried}" if tried else ""
                outcome = f"{effect} ({value!r} -> {candidate!r}{same})"
                break
            tried.append(candidate)
        if outcome is None and not tried:
            outcome = (f"{IGNORED}? no valid other value of {value!r} among {candidates}: "
                       "give the check a LIVE_WHEN context or an UNDERIVED reason")
        elif outcome is None:
            outcome = (f"{IGNORED}: the native files, refusals and notes are the same for "
                       f"{value!r} and {tried}")
        outcomes[path] = outcome
    return outcomes


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
