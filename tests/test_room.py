"""Rows whose prompt leaves no room for the response are refused before the first attempt,
by file and line (room.py); the check every run makes is cheap (no transformers import) and
counts what the exact check counts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import write_spec

from jessy_adapters.cli import cli
from jessy_adapters.data import prepare, rows_without_room
from jessy_adapters.data.room import fast_count
from jessy_adapters.spec import load_spec


def rows_file(tmp_path, prompts):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "response": "Fine."}) + "\n"
                            for p in prompts))
    return path


def spec_for(tmp_path, model, data, limit, system=None):
    return write_spec(tmp_path / "spec.yaml", f"""\
name: room
model: {{name_or_path: {model}, max_seq_length: {limit}}}
data:
  train: [{data}]
  validation_split: 0.0
{f"  system_prompt: {json.dumps(system)}" if system else ""}
output: {{dir: {tmp_path / "runs"}}}
""")


@pytest.mark.parametrize("system", [None, "You are Jessy, a friendly AI assistant."])
def test_the_fast_count_finds_the_rows_the_exact_check_finds(tmp_path, smollm2, system):
    # prompts around the limit: a word is about one token, so some fit and some do not
    prompts = [" ".join(["word"] * n) for n in range(1, 60, 3)]
    spec = load_spec(spec_for(tmp_path, smollm2, rows_file(tmp_path, prompts), 48, system))
    prepared = prepare(spec, tmp_path / "prepared")
    exact = rows_without_room(spec, smollm2)
    assert 0 < len(exact) < len(prompts)
    assert fast_count(prepared.train, smollm2, "auto", 48) == len(exact)


def test_a_run_with_rows_cut_before_their_answer_is_refused_by_line(tmp_path, tiny_model):
    data = rows_file(tmp_path, ["Hi?", "What is " + "very " * 80 + "long?", "Bye?"])
    result = CliRunner().invoke(cli, ["run", "--backend", "mlx", "--no-fallback",
                                      str(spec_for(tmp_path, tiny_model, data, 64))])
    assert result.exit_code == 2, result.output
    assert f"{data}:2: the prompt alone is" in result.output
    assert "/model/max_seq_length: 64 leaves no room" in result.output
    assert "Traceback" not in result.output
    run_dir = next((tmp_path / "runs").iterdir())
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "failed" and manifest["attempts"] == []
    assert manifest["failure"]["kind"] == "data_error"


def test_the_check_on_rows_with_room_does_not_load_transformers(tmp_path, tiny_model):
    spec = spec_for(tmp_path, tiny_model, rows_file(tmp_path, ["Hi?", "How are you?"]), 128)
    code = f"""
import sys
from jessy_adapters.spec import load_spec
from jessy_adapters.data import prepare
from jessy_adapters.data.room import check_room
spec = load_spec({str(spec)!r})
prepared = prepare(spec, __import__("pathlib").Path({str(tmp_path / "p")!r}))
assert check_room(spec, prepared, {tiny_model!r}) == []
print("transformers" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_a_data_file_gone_between_preparing_and_checking_is_a_data_error(tmp_path, tiny_model):
    """The exact check reads the source files again: a file removed meanwhile is the user's
    data error with its name, not a traceback."""
    from jessy_adapters.data import DataError
    from jessy_adapters.data.room import check_room

    data = rows_file(tmp_path, ["Hi?", "What is " + "very " * 80 + "long?"])
    spec = load_spec(spec_for(tmp_path, tiny_model, data, 64))
    prepared = prepare(spec, tmp_path / "prepared")
    data.unlink()
    with pytest.raises(DataError) as err:
        check_room(spec, prepared, tiny_model)
    assert str(data) in str(err.value)
