"""Training data as every backend receives it: validated with line numbers, subset, split.

Rows become chat `messages` (prompt/response and messages formats) or `text`, written as
JSONL once per run, so every backend trains on exactly the same examples in the same order.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .backend import PreparedData
from .spec import Spec


@dataclass
class DataIssue:
    file: str
    line: int
    message: str

    def render(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class DataError(Exception):
    def __init__(self, issues: list[DataIssue], more: int = 0):
        self.issues = issues
        text = "\n".join(i.render() for i in issues)
        if more:
            text += f"\n... and {more} more problems"
        super().__init__(text)


MAX_REPORTED = 50
ROLES = {"system", "user", "assistant"}


def iter_jsonl(path: Path) -> Iterator[tuple[int, str]]:
    """Stream (line number, text) so a 100k-row file never sits in memory twice."""
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                yield number, line


def check_row(obj, fmt: str, fields: dict) -> str | None:
    """What is wrong with one parsed row, or None."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    if fmt == "prompt_response":
        for role in ("prompt", "response"):
            key = fields[role]
            if key not in obj:
                return f"missing field {key!r} (data.fields.{role})"
            if not isinstance(obj[key], str):
                return f"field {key!r} must be a string, got {type(obj[key]).__name__}"
            if not obj[key].strip():
                return f"field {key!r} is empty"
    elif fmt == "messages":
        msgs = obj.get(fields["messages"])
        if not isinstance(msgs, list) or not msgs:
            return f"field {fields['messages']!r} must be a non-empty list of messages"
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                return f"message {i}: role must be one of system, user, assistant"
            if not isinstance(m.get("content"), str) or not m["content"].strip():
                return f"message {i}: content must be a non-empty string"
        if msgs[-1]["role"] != "assistant":
            return "the last message must be the assistant's (it is what the model learns)"
    else:
        text = obj.get(fields["text"])
        if not isinstance(text, str) or not text.strip():
            return f"field {fields['text']!r} must be a non-empty string"
    return None


def to_canonical(obj: dict, fmt: str, fields: dict, system_prompt: str | None) -> dict:
    if fmt == "text":
        return {"text": obj[fields["text"]]}
    if fmt == "prompt_response":
        msgs = [{"role": "user", "content": obj[fields["prompt"]]},
                {"role": "assistant", "content": obj[fields["response"]]}]
    else:
        msgs = [{"role": m["role"], "content": m["content"]} for m in obj[fields["messages"]]]
    if system_prompt and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return {"messages": msgs}


def load_rows(path: Path, fmt: str, fields: dict, system_prompt: str | None = None
              ) -> list[dict]:
    """Every problem in the file, with line numbers, or the canonical rows."""
    if not path.is_file():
        raise DataError([DataIssue(str(path), 0, "file not found")])
    rows, issues, extra = [], [], 0
    for number, line in iter_jsonl(path):
        try:
            obj = json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            problem = f"not valid JSON: {exc.msg} (column {exc.colno})"
        else:
            problem = check_row(obj, fmt, fields)
        if problem:
            if len(issues) < MAX_REPORTED:
                issues.append(DataIssue(str(path), number, problem))
            else:
                extra += 1
            continue
        rows.append(to_canonical(obj, fmt, fields, system_prompt))
    if issues:
        raise DataError(issues, extra)
    if not rows:
        raise DataError([DataIssue(str(path), 0, "no examples in file")])
    return rows


def split(rows: list[dict], ratio: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded shuffle, then the last `ratio` share is validation (the seed's 90/10)."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    shuffled = [rows[i] for i in order]
    n_val = int(round(len(rows) * ratio)) if ratio > 0 else 0
    if ratio > 0 and len(rows) > 1:
        n_val = max(1, n_val)
    return shuffled[: len(rows) - n_val], shuffled[len(rows) - n_val:]


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def prepare(spec: Spec, out_dir: Path) -> PreparedData:
    d = spec["data"]
    seed = spec["training"]["seed"]
    fields = {"prompt": "prompt", "response": "response", "messages": "messages",
              "text": "text", **d["fields"]}
    system = d["system_prompt"]
    files = d["train"] if isinstance(d["train"], list) else [d["train"]]
    train_rows = [row for f in files
                  for row in load_rows(spec.resolve_path(f), d["format"], fields, system)]
    if d["validation"]:
        val_rows = load_rows(spec.resolve_path(d["validation"]), d["format"], fields, system)
        random.Random(seed).shuffle(train_rows)
    else:
        train_rows, val_rows = split(train_rows, d["validation_split"], seed)
    if d["max_samples"]:
        train_rows = train_rows[: d["max_samples"]]
    fmt = "text" if d["format"] == "text" else "messages"
    train_path = out_dir / "train.jsonl"
    write_jsonl(train_rows, train_path)
    val_path = None
    if val_rows:
        val_path = out_dir / "valid.jsonl"
        write_jsonl(val_rows, val_path)
    return PreparedData(train_path, val_path, fmt, len(train_rows), len(val_rows))
