"""The contract's mutation check (`test_contract_every_carried_field_changes_the_native_files_
or_is_refused`): each field a backend says it carries, given another valid value derived
from the spec's JSON Schema, must change what `jessy translate` writes, be refused by its
path, or be noted. Pure translation, no pytest and no backend environment needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..backend import RunInputs, TranslationRefused
from ..data import prepare
from ..envs import BackendEnv
from ..spec import backend_fields, deep_merge, load_schema, load_spec

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
        deep_merge(out, _nested(path, value))
    return out


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
    deep_merge(spec.raw, copy.deepcopy(extra))
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

    from ..spec import SpecError

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


