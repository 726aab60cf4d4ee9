"""Training data as every backend receives it: validated with line numbers, subset, split.

Rows become chat `messages` (prompt/response and messages formats) or `text`, written as
JSONL once per run, so every backend trains on exactly the same examples in the same order.
Files and rows are read and judged by `rows`, the rules `jessy data validate` applies too;
train.jsonl and valid.jsonl are staged and renamed, so a failure never leaves half of one.
"""

from __future__ import annotations

import json
import random
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..backend import PreparedData
from ..templates import ALPACA
from .rows import (
    FIELDS,
    MAX_REPORTED,
    ROLES,
    DataFile,
    DataFileError,
    ScanCounts,
    row_problems,
    staged_output,
    stat_data_file,
    to_canonical,
)

if TYPE_CHECKING:
    from ..spec import Spec

__all__ = ["MAX_REPORTED", "ROLES", "DataError", "DataIssue", "check_row", "load_rows",
           "prepare", "rows_without_room", "source_issues", "split", "to_canonical",
           "val_count"]


@dataclass
class DataIssue:
    file: str
    line: int  # 0: the file as a whole
    message: str

    def render(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else \
            f"{self.file}: {self.message}"


class DataError(Exception):
    def __init__(self, issues: list[DataIssue], more: int = 0):
        self.issues = issues
        text = "\n".join(i.render() for i in issues)
        if more:
            text += f"\n... and {more} more problems"
        super().__init__(text)


def check_row(obj: Any, fmt: str, fields: dict) -> str | None:
    """The first thing wrong with one parsed row, or None (`rows.row_problems` lists all)."""
    problems = row_problems(obj, fmt, fields)
    return problems[0] if problems else None


def load_rows(path: Path, fmt: str, fields: dict, system_prompt: str | None = None,
              alpaca_prompt: bool = False) -> list[dict]:
    """Every problem in the file, with line numbers, or the canonical rows."""
    name = str(path)
    rows: list[dict] = []
    issues: list[DataIssue] = []
    extra = 0
    try:
        with DataFile(path) as source:
            for item in source.scan(fmt, fields, ScanCounts()):
                for problem in item.problems:
                    if len(issues) < MAX_REPORTED:
                        issues.append(DataIssue(name, item.line, problem))
                    else:
                        extra += 1
                if not item.problems:
                    rows.append(to_canonical(item.obj, fmt, fields, system_prompt,
                                             alpaca_prompt))
    except DataFileError as exc:
        raise DataError([DataIssue(exc.file, 0, exc.message)]) from None
    if issues:
        raise DataError(issues, extra)
    if not rows:
        raise DataError([DataIssue(name, 0, "no examples in file (expected at least one JSON "
                                           "object line)")])
    return rows


def _sources(spec: Spec) -> list[tuple[str, str]]:
    """(spec path, file as written) of every data file: the training files, then validation."""
    d = spec["data"]
    if isinstance(d["train"], list):
        out = [(f"/data/train/{i}", f) for i, f in enumerate(d["train"])]
    else:
        out = [("/data/train", d["train"])]
    if d["validation"]:
        out.append(("/data/validation", d["validation"]))
    return out


def _fields(spec: Spec) -> dict:
    return {**FIELDS, **spec["data"]["fields"]}


def source_issues(spec: Spec) -> list[DataIssue]:
    """What is wrong with the spec's data files before any is read: each must be a regular
    file, listed once, and the validation file must not also be a training file.

    Sameness is the file itself (device and inode), so `a.jsonl`, `./a.jsonl`, a symlink
    and a hard link all count as one. A file listed twice is refused rather than
    deduplicated: either it is a slip, which today would silently double its rows, or it is
    meant to weight that file, which dropping the copy would silently undo; only the spec's
    author knows which, so the spec has to say it.
    """
    issues: list[DataIssue] = []
    seen: dict[tuple[int, int], tuple[str, str]] = {}
    for pointer, given in _sources(spec):
        path = spec.resolve_path(given)
        try:
            st = stat_data_file(path)
        except DataFileError as exc:
            issues.append(DataIssue(exc.file, 0, f"{exc.message} ({pointer}: {given!r})"))
            continue
        first = seen.setdefault((st.st_dev, st.st_ino), (pointer, given))
        if first[0] == pointer:
            continue
        why = ("validation loss would be measured on rows it trained on"
               if pointer == "/data/validation" else "its rows would silently count twice")
        issues.append(DataIssue(str(path), 0, f"{pointer} ({given!r}) is the same file as "
                                f"{first[0]} ({first[1]!r}): {why}; list each file once"))
    return issues


def val_count(n: int, ratio: float) -> int:
    """Validation rows for n rows: the share rounded, and at least 1 when splitting at all."""
    n_val = round(n * ratio) if ratio > 0 else 0
    if ratio > 0 and n > 1:
        n_val = max(1, n_val)
    return n_val


def split(rows: list[dict], ratio: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded shuffle, then the last `ratio` share is validation (the seed's 90/10)."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    shuffled = [rows[i] for i in order]
    n_val = val_count(len(rows), ratio)
    return shuffled[: len(rows) - n_val], shuffled[len(rows) - n_val:]


def _dump(rows: list[dict], out: BinaryIO) -> None:
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")


def prepare(spec: Spec, out_dir: Path) -> PreparedData:
    """The spec's rows, checked, split and written to out_dir; DataError naming every
    problem (file and line) before anything is written."""
    issues = source_issues(spec)
    if issues:
        raise DataError(issues)
    d = spec["data"]
    seed = spec["training"]["seed"]
    fields = _fields(spec)
    system = d["system_prompt"]
    alpaca = spec["model"]["chat_template"] == ALPACA
    files = d["train"] if isinstance(d["train"], list) else [d["train"]]
    train_rows = [row for f in files for row in load_rows(spec.resolve_path(f), d["format"],
                                                          fields, system, alpaca)]
    if d["validation"]:
        val_rows = load_rows(spec.resolve_path(d["validation"]), d["format"], fields, system,
                             alpaca)
        random.Random(seed).shuffle(train_rows)
    else:
        train_rows, val_rows = split(train_rows, d["validation_split"], seed)
    if d["max_samples"]:
        train_rows = train_rows[: d["max_samples"]]
    fmt = "text" if d["format"] == "text" else "messages"
    train_path, val_path = out_dir / "train.jsonl", out_dir / "valid.jsonl"
    with ExitStack() as stack:  # both files appear, or neither (renamed at the end)
        _dump(train_rows, stack.enter_context(staged_output(train_path)))
        if val_rows:
            _dump(val_rows, stack.enter_context(staged_output(val_path)))
    if not val_rows:
        val_path.unlink(missing_ok=True)  # an earlier preparation's, in a reused folder
    return PreparedData(train_path, val_path if val_rows else None, fmt, len(train_rows),
                        len(val_rows))


def rows_without_room(spec: Spec, model_path: str, min_response_tokens: int = 1
                      ) -> list[DataIssue]:
    """Rows of the spec's data files whose prompt leaves no room for a response within
    model.max_seq_length, by file and line, measured with the model's tokenizer and chat
    template (`datatools.rows_without_room_for_response`); reads, writes nothing.

    For a caller that has prepared the data (so the files are known to be readable): a row
    cut at max_seq_length before its response starts trains nothing, and a batch of such
    rows has no label at all. datatools.DataToolError when the tokenizer cannot be loaded.
    """
    from .tools import TokenCounter, rows_without_room_for_response

    d, limit = spec["data"], spec["model"]["max_seq_length"]
    if d["format"] == "text":
        return []
    fields = _fields(spec)
    counter = TokenCounter(model_path, d["format"], fields, d["system_prompt"],
                           spec["model"]["chat_template"])
    issues = []
    for _, given in _sources(spec):
        path = spec.resolve_path(given)
        issues.extend(DataIssue(str(path), row.line, row.message(limit, min_response_tokens))
                      for row in rows_without_room_for_response(
                          path, counter, limit, fmt=d["format"], fields=fields,
                          min_response_tokens=min_response_tokens))
    return issues
