"""The canonical spec: examples validate, every kind of bad input is named precisely."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import SPEC_EXAMPLES, write_spec

from jessy_adapters.spec import SpecError, load_spec

MINIMAL = """\
model:
  name_or_path: builtin:smollm2-135m-instruct
data:
  train: data.jsonl
"""


def issues_of(tmp_path, text):
    path = write_spec(tmp_path / "spec.yaml", text)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    return err.value.issues


@pytest.mark.parametrize("example", sorted(SPEC_EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_validates(example):
    spec = load_spec(example)
    assert spec["model"]["name_or_path"]


def test_defaults_come_from_the_schema(tmp_path):
    spec = load_spec(write_spec(tmp_path / "s.yaml", MINIMAL))
    assert spec["method"] == "lora"
    assert spec["lora"]["r"] == 8 and spec["lora"]["alpha"] == 16
    assert spec["training"]["max_grad_norm"] == 1.0
    assert spec["data"]["validation_split"] == 0.1
    assert spec["model"]["trust_remote_code"] is False
    assert spec["data"]["fields"]["prompt"] == "prompt"


def test_seed_config_is_expressed_exactly():
    """The seed report's Ek A CONFIG, value by value."""
    spec = load_spec(SPEC_EXAMPLES / "jessy-seed.yaml")
    t, lora = spec["training"], spec["lora"]
    assert spec["model"]["name_or_path"] == "unsloth/gemma-2-2b"
    assert spec["model"]["max_seq_length"] == 2048
    assert spec["method"] == "qlora"
    assert (lora["r"], lora["alpha"], lora["dropout"]) == (16, 32, 0.1)
    assert lora["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert (t["batch_size"], t["gradient_accumulation_steps"]) == (4, 4)
    assert (t["learning_rate"], t["epochs"], t["warmup_steps"]) == (5e-5, 3, 100)
    assert (t["lr_scheduler"], t["optimizer"]) == ("cosine", "adamw_8bit")


@pytest.mark.parametrize("patch, path, words", [
    ("training:\n  learning_rate: 0\n", "/training/learning_rate", "> 0"),
    ("training:\n  learning_rate: -1\n", "/training/learning_rate", "> 0"),
    ("training:\n  batch_size: 0\n", "/training/batch_size", ">= 1"),
    ("lora:\n  dropout: 1.0\n", "/lora/dropout", "< 1"),
    ("lora:\n  r: eight\n", "/lora/r", "expected integer"),
    ("method: qlorra\n", "/method", "one of lora, qlora, full"),
    ("lora:\n  target_modules: [q_proj, qq_proj]\n", "/lora/target_modules", "q_proj"),
    ("lora:\n  layers: first\n", "/lora/layers", "'all'"),
    ("training:\n  lr_scheduler: cosin\n", "/training/lr_scheduler", "cosine"),
    ("data2: {}\n", "/data2", "unknown key"),
])
def test_bad_values_are_named(tmp_path, patch, path, words):
    issues = issues_of(tmp_path, MINIMAL + patch)
    match = [i for i in issues if i.path == path]
    assert match, [i.path for i in issues]
    assert words in match[0].message


def test_unknown_key_is_an_error_with_its_line(tmp_path):
    text = MINIMAL + "training:\n  epochs: 1\n  lerning_rate: 0.001\n"
    issues = issues_of(tmp_path, text)
    assert len(issues) == 1
    assert issues[0].path == "/training/lerning_rate"
    assert issues[0].line == 7
    assert "learning_rate" in issues[0].message  # lists what is allowed


def test_all_errors_at_once(tmp_path):
    text = MINIMAL + "training:\n  learning_rate: -1\n  batch_size: 0\nlora:\n  dropout: 2\n"
    paths = {i.path for i in issues_of(tmp_path, text)}
    assert {"/training/learning_rate", "/training/batch_size", "/lora/dropout"} <= paths


def test_missing_required(tmp_path):
    issues = issues_of(tmp_path, "model:\n  name_or_path: x\n")
    assert any("'data' is a required property" in i.message for i in issues)


def test_yaml_syntax_error_has_a_line(tmp_path):
    issues = issues_of(tmp_path, MINIMAL + "training: [unclosed\n")
    assert issues[0].line is not None and "YAML" in issues[0].message


def test_yaml_is_loaded_safely(tmp_path):
    text = MINIMAL + "name: !!python/object/apply:os.system ['echo pwned']\n"
    issues = issues_of(tmp_path, text)
    assert "YAML" in issues[0].message


def test_validation_file_and_split_are_exclusive(tmp_path):
    issues = issues_of(tmp_path, MINIMAL.replace("data.jsonl", "data.jsonl\n  validation: v.jsonl"
                                                 "\n  validation_split: 0.2"))
    assert issues[0].path == "/data/validation_split"


def test_cli_validate_exit_code_and_message(tmp_path):
    path = write_spec(tmp_path / "bad.yaml", MINIMAL + "training:\n  learning_rate: -1\n")
    proc = subprocess.run([sys.executable, "-m", "jessy_adapters.cli", "validate", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"{path}:6: /training/learning_rate: expected a value > 0 (got -1)" in proc.stderr


def test_cli_validate_ok(tmp_path):
    path = write_spec(tmp_path / "good.yaml", MINIMAL)
    (tmp_path / "data.jsonl").write_text('{"prompt": "Hi?", "response": "Hello."}\n')
    proc = subprocess.run([sys.executable, "-m", "jessy_adapters.cli", "validate", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout


def test_exponent_learning_rates_read_as_numbers(tmp_path):
    """PyYAML reads `5e-5` as a string (YAML 1.1); the seed report writes rates that way."""
    path = write_spec(tmp_path / "s.yaml", """\
model:
  name_or_path: /m
data:
  train: /d.jsonl
training:
  learning_rate: 5e-5
  weight_decay: 1E-2
  max_grad_norm: 3e0
""")
    spec = load_spec(path)
    t = spec["training"]
    assert t["learning_rate"] == 5e-5 and t["weight_decay"] == 0.01
    assert t["max_grad_norm"] == 3.0


def test_other_strings_for_numbers_are_still_errors(tmp_path):
    path = write_spec(tmp_path / "s.yaml", """\
model:
  name_or_path: /m
  max_seq_length: 2e3
data:
  train: /d.jsonl
training:
  learning_rate: fast
""")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    rendered = [i.render(str(path)) for i in err.value.issues]
    assert any(":7: /training/learning_rate: expected number" in r for r in rendered), rendered
    assert any("/model/max_seq_length" in r for r in rendered), rendered  # integers stay strict
