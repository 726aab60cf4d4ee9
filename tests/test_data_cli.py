"""`jessy data validate|prepare|stats` as a user runs them: messages, files, exit codes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from jessy_adapters.data import check_row
from jessy_adapters.data.tools import (
    TokenCounter,
    make_fields,
    normalise,
    row_problems,
    validate_file,
)


def _data_argv() -> list[str]:
    """`jessy data` through the main CLI, as a user runs it."""
    return ["-m", "jessy_adapters.cli", "data"]


def jessy(*args, env=None, check=False):
    proc = subprocess.run([sys.executable, *_data_argv(), *map(str, args)], check=False,
                          capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def write_lines(path: Path, lines: list) -> Path:
    """Rows as given: dicts become JSON, str/bytes are written verbatim."""
    with open(path, "wb") as fh:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line, ensure_ascii=False)
            fh.write((line.encode() if isinstance(line, str) else line) + b"\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def pr(prompt: str, response: str) -> dict:
    return {"prompt": prompt, "response": response}


def test_help_shows_examples():
    for cmd in ([], ["validate"], ["prepare"], ["stats"]):
        out = jessy(*cmd, "--help", check=True).stdout
        assert "Example:" in out, cmd


# ----------------------------------------------------------------------------- validate

def test_validate_names_every_malformed_row_with_its_line(tmp_path):
    f = write_lines(tmp_path / "d.jsonl", [
        pr("Hi", "Hello"),                      # 1 fine
        '{"prompt": "Hi", "response": ',        # 2 bad JSON
        "[1, 2]",                               # 3 not an object
        {"prompt": "Who?"},                     # 4 missing response
        pr("   ", "Nobody"),                    # 5 empty prompt
        {"prompt": 3, "response": ["a"]},       # 6 two non-strings
        "",                                     # 7 blank: skipped, as at run time
        pr("Bye", "Goodbye"),                   # 8 fine
        b'{"prompt": "caf\xe9", "response": "x"}',  # 9 not UTF-8
    ])
    proc = jessy("validate", f)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    expected = [
        (2, "not valid JSON: Expecting value (column 30)"),
        (3, "expected a JSON object per line, got array"),
        (4, "missing field 'response' (expected a non-empty string)"),
        (5, "field 'prompt' is empty (expected a non-empty string)"),
        (6, "field 'prompt' must be a string, got number"),
        (6, "field 'response' must be a string, got array"),
        (9, "not valid UTF-8"),
    ]
    for line, text in expected:
        assert any(x.startswith(f"{f}:{line}: error: ") and text in x
                   for x in err.splitlines()), (line, text, err)
    for clean in (1, 7, 8):
        assert f"{f}:{clean}:" not in err
    assert "8 rows, 7 errors, 0 warnings (6 malformed" in proc.stdout

    report = json.loads(jessy("validate", f, "--json").stdout)
    assert [p["line"] for p in report["problems"]] == [2, 3, 4, 5, 6, 6, 9]
    assert report["ok"] is False and report["blank_lines"] == 1


def test_validate_messages_and_text_formats(tmp_path):
    f = write_lines(tmp_path / "m.jsonl", [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]},
        {"messages": [{"role": "user", "content": "Hi"}]},
        {"messages": [{"role": "bot", "content": "Hi"}, {"role": "assistant", "content": ""}]},
        {"messages": []},
    ])
    err = jessy("validate", f, "--format", "messages").stderr
    assert f"{f}:2: error: the last message must be the assistant's" in err
    assert f"{f}:3: error: message 0: role must be one of system, user, assistant " \
           "(got 'bot')" in err
    assert f"{f}:3: error: message 1: content must be a non-empty string" in err
    assert f"{f}:4: error: field 'messages' must be a non-empty list" in err
    assert f"{f}:1:" not in err

    t = write_lines(tmp_path / "t.jsonl", [{"text": "ok"}, {"body": "x"}])
    proc = jessy("validate", t, "--format", "text")
    assert proc.returncode == 2 and f"{t}:2: error: missing field 'text'" in proc.stderr
    assert jessy("validate", t, "--format", "text", "--text-field", "body").returncode == 2
    q = write_lines(tmp_path / "q.jsonl", [{"q": "Hi", "a": "Yo"}])
    jessy("validate", q, "--prompt-field", "q", "--response-field", "a", check=True)


@pytest.mark.parametrize("fmt,obj", [
    ("prompt_response", {"prompt": "a", "response": "b"}),
    ("prompt_response", {"prompt": "a"}),
    ("prompt_response", {"prompt": "a", "response": 1}),
    ("prompt_response", {"prompt": " ", "response": "b"}),
    ("prompt_response", ["a"]),
    ("messages", {"messages": [{"role": "user", "content": "a"},
                               {"role": "assistant", "content": "b"}]}),
    ("messages", {"messages": [{"role": "user", "content": "a"}]}),
    ("messages", {"messages": ["a"]}),
    ("messages", {"messages": [{"role": "assistant", "content": None}]}),
    ("messages", {"messages": "hi"}),
    ("text", {"text": "a"}),
    ("text", {"text": ""}),
    ("text", {"text": 5}),
])
def test_row_rules_match_the_run_time_loader(fmt, obj):
    fields = make_fields()
    assert (row_problems(obj, fmt, fields) == []) == (check_row(obj, fmt, fields) is None)


def test_normalise_ignores_case_whitespace_and_punctuation():
    assert normalise("  What's   YOUR name?! ") == normalise("whats your name")
    assert normalise("İstanbul…") == normalise("i̇stanbul")
    assert normalise("a b") != normalise("ab")


def test_duplicates_name_both_lines_and_are_errors_only_when_strict(tmp_path):
    f = write_lines(tmp_path / "d.jsonl", [
        pr("What is your name?", "I'm Jessy."),        # 1
        pr("Where do you live?", "On a MacBook."),     # 2
        pr("What is your name?", "I'm Jessy."),        # 3 exact copy of 1
        pr("what is your   NAME", "im jessy"),         # 4 normalised copy of 1
        pr("What is your name?", "Jessy, of course."),  # 5 other answer: not a duplicate
        pr("WHERE do you live", "on a macbook!"),      # 6 normalised copy of 2
    ])
    proc = jessy("validate", f)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.splitlines()
    assert f"{f}:3: warning: exact duplicate of line 1" in err
    assert (f"{f}:4: warning: duplicate of line 1 after ignoring case, whitespace and "
            "punctuation") in err
    assert any(x.startswith(f"{f}:6: warning: duplicate of line 2") for x in err)
    assert not any(x.startswith(f"{f}:5:") for x in err)
    assert "1 exact duplicates, 2 normalised duplicates" in proc.stdout

    strict = jessy("validate", f, "--strict")
    assert strict.returncode == 2
    assert f"{f}:3: error: exact duplicate of line 1" in strict.stderr
    report = json.loads(jessy("validate", f, "--strict", "--json").stdout)
    assert [(p["line"], p["duplicate_of"]) for p in report["problems"]] == [(3, 1), (4, 1),
                                                                             (6, 2)]


def test_validate_bad_input_exit_codes(tmp_path):
    empty = write_lines(tmp_path / "e.jsonl", [""])
    proc = jessy("validate", empty)
    assert proc.returncode == 2 and "no examples in file" in proc.stderr
    assert jessy("validate", tmp_path / "nope.jsonl").returncode == 2
    ok = write_lines(tmp_path / "ok.jsonl", [pr("a", "b")])
    proc = jessy("validate", ok, "--max-seq-length", "10")
    assert proc.returncode == 2 and "--tokenizer" in proc.stderr
    proc = jessy("validate", ok, "--tokenizer", tmp_path / "no-model", "--max-seq-length", "9")
    assert proc.returncode == 2 and "cannot load a tokenizer" in proc.stderr


MEMORY_PROBE = """
import json, resource, sys
from jessy_adapters.data import tools as datatools
from jessy_adapters.cli.data import data

def peak():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024

datatools.normalise("warm the punctuation table up")
base = peak()
try:
    data.main(["validate", sys.argv[1], "--json"], standalone_mode=False)
    code = 0
except SystemExit as exc:
    code = exc.code
with open(sys.argv[2], "w") as fh:
    json.dump({"code": code, "growth": peak() - base}, fh)
"""


def test_validate_100k_rows_in_bounded_memory(tmp_path):
    f = tmp_path / "big.jsonl"
    filler = "lorem ipsum dolor sit amet, " * 40
    with open(f, "w") as fh:
        for i in range(1, 100_001):
            if i == 50_000:
                fh.write('{"prompt": "broken\n')
            elif i == 100_000:
                fh.write(json.dumps(pr("Question 7: what is 7 plus one?", "It is 8. " + filler))
                         + "\n")
            else:
                fh.write(json.dumps(pr(f"Question {i}: what is {i} plus one?",
                                       f"It is {i + 1}. " + filler)) + "\n")
    size = f.stat().st_size
    assert size > 100 * 2**20
    result = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(f), str(result)], check=False,
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    probe = json.loads(result.read_text())
    assert probe["code"] == 2
    assert report["rows"] == 100_000
    assert [(p["line"], p["kind"]) for p in report["problems"]] == [
        (50_000, "malformed"), (100_000, "duplicate")]
    assert report["problems"][1]["duplicate_of"] == 7
    # Loading the file would cost more than its size; streaming keeps only digests.
    assert probe["growth"] < 100 * 2**20, f"peak RSS grew {probe['growth'] / 2**20:.0f} MiB"


# ----------------------------------------------------------------------------- prepare

def unique_rows(n: int) -> list[dict]:
    return [pr(f"Question number {i}?", f"Answer number {i}.") for i in range(n)]


def test_prepare_split_ratio_subset_sizes_and_manifest(tmp_path):
    rows = unique_rows(2000)
    f = write_lines(tmp_path / "all.jsonl", rows)
    out = tmp_path / "out"
    proc = jessy("prepare", f, "--out", out, "--subset", "900", check=True)
    assert "train 1800, val 200" in proc.stdout and "subset 900/100" in proc.stdout
    train, val = read_jsonl(out / "train.jsonl"), read_jsonl(out / "val.jsonl")
    assert (len(train), len(val)) == (1800, 200)
    key = json.dumps
    assert sorted(map(key, train + val)) == sorted(map(key, rows))  # same rows, same format
    assert read_jsonl(out / "train_subset.jsonl") == train[:900]
    assert read_jsonl(out / "val_subset.jsonl") == val[:100]
    assert train[:50] != rows[:50]  # shuffled

    m = json.loads((out / "prepare.json").read_text())
    assert m["seed"] == 42 and m["val_ratio"] == 0.1
    assert m["input"]["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
    for name in ("train.jsonl", "val.jsonl", "train_subset.jsonl", "val_subset.jsonl"):
        assert m["outputs"][name]["sha256"] == hashlib.sha256((out / name).read_bytes()
                                                              ).hexdigest()
    assert m["counts"]["train_subset"] == 900 and m["counts"]["val_subset"] == 100

    jessy("prepare", f, "--out", out, "--subset", "1000", "--val-ratio", "0.2", check=True)
    c = json.loads((out / "prepare.json").read_text())["counts"]
    assert (c["train"], c["val"], c["train_subset"], c["val_subset"]) == (1600, 400, 1000, 250)
    jessy("prepare", f, "--out", out, check=True)
    assert not (out / "train_subset.jsonl").exists()  # no stale pilot from the last run


def test_prepare_is_deterministic_for_a_seed(tmp_path):
    rows = unique_rows(300) + [pr("Question number 5?", "Answer number 5.")]
    f = write_lines(tmp_path / "all.jsonl", rows)
    for name in ("a", "b"):
        jessy("prepare", f, "--out", tmp_path / name, "--subset", "50", check=True)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["prepare.json", "train.jsonl", "train_subset.jsonl", "val.jsonl",
                     "val_subset.jsonl"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    jessy("prepare", f, "--out", tmp_path / "c", "--seed", "7", check=True)
    assert (tmp_path / "c" / "train.jsonl").read_bytes() != \
        (tmp_path / "a" / "train.jsonl").read_bytes()


def _prompts(path: Path) -> set[str]:
    return {normalise(r["prompt"]) for r in read_jsonl(path)}


def test_prepare_dedup_drops_duplicates_and_prevents_overlap(tmp_path):
    rows = []
    for i in range(40):
        rows += [pr(f"Fact {i}?", f"It is {i}."), pr(f"fact {i}", f"it is {i}"),
                 pr(f"Fact {i}?", f"It is {i}."), pr(f"FACT {i}!", f"Also, {i} again.")]
    f = write_lines(tmp_path / "dups.jsonl", rows)
    out = tmp_path / "dedup"
    jessy("prepare", f, "--out", out, check=True)
    m = json.loads((out / "prepare.json").read_text())
    assert m["counts"]["duplicates_dropped"] == 80 and m["counts"]["kept"] == 80
    assert m["dropped_duplicates"][:2] == [
        {"line": 2, "duplicate_of": 1, "kind": "normalised"},
        {"line": 3, "duplicate_of": 1, "kind": "exact"}]
    # Same prompt, different answer: kept, but on the same side of the split.
    assert m["overlap"] == {"prompts": 0, "train_rows": 0, "val_rows": 0, "val_lines": []}
    assert not _prompts(out / "train.jsonl") & _prompts(out / "val.jsonl")
    assert m["counts"]["val"] == 8

    out = tmp_path / "kept"
    proc = jessy("prepare", f, "--out", out, "--no-dedup", check=True)
    m = json.loads((out / "prepare.json").read_text())
    assert m["counts"]["duplicates_dropped"] == 0 and m["counts"]["duplicates_kept"] == 80
    assert (m["counts"]["train"], m["counts"]["val"]) == (144, 16)
    shared = _prompts(out / "train.jsonl") & _prompts(out / "val.jsonl")
    assert shared and m["overlap"]["prompts"] == len(shared)
    assert m["overlap"]["val_rows"] == len(m["overlap"]["val_lines"]) > 0
    assert "appear in both train and val" in proc.stderr


def test_prepare_refuses_malformed_rows_and_writes_nothing(tmp_path):
    f = write_lines(tmp_path / "bad.jsonl", [pr("a", "b"), {"prompt": "c"}, "nope"])
    out = tmp_path / "out"
    proc = jessy("prepare", f, "--out", out)
    assert proc.returncode == 2
    assert f"{f}:2: error: missing field 'response'" in proc.stderr
    assert f"{f}:3: error: not valid JSON" in proc.stderr
    assert not out.exists()
    proc = jessy("prepare", f, "--out", tmp_path, "--val-ratio", "1")
    assert proc.returncode == 2


def test_prepare_with_system_prompt_writes_chat_messages(tmp_path):
    f = write_lines(tmp_path / "d.jsonl", unique_rows(20))
    out = tmp_path / "out"
    jessy("prepare", f, "--out", out, "--system-prompt", "You are Jessy.", check=True)
    row = read_jsonl(out / "train.jsonl")[0]
    assert row["messages"][0] == {"role": "system", "content": "You are Jessy."}
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    t = write_lines(tmp_path / "t.jsonl", [{"text": "a"}])
    proc = jessy("prepare", t, "--format", "text", "--out", out, "--system-prompt", "x")
    assert proc.returncode == 2 and "text format has no roles" in proc.stderr


# ----------------------------------------------------------------------------- stats

def test_stats_numbers_on_a_tiny_file(tmp_path):
    f = write_lines(tmp_path / "s.jsonl", [
        pr("ab", "x"), pr("abcd", "xy"), pr("abcdef", "xyz"),
        pr("abcdefghijklmnopqrst", "wxyz"),
        pr("ab", "x"),          # exact duplicate of line 1
        pr("ABCD.", "XY"),      # normalised duplicate of line 2
        {"prompt": "q"},        # malformed: counted, skipped
        "",
    ])
    proc = jessy("stats", f, "--json", check=True)
    s = json.loads(proc.stdout)
    assert (s["lines"], s["rows"], s["malformed_rows"], s["blank_lines"]) == (8, 6, 1, 1)
    assert s["duplicates"] == {"exact": 1, "normalised": 1}
    assert s["chars"]["prompt"] == {"mean": 6.5, "median": 4.5, "p95": 20, "max": 20}
    assert s["chars"]["response"] == {"mean": 2.17, "median": 2.0, "p95": 4, "max": 4}
    assert s["tokens"] is None
    assert "1 malformed rows skipped" in proc.stderr
    text = jessy("stats", f, check=True).stdout
    assert "duplicates: 1 exact, 1 normalised" in text and "6.5" in text


# ----------------------------------------------------------------------------- tokens

def _template_len(tok, messages, **kw) -> int:
    out = tok.apply_chat_template(messages, **kw)
    return len(out["input_ids"] if hasattr(out, "keys") else out)


def test_token_lengths_use_the_real_tokenizer_and_chat_template(tmp_path, smollm2):
    from transformers import AutoTokenizer

    rows = [pr("Who are you?", "I'm Jessy."), pr("Tell me a story.", "Once upon a time " * 60),
            pr("Bye", "Goodbye!")]
    f = write_lines(tmp_path / "t.jsonl", rows)
    tok = AutoTokenizer.from_pretrained(smollm2)
    msgs = [[{"role": "user", "content": r["prompt"]},
             {"role": "assistant", "content": r["response"]}] for r in rows]
    lengths = [_template_len(tok, m) for m in msgs]
    assert lengths[1] > 200 > max(lengths[0], lengths[2])

    proc = jessy("validate", f, "--tokenizer", smollm2, "--max-seq-length", 200)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == (f"{f}:2: warning: {lengths[1]} tokens after the chat "
                                   "template, over --max-seq-length 200 (expected at most 200)")
    assert f"longest row {lengths[1]} tokens" in proc.stdout
    strict = jessy("validate", f, "--tokenizer", smollm2, "--max-seq-length", 200, "--strict",
                   "--json")
    assert strict.returncode == 2
    assert json.loads(strict.stdout)["max_tokens"] == lengths[1]

    s = json.loads(jessy("stats", f, "--tokenizer", smollm2, "--json", check=True).stdout)
    heads = sorted(_template_len(tok, m[:1], add_generation_prompt=True) for m in msgs)
    assert s["tokens"]["total"]["max"] == lengths[1]
    assert s["tokens"]["total"]["median"] == sorted(lengths)[1]
    assert s["tokens"]["prompt"]["max"] == heads[-1]
    assert s["tokens"]["response"]["max"] == lengths[1] - _template_len(
        tok, msgs[1][:1], add_generation_prompt=True)

    # In-process (one tokenizer load): the limit is inclusive, and a system prompt counts.
    fields = make_fields()
    exact = validate_file(f, "prompt_response", fields, strict=True, max_seq_length=lengths[1],
                          counter=TokenCounter(smollm2, "prompt_response", fields, None))
    assert exact.errors == 0 and exact.max_tokens == lengths[1]
    system = "You are Jessy, a helpful assistant. " * 5
    counter = TokenCounter(smollm2, "prompt_response", fields, system)
    with_system = validate_file(f, "prompt_response", fields, counter=counter,
                                max_seq_length=lengths[1])
    expected = _template_len(tok, [{"role": "system", "content": system}, *msgs[1]])
    assert with_system.max_tokens == expected > lengths[1]
    assert [p.line for p in with_system.problems] == [2]
