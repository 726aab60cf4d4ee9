"""Alpaca and ShareGPT rows, converted once by jessy into the chat messages every backend
receives, with line-numbered errors like the other formats."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from jessy_adapters.data import DataError, prepare
from jessy_adapters.spec import load_spec

JESSY = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "jessy"
ALPACA = [{"instruction": "Name a colour.", "input": "", "output": "Teal."},
          {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
          {"instruction": "Who are you?", "output": "Jessy.", "system": "Be brief."}]
SHAREGPT = [{"conversations": [{"from": "system", "value": "Be brief."},
                               {"from": "human", "value": "Hi?"},
                               {"from": "gpt", "value": "Hello."}]},
            {"conversations": [{"from": "human", "value": "2+2?"},
                               {"from": "gpt", "value": "4"},
                               {"from": "human", "value": "and 3+3?"},
                               {"from": "gpt", "value": "6"}]}]


def write_rows(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def spec_for(tmp_path: Path, fmt: str, data: Path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"name": "formats", "model": {"name_or_path": str(tmp_path)},
                                    "data": {"train": str(data), "format": fmt}}))
    return load_spec(path)


def prepared_rows(tmp_path, fmt, rows):
    data = prepare(spec_for(tmp_path, fmt, write_rows(tmp_path / "rows.jsonl", rows)),
                   tmp_path / "out")
    assert data.format == "messages"
    files = [data.train] + ([data.validation] if data.validation else [])
    return [json.loads(line)["messages"] for f in files for line in f.read_text().splitlines()]


def test_alpaca_rows_become_user_and_assistant_turns(tmp_path):
    got = prepared_rows(tmp_path, "alpaca", ALPACA)
    # the input on the line after the instruction, as LLaMA-Factory and Axolotl render alpaca
    # rows through a chat template (the Alpaca prompt: tests/test_alpaca_prompt.py)
    assert [{"role": "user", "content": "Translate to French.\ncat"},
            {"role": "assistant", "content": "chat"}] in got
    assert [{"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Teal."}] in got
    assert [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who are you?"},
            {"role": "assistant", "content": "Jessy."}] in got


def test_sharegpt_roles_are_mapped(tmp_path):
    got = sorted([m["role"] for m in row] for row in prepared_rows(tmp_path, "sharegpt",
                                                                    SHAREGPT))
    assert got == [["system", "user", "assistant"], ["user", "assistant", "user", "assistant"]]


@pytest.mark.parametrize("fmt,row,expected", [
    ("alpaca", {"instruction": "x"}, "missing field 'output'"),
    ("alpaca", {"instruction": "x", "output": "y", "input": 3}, "'input' must be a string"),
    ("sharegpt", {"conversations": []}, "non-empty list"),
    ("sharegpt", {"conversations": [{"from": "robot", "value": "x"}]}, "turn 0: 'from'"),
    ("sharegpt", {"conversations": [{"from": "gpt", "value": "x"},
                                    {"from": "human", "value": "y"}]}, "last message"),
])
def test_bad_rows_are_refused_with_their_line(fmt, row, expected, tmp_path):
    rows = (ALPACA if fmt == "alpaca" else SHAREGPT) + [row]
    with pytest.raises(DataError) as err:
        prepare(spec_for(tmp_path, fmt, write_rows(tmp_path / "rows.jsonl", rows)),
                tmp_path / "out")
    assert f"rows.jsonl:{len(rows)}" in str(err.value) and expected in str(err.value)


@pytest.mark.parametrize("fmt,rows", [("alpaca", ALPACA), ("sharegpt", SHAREGPT)])
def test_jessy_data_understands_the_formats(fmt, rows, tmp_path):
    path = write_rows(tmp_path / "rows.jsonl", rows + rows[:1])  # one duplicate
    for command in ("validate", "stats"):
        r = subprocess.run([str(JESSY), "data", command, str(path), "--format", fmt],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    r = subprocess.run([str(JESSY), "data", "validate", str(path), "--format", fmt],
                       capture_output=True, text=True, timeout=60)
    assert "duplicate" in (r.stdout + r.stderr).lower()
