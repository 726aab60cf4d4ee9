"""`jessy validate` and `jessy plan` check the spec's data files as `jessy run` does before it
prepares anything (`data.source_issues`, the one rule): a missing file, a directory, a FIFO,
a file listed twice, a validation file that is also a training file. Each is exit 2 with the
run's words (the file and its spec path), no traceback, at once; a good spec is still exit 0.

The real command line, in a subprocess: a FIFO that were opened would block it, which only a
timeout can show."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jessy_adapters.data import source_issues
from jessy_adapters.spec import load_spec

JESSY = str(Path(sys.executable).with_name("jessy"))
COMMANDS = {"validate": ["validate"], "plan": ["plan", "--backend", "mlx"]}
OK_ROW = '{"prompt": "Who are you?", "response": "I am Jessy."}\n'
POSIX = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs: POSIX")


def write_spec(tmp: Path, train, **data) -> Path:
    (tmp / "model").mkdir(exist_ok=True)
    spec = {"model": {"name_or_path": "./model"}, "data": {"train": train, **data}}
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def jessy(command: str, spec: Path) -> subprocess.CompletedProcess:
    return subprocess.run([JESSY, *COMMANDS[command], str(spec)], cwd=spec.parent,
                          capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)


def _missing(tmp: Path) -> tuple[dict, list[str]]:
    return {"train": "gone.jsonl"}, [f"{tmp / 'gone.jsonl'}: file not found",
                                     "(/data/train: 'gone.jsonl')"]


def _directory(tmp: Path) -> tuple[dict, list[str]]:
    (tmp / "dir.jsonl").mkdir()
    return {"train": "dir.jsonl"}, [f"{tmp / 'dir.jsonl'}: not a regular file: it is a "
                                    "directory", "(/data/train: 'dir.jsonl')"]


def _fifo(tmp: Path) -> tuple[dict, list[str]]:
    os.mkfifo(tmp / "pipe.jsonl")  # no writer: opening it would wait forever
    return {"train": "pipe.jsonl"}, [f"{tmp / 'pipe.jsonl'}: not a regular file: it is a FIFO "
                                     "(named pipe)", "(/data/train: 'pipe.jsonl')"]


def _twice(tmp: Path) -> tuple[dict, list[str]]:
    (tmp / "a.jsonl").write_text(OK_ROW * 4)
    return {"train": ["a.jsonl", "./a.jsonl"]}, [
        f"{tmp / 'a.jsonl'}: /data/train/1 ('./a.jsonl') is the same file as /data/train/0 "
        "('a.jsonl'): its rows would silently count twice; list each file once"]


def _validation_is_training(tmp: Path) -> tuple[dict, list[str]]:
    (tmp / "a.jsonl").write_text(OK_ROW * 4)
    return {"train": "a.jsonl", "validation": "./a.jsonl", "validation_split": 0}, [
        "/data/validation ('./a.jsonl') is the same file as /data/train ('a.jsonl'): "
        "validation loss would be measured on rows it trained on"]


BAD = {"missing": _missing, "directory": _directory, "fifo": _fifo, "listed-twice": _twice,
       "validation-is-training": _validation_is_training}


@POSIX
@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("kind", list(BAD))
def test_a_data_source_a_run_would_refuse_is_exit_2_with_its_path(kind, command, tmp_path):
    data, wanted = BAD[kind](tmp_path)
    spec = write_spec(tmp_path, **data)
    proc = jessy(command, spec)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for part in wanted:
        assert part in proc.stderr, proc.stderr
    assert proc.stdout == ""  # no "valid", no plan


@POSIX
@pytest.mark.parametrize("kind", list(BAD))
def test_the_words_are_the_runs(kind, tmp_path):
    """One rule, one wording: the lines are source_issues' own, as `jessy run` prints them."""
    data, _ = BAD[kind](tmp_path)
    spec = write_spec(tmp_path, **data)
    rendered = "\n".join(i.render() for i in source_issues(load_spec(spec)))
    assert rendered and jessy("validate", spec).stderr == f"error: {rendered}\n"


def test_every_bad_source_is_listed_at_once(tmp_path):
    (tmp_path / "dir.jsonl").mkdir()
    spec = write_spec(tmp_path, ["gone.jsonl", "dir.jsonl"])
    err = jessy("validate", spec).stderr
    assert "(/data/train/0: 'gone.jsonl')" in err and "(/data/train/1: 'dir.jsonl')" in err


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_good_spec_still_exits_0(command, tmp_path):
    (tmp_path / "a.jsonl").write_text(OK_ROW * 4)
    (tmp_path / "b.jsonl").write_text(OK_ROW * 2)
    spec = write_spec(tmp_path, ["a.jsonl", "b.jsonl"])
    proc = jessy(command, spec)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert ("valid (lora" if command == "validate" else "would train on:") in proc.stdout
