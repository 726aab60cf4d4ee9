"""The contract's mutation check (issue 17): a field a backend declares carried, given another
valid value, must change the native files, or be refused by its path, or be noted.

Tests of the test: fake backends that declare a field carried but ignore it, refuse it under
another path, only note it, or translate impurely, each get the verdict they deserve, from
`carried_field_outcomes` and from the contract test itself. Then the check on the real
translators (pure, no backend environment): every built-in backend that trains, and the
example third-party plugin in examples/jessy-backend-peft/.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest

from jessy_adapters import contract
from jessy_adapters.backend import Availability, Backend, Refusal, Translation, TranslationRefused
from jessy_adapters.contract import EXAMPLES
from jessy_adapters.plugins import Registry, load_registry
from jessy_adapters.spec import backend_fields, leaf_paths
from jessy_adapters.testing.mutations import (
    IGNORED,
    LIVE_WHEN,
    UNDERIVED,
    carried_field_outcomes,
    other_values,
    schema_at,
)

QUICKSTART = next(p for p in EXAMPLES if p.name == "quickstart.yaml")
_counter = itertools.count()


class Faithful(Backend):
    """Carries every field: its native file is the whole resolved spec, and the model folder."""

    name = "faithful"

    def check(self, env, require_accelerator=False):
        return Availability(True, "fake")

    def config(self, spec, inputs) -> dict:
        return {"spec": spec.data, "model": inputs.model_path}

    def notes(self, spec) -> list[str]:
        return []

    def translate(self, spec, inputs, attempt_dir, env):
        return Translation(files={"cfg.json": json.dumps(self.config(spec, inputs),
                                                         sort_keys=True)},
                           command=["train", str(attempt_dir / "cfg.json")],
                           notes=self.notes(spec),
                           carried={p: "cfg.json" for p in backend_fields()}, total_steps=1)

    def normalise(self, attempt_dir, spec, inputs, adapter_dir):
        return {}


class IgnoresRank(Faithful):
    """Says it carries /lora/r, but writes every field except it."""

    name = "ignores-rank"

    def config(self, spec, inputs):
        cfg = super().config(spec, inputs)
        cfg["spec"] = {**cfg["spec"], "lora": {k: v for k, v in spec["lora"].items()
                                               if k != "r"}}
        return cfg


class NotesRank(IgnoresRank):
    """Drops /lora/r too, but says so: the contract's third way (docs/plugins.md)."""

    name = "notes-rank"

    def notes(self, spec):
        return [] if spec["lora"]["r"] == 8 else [f"rank {spec['lora']['r']}: ignored here"]


class RefusesRankAsAlpha(IgnoresRank):
    """Refuses another rank, but names the wrong field."""

    name = "refuses-rank-as-alpha"

    def translate(self, spec, inputs, attempt_dir, env):
        if spec["lora"]["r"] != 8:
            raise TranslationRefused(self.name, [Refusal("/lora/alpha", "rank 8 only")])
        return super().translate(spec, inputs, attempt_dir, env)


class RefusesRank(RefusesRankAsAlpha):
    name = "refuses-rank"

    def translate(self, spec, inputs, attempt_dir, env):
        if spec["lora"]["r"] != 8:
            raise TranslationRefused(self.name, [Refusal("/lora/r", "rank 8 only")])
        return Faithful.translate(self, spec, inputs, attempt_dir, env)


class Impure(Faithful):
    name = "impure"

    def config(self, spec, inputs):
        return {**super().config(spec, inputs), "nonce": next(_counter)}


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"num_hidden_layers": 30, "model_type": "llama"}))
    return d


def outcomes_of(cls, tmp_path, model_dir, example=QUICKSTART) -> dict[str, str]:
    return carried_field_outcomes(cls(), example, tmp_path / "check", model_dir)


def failures(outcomes: dict[str, str]) -> dict[str, str]:
    return {p: o for p, o in outcomes.items() if o.startswith(IGNORED)}


def test_a_backend_that_carries_everything_passes(tmp_path, model_dir):
    outcomes = outcomes_of(Faithful, tmp_path, model_dir)
    assert failures(outcomes) == {}
    assert set(outcomes) == set(backend_fields())  # every carried field was tried
    assert outcomes["/lora/r"] == "changed (8 -> 9)"
    assert outcomes["/model/name_or_path"].startswith("changed")  # a second model folder


def test_a_field_declared_carried_but_ignored_fails(tmp_path, model_dir):
    assert failures(outcomes_of(IgnoresRank, tmp_path, model_dir)) == {
        "/lora/r": f"{IGNORED}: the native files, refusals and notes are the same for 8 and "
                   "[9, 7]"}


def test_a_refusal_must_name_the_field(tmp_path, model_dir):
    assert outcomes_of(RefusesRank, tmp_path, model_dir)["/lora/r"] == "refused (8 -> 9)"
    assert failures(outcomes_of(RefusesRankAsAlpha, tmp_path, model_dir)) == {
        "/lora/r": f"{IGNORED}: refused, but naming ['/lora/alpha'] (8 -> 9)"}


def test_a_note_saying_why_is_enough(tmp_path, model_dir):
    outcomes = outcomes_of(NotesRank, tmp_path, model_dir)
    assert failures(outcomes) == {}
    assert outcomes["/lora/r"] == "noted: ['rank 9: ignored here'] (8 -> 9)"


def test_an_impure_translation_is_caught(tmp_path, model_dir):
    with pytest.raises(AssertionError, match="translation must be pure"):
        outcomes_of(Impure, tmp_path, model_dir)


@pytest.mark.parametrize("cls, passes", [(Faithful, True), (IgnoresRank, False),
                                         (RefusesRankAsAlpha, False), (NotesRank, True)])
def test_the_contract_test_itself_gives_the_verdict(cls, passes, tmp_path, model_dir,
                                                    monkeypatch):
    registry = Registry()
    registry.register(cls, "test")
    monkeypatch.setattr(contract, "load_registry", lambda: registry)
    run = contract.test_contract_every_carried_field_changes_the_native_files_or_is_refused
    if passes:
        run(cls.name, tmp_path, model_dir)
        return
    with pytest.raises(AssertionError, match=f"{cls.name} declares carried but ignores: "
                                             r"\[.*\.yaml: /lora/r: "):
        run(cls.name, tmp_path, model_dir)


# --- the values tried ----------------------------------------------------------------------

@pytest.mark.parametrize("path, value, first", [
    ("/lora/r", 8, 9),                                   # an integer + 1
    ("/lora/r", 1024, 1023),                             # - 1 at the maximum
    ("/training/learning_rate", 0.001, 0.0015),          # a number nudged
    ("/training/learning_rate", 1, 0.5),                 # within its maximum
    ("/lora/dropout", 0.0, 0.1),                         # away from zero
    ("/training/warmup_ratio", None, 0.1),               # a null number: one inside (0, 1)
    ("/training/max_steps", None, 1),                    # a null integer: its minimum
    ("/training/max_grad_norm", 1.0, 1.5),
    ("/model/trust_remote_code", False, True),           # a boolean flipped
    ("/training/lr_scheduler", "cosine", "constant"),    # another enum value
    ("/resources/zero_stage", 2, 1),                     # an integer enum
    ("/lora/target_modules", "all-linear", ["q_proj"]),  # another oneOf branch
    ("/lora/target_modules", ["q_proj", "v_proj"], "all-linear"),
    ("/lora/layers", "all", [0]),
    ("/tracking/report_to", [], ["wandb"]),              # an array: one item more
    ("/tracking/project", None, "jessy-mutation"),
])
def test_other_values_come_from_the_schema(path, value, first):
    values = other_values(schema_at(path), value)
    assert values[0] == first and value not in values


def test_an_array_loses_or_gains_an_item():
    assert other_values(schema_at("/lora/target_modules"), ["q_proj", "v_proj"]) == [
        "all-linear", ["q_proj"], ["q_proj", "v_proj", "k_proj"]]
    assert other_values(schema_at("/lora/layers"), [3]) == ["all", [3, 4]]
    assert other_values(schema_at("/tracking/report_to"), ["wandb"]) == [[], ["wandb", "mlflow"]]


def test_the_check_s_tables_name_real_fields():
    assert set(LIVE_WHEN) | set(UNDERIVED) <= set(leaf_paths())
    for context in LIVE_WHEN.values():
        assert set(context) <= set(leaf_paths())


# --- the real translators -------------------------------------------------------------------

TRAINING = [n for n in load_registry().names()
            if load_registry().backends[n].produces == "weights"]


def real_outcomes(backend, tmp_path, model_dir) -> dict[str, str]:
    out = {}
    for example in EXAMPLES:
        outcomes = carried_field_outcomes(backend, example, tmp_path / example.stem, model_dir)
        out.update({f"{example.name}: {p}": o for p, o in (outcomes or {}).items()})
    return out


@pytest.mark.parametrize("name", TRAINING)
def test_every_built_in_backend_changes_what_it_writes_for_each_carried_field(
        name, tmp_path, model_dir):
    outcomes = real_outcomes(load_registry().get(name), tmp_path, model_dir)
    assert outcomes, f"{name} refused every example spec"
    assert failures(outcomes) == {}


def test_the_example_third_party_plugin_passes_too(tmp_path, model_dir, monkeypatch):
    root = Path(__file__).resolve().parents[1]
    monkeypatch.syspath_prepend(str(root / "examples" / "jessy-backend-peft"))
    from jessy_peft_example.backend import PeftExampleBackend

    outcomes = real_outcomes(PeftExampleBackend(), tmp_path, model_dir)
    assert outcomes and failures(outcomes) == {}
    sys.modules.pop("jessy_peft_example.backend", None)
    sys.modules.pop("jessy_peft_example", None)
