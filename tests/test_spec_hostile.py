"""Spec loading against hostile input, in process: the exact limits, every typed field of the
schema, and that safe_load's meaning is kept for ordinary specs."""

from __future__ import annotations

import time
import tracemalloc

import pytest
import yaml
from conftest import SPEC_EXAMPLES, write_spec

from jessy_adapters import yaml_limits
from jessy_adapters.spec import SpecError, load_schema, load_spec, parse, spec_from_dict

MINIMAL = {"model": {"name_or_path": "builtin:smollm2-135m-instruct"},
           "data": {"train": "data.jsonl"}}
HOSTILE = SPEC_EXAMPLES.parents[1] / "tests" / "hostile"


def issues_of(tmp_path, text, name="spec.yaml"):
    with pytest.raises(SpecError) as err:
        load_spec(write_spec(tmp_path / name, text))
    return err.value.issues


def typed_paths(kind: str, schema: dict | None = None, prefix: str = "") -> list[str]:
    """Every field the schema types as `kind` (integer or number), found by walking it."""
    schema = schema or load_schema("spec")
    out = []
    for name, sub in schema.get("properties", {}).items():
        types = sub.get("type", [])
        if kind in ([types] if isinstance(types, str) else types):
            out.append(f"{prefix}/{name}")
        out.extend(typed_paths(kind, sub, f"{prefix}/{name}"))
    return out


def with_value(path: str, value) -> dict:
    import copy

    doc = copy.deepcopy(MINIMAL)
    *parents, key = path.strip("/").split("/")
    target = doc
    for part in parents:
        target = target.setdefault(part, {})
    target[key] = value
    return doc


def test_the_schema_walk_finds_the_fields_the_issue_names():
    assert {"/training/max_steps", "/training/batch_size", "/lora/r",
            "/resources/zero_stage"} <= set(typed_paths("integer"))
    assert {"/training/epochs", "/training/learning_rate",
            "/data/validation_split"} <= set(typed_paths("number"))


def field(path: str) -> dict:
    schema = load_schema("spec")
    for part in path.strip("/").split("/"):
        schema = schema["properties"][part]
    return schema


@pytest.mark.parametrize("path", typed_paths("integer"))
def test_every_integer_field_refuses_a_float(tmp_path, path):
    """A value the field would take as an integer (its default, or its minimum), as a float."""
    schema = field(path)
    whole = schema["default"] if schema.get("default") is not None else schema.get("minimum", 1)
    issues = issues_of(tmp_path, yaml.safe_dump(with_value(path, float(whole))))
    assert [(i.path, "expected an integer" in i.message) for i in issues] == [(path, True)]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")],
                         ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("path", typed_paths("number") + typed_paths("integer"))
def test_every_numeric_field_refuses_nan_and_infinity(tmp_path, path, value):
    issues = issues_of(tmp_path, yaml.safe_dump(with_value(path, value)))
    assert {i.path for i in issues} == {path}  # zero_stage also says: not one of 1, 2, 3
    assert any("NaN and infinity are refused" in i.message for i in issues)


def test_in_memory_specs_refuse_them_too():
    """--resume validates the run's spec.yaml through spec_from_dict."""
    with pytest.raises(SpecError, match="/training/epochs: expected number; NaN"):
        spec_from_dict(with_value("/training/epochs", float("inf")))


@pytest.mark.parametrize("text, number", [("5e-5", 5e-5), ("1E-2", 0.01), ("+3e-1", 0.3)])
def test_exponent_strings_are_still_numbers(tmp_path, text, number):
    spec = load_spec(write_spec(tmp_path / "s.yaml", yaml.safe_dump(MINIMAL) +
                                f"training:\n  learning_rate: {text}\n  weight_decay: 0\n"))
    assert spec["training"]["learning_rate"] == number


@pytest.mark.parametrize("text", ["1e999", "-1e999", ".nan", "nan", ".inf", "inf"])
def test_no_spelling_of_nan_or_infinity_slips_through(tmp_path, text):
    issues = issues_of(tmp_path, yaml.safe_dump(MINIMAL) + f"training:\n  epochs: {text}\n")
    assert [i.path for i in issues] == ["/training/epochs"]


def test_whole_floats_stay_fine_where_numbers_are_wanted(tmp_path):
    spec = load_spec(write_spec(tmp_path / "s.yaml", yaml.safe_dump(MINIMAL) +
                                "training:\n  epochs: 2.0\nlora:\n  alpha: 16.0\n"))
    assert spec["training"]["epochs"] == 2.0 and spec["lora"]["alpha"] == 16.0


def flat_list(items: int) -> str:
    return "[" + ", ".join(["1"] * items) + "]"


def nested_lists(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_node_limit_is_exact():
    assert yaml_limits.load(flat_list(yaml_limits.MAX_NODES - 1))[0]  # the list is a node
    with pytest.raises(yaml_limits.YamlInputError, match="more than 10,000 values"):
        yaml_limits.load(flat_list(yaml_limits.MAX_NODES))


def test_depth_limit_is_exact():
    assert yaml_limits.load(nested_lists(yaml_limits.MAX_DEPTH))[0]
    with pytest.raises(yaml_limits.YamlInputError, match="nested more than 50 levels") as err:
        yaml_limits.load(nested_lists(yaml_limits.MAX_DEPTH + 1))
    assert err.value.line == 1 and err.value.path == "/0" * yaml_limits.MAX_DEPTH


def test_aliases_count_as_what_they_expand_to():
    """A 1,111-node list and eight aliases to it, in a list: 1 + 9 * 1,111 = 10,000 nodes."""
    text = f"- &a {flat_list(1_110)}\n" + "- *a\n" * 8
    assert len(yaml_limits.load(text)[0]) == 9
    with pytest.raises(yaml_limits.YamlInputError, match="aliases are expanded"):
        yaml_limits.load(text + "- *a\n")


def test_an_alias_bomb_is_refused_fast_and_small():
    text = (HOSTILE / "alias-bomb.yaml").read_text()
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(SpecError, match="aliases are expanded"):
        parse(text, "alias-bomb.yaml")
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 1 and peak < 200 * 2**20, (elapsed, peak)


def test_the_largest_spec_parses_within_the_time_bound():
    """1 MiB of blank lines, the slowest input found for PyYAML's scanner (about 1.5 s here)."""
    started = time.perf_counter()
    yaml_limits.load("name: x\n" + "\n" * (yaml_limits.MAX_BYTES - 8))
    assert time.perf_counter() - started < 5


def test_duplicate_keys_name_both_lines(tmp_path):
    text = yaml.safe_dump(MINIMAL) + "training: {epochs: 1}\nlora: {r: 8}\ntraining: {epochs: 2}\n"
    [issue] = issues_of(tmp_path, text)
    assert (issue.path, issue.line) == ("/training", 7)
    assert "first at line 5, again at line 7" in issue.message


@pytest.mark.parametrize("keys", ["1: a\n1: b\n", "true: a\nyes: b\n", "'x': 1\nx: 2\n",
                                  "null: a\n~: b\n"])
def test_keys_are_compared_as_the_data_spells_them(keys):
    with pytest.raises(yaml_limits.YamlInputError, match="duplicate key"):
        yaml_limits.load(keys)


def test_merge_keys_may_be_overridden_but_not_repeated():
    data, _ = yaml_limits.load("base: &b {x: 1, y: 2}\nnew:\n  <<: *b\n  y: 3\n")
    assert data["new"] == {"x": 1, "y": 3}
    with pytest.raises(yaml_limits.YamlInputError, match="duplicate key 'y'"):
        yaml_limits.load("base: &b {x: 1}\nnew:\n  <<: *b\n  y: 3\n  y: 4\n")


def test_lines_follow_the_data_through_aliases_and_odd_keys():
    _, lines = yaml_limits.load("a: &x\n  b: 1\nc: *x\nnull: 2\n")
    assert lines["/a/b"] == 2 and lines["/c/b"] == 2 and lines["/None"] == 4


@pytest.mark.parametrize("text", ["a: &r [*r]\n", "a: &r {b: *r}\n"])
def test_a_recursive_alias_is_refused(text):
    with pytest.raises(yaml_limits.YamlInputError, match="recursive alias"):
        yaml_limits.load(text)


def test_ordinary_specs_mean_what_safe_load_says(tmp_path):
    files = [*SPEC_EXAMPLES.glob("*.yaml"), *HOSTILE.glob("ok-*.yaml")]
    assert len(files) >= 5
    for path in files:
        text = path.read_text(encoding="utf-8-sig")
        assert yaml_limits.load(text)[0] == yaml.safe_load(text), path


def test_size_limit_is_exact(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_bytes(b"a" * 100)
    assert yaml_limits.read_text(path, limit=100) == "a" * 100
    with pytest.raises(yaml_limits.YamlInputError, match="100 bytes, more than the 99 "):
        yaml_limits.read_text(path, limit=99)


def test_the_undecodable_byte_is_located(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_bytes(b"a: 1\nb: caf\xe9\n")
    with pytest.raises(yaml_limits.YamlInputError) as err:
        yaml_limits.read_text(path)
    assert "byte 0xe9 at offset 11 (line 2, column 7)" in err.value.message
    assert err.value.line == 2 and "UTF-8" in err.value.message


@pytest.mark.timeout(10)
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    import os

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(tmp_path / "pipe.yaml")
    with pytest.raises(SpecError, match="is a FIFO"):
        load_spec(tmp_path / "pipe.yaml")


@pytest.mark.parametrize("stem", ["my spec", "run@home", ".hidden", "-rf", "x" * 101, "café"])
def test_a_file_name_that_cannot_be_a_run_name_asks_for_name(tmp_path, stem):
    [issue] = issues_of(tmp_path, yaml.safe_dump(MINIMAL), name=f"{stem}.yaml")
    assert issue.path == "/name" and "add a name: to the spec" in issue.message
    assert "A-Za-z0-9" in issue.message  # says which characters are allowed
    load_spec(write_spec(tmp_path / f"{stem}.yaml", yaml.safe_dump({**MINIMAL, "name": "ok"})))


@pytest.mark.parametrize("stem", ["contract", "wheel", "cli-e2e", "qlora-test", "plan-d",
                                  "jessy-seed", "quickstart", "run_2.v1", "x" * 100])
def test_names_in_use_still_work(tmp_path, stem):
    assert load_spec(write_spec(tmp_path / f"{stem}.yaml", yaml.safe_dump(MINIMAL))).name == stem
    named = yaml.safe_dump({**MINIMAL, "name": stem})
    assert load_spec(write_spec(tmp_path / "s.yaml", named)).name == stem


def test_errors_do_not_echo_a_huge_value(tmp_path):
    [issue] = issues_of(tmp_path, yaml.safe_dump({**MINIMAL, "name": "x" * 100_000}))
    assert len(issue.render("s.yaml")) < 400


def test_thousands_of_problems_are_counted_not_listed(tmp_path):
    keys = "".join(f"key{i}: {i}\n" for i in range(3_000))
    issues = issues_of(tmp_path, yaml.safe_dump(MINIMAL) + keys)
    assert len(issues) == 51 and issues[-1].message == "and 2,950 more problem(s), not listed"
