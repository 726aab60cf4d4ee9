"""`jessy data`: check, measure and split a training file before any backend sees it.

Everything streams the file line by line and keeps only small per-row digests (and, for
`prepare`, byte offsets), so a 100k-row file is checked without being loaded. Files and
rows are read and judged by `rows`, as the run-time loader (`data.py`) reads them, so a file
that passes `jessy data validate` also loads in `jessy run`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import statistics
import unicodedata
from array import array
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..jsonio import write_json_atomic
from ..templates import ALPACA, training_template
from . import val_count
from .rows import FIELDS, DataFile, DataFileError, as_messages, staged_output, to_canonical
from .rows import MAX_REPORTED as MAX_REPORTED
from .rows import ScanCounts as ScanCounts
from .rows import ScannedLine as ScannedLine
from .rows import row_problems as row_problems

DEFAULT_FIELDS = FIELDS
ERROR, WARNING = "error", "warning"
# Kinds that are warnings unless --strict; everything else is malformed and always an error.
SOFT_KINDS = ("duplicate", "near_duplicate", "too_long", "no_room")
OUTPUT_NAMES = ("train.jsonl", "val.jsonl", "train_subset.jsonl", "val_subset.jsonl")
TOKEN_BATCH = 256
MAX_KEPT_PROBLEMS = 10_000
"""Problems a validation report holds (the earliest lines); the rest are only counted, so a
file of a million bad lines costs counters, not a million messages."""


class DataToolError(Exception):
    """Bad input we can explain in one line (tokenizer not loadable, output over input)."""


@dataclass
class Problem:
    file: str
    line: int
    severity: str
    kind: str
    message: str
    duplicate_of: int | None = None

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.severity}: {self.message}"

    def to_json(self) -> dict:
        out = {"line": self.line, "severity": self.severity, "kind": self.kind,
               "message": self.message}
        if self.duplicate_of is not None:
            out["duplicate_of"] = self.duplicate_of
        return out


def make_fields(**overrides: str | None) -> dict:
    """Field names with the user's overrides; the same keys `data.to_canonical` expects."""
    return {**DEFAULT_FIELDS, **{k: v for k, v in overrides.items() if v}}


# --------------------------------------------------------------------------- row digests

def _turns(obj: dict, fmt: str, fields: dict) -> list[tuple[str, str]]:
    if fmt == "prompt_response":
        return [("user", obj[fields["prompt"]]), ("assistant", obj[fields["response"]])]
    if fmt == "text":
        return [("text", obj[fields["text"]])]
    msgs = as_messages(obj, fmt, fields)[0] if fmt in ("alpaca", "sharegpt") else \
        obj[fields["messages"]]
    return [(m["role"], m["content"]) for m in msgs]


class _DropPunctuation(dict):
    """str.translate table filled on first sight of each character (Unicode category P*)."""

    def __missing__(self, cp: int) -> int | None:
        keep = None if unicodedata.category(chr(cp)).startswith("P") else cp
        self[cp] = keep
        return keep


_DROP_PUNCTUATION = _DropPunctuation()


def normalise(text: str) -> str:
    """Case-, whitespace- and punctuation-blind form: 'Hi,  THERE!' == 'hi there'."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_DROP_PUNCTUATION)
    return " ".join(text.split())


def _digest(parts: list[tuple[str, str]]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for role, text in parts:  # length-prefixed: ("a", "bc") never collides with ("ab", "c")
        for piece in (role, text):
            data = piece.encode("utf-8", "surrogatepass")
            h.update(b"%d:" % len(data))
            h.update(data)
    return h.digest()


@dataclass
class RowKeys:
    """16-byte digests: what a row says exactly, normalised, and its normalised prompt."""

    exact: bytes
    near: bytes
    prompt: bytes


def row_keys(obj: dict, fmt: str, fields: dict) -> RowKeys:
    turns = _turns(obj, fmt, fields)
    norm = [(role, normalise(text)) for role, text in turns]
    prompt = norm if fmt == "text" else norm[:-1]
    return RowKeys(_digest(turns), _digest(norm), _digest(prompt))


class DuplicateIndex:
    """First line of every exact and normalised row seen so far (digests only)."""

    def __init__(self) -> None:
        self.exact: dict[bytes, int] = {}
        self.near: dict[bytes, int] = {}

    def check(self, line: int, keys: RowKeys) -> tuple[str, int] | None:
        """('duplicate'|'near_duplicate', first line) or None, remembering new rows."""
        first = self.exact.get(keys.exact)
        if first is not None:
            return "duplicate", first
        self.exact[keys.exact] = line
        first = self.near.get(keys.near)
        if first is not None:
            return "near_duplicate", first
        self.near[keys.near] = line
        return None


def duplicate_message(kind: str, first: int) -> str:
    if kind == "duplicate":
        return f"exact duplicate of line {first}"
    return f"duplicate of line {first} after ignoring case, whitespace and punctuation"


# --------------------------------------------------------------------------- tokens

class TokenCounter:
    """Real token counts: the chat template the run trains with (the spec's `chat_template`;
    auto: the tokenizer's own, or jessy's where it replaces it) over the canonical messages."""

    def __init__(self, path: str, fmt: str, fields: dict, system_prompt: str | None,
                 chat_template: str = "auto") -> None:
        try:
            from transformers import AutoTokenizer

            self.tok = AutoTokenizer.from_pretrained(path)
        except Exception as exc:  # noqa: BLE001 (any loading failure is the user's input)
            raise DataToolError(f"cannot load a tokenizer from {path}: {exc}") from None
        template = training_template(path, chat_template)
        if template:
            self.tok.chat_template = template
        self.path, self.fmt, self.fields, self.system = path, fmt, fields, system_prompt
        self.alpaca_prompt = chat_template == ALPACA

    def _render(self, messages: list[dict], prompt_only: bool) -> str:
        if prompt_only:
            return self.tok.apply_chat_template(messages[:-1], tokenize=False,
                                                add_generation_prompt=True)
        return self.tok.apply_chat_template(messages, tokenize=False)

    def count(self, objs: list[dict], with_prompt: bool = False
              ) -> list[tuple[int, int | None]]:
        """(templated tokens, prompt tokens incl. the generation prompt or None) per row."""
        rows = [to_canonical(o, self.fmt, self.fields, self.system, self.alpaca_prompt)
                for o in objs]
        if self.fmt == "text":
            ids = self.tok([r["text"] for r in rows])["input_ids"]
            return [(len(x), None) for x in ids]
        try:
            full = [self._render(r["messages"], False) for r in rows]
            prompts = [self._render(r["messages"], True) for r in rows] if with_prompt else []
        except Exception as exc:  # noqa: BLE001 (template errors name the tokenizer)
            raise DataToolError(f"the chat template of {self.path} failed: {exc}") from None
        totals = [len(x) for x in self.tok(full, add_special_tokens=False)["input_ids"]]
        if not with_prompt:
            return [(t, None) for t in totals]
        heads = [len(x) for x in self.tok(prompts, add_special_tokens=False)["input_ids"]]
        return list(zip(totals, heads, strict=False))


# --------------------------------------------------------------------------- room

@dataclass(frozen=True)
class NoRoom:
    """A row whose templated prompt (generation prompt included) leaves fewer than the
    wanted response tokens within max_seq_length: cut there, it trains on (next to) nothing
    of its response, and a batch of such rows has no label at all (a NaN loss)."""

    line: int
    prompt_tokens: int
    total_tokens: int

    def message(self, max_seq_length: int, min_response_tokens: int = 1) -> str:
        return (f"the prompt alone is {self.prompt_tokens} tokens after the chat template "
                f"(the whole row {self.total_tokens}), leaving no room for the response within "
                f"max_seq_length {max_seq_length} (expected at most "
                f"{max_seq_length - min_response_tokens} prompt tokens)")


def leaves_no_room(prompt_tokens: int, max_seq_length: int, min_response_tokens: int = 1
                   ) -> bool:
    """The rule: the prompt and at least `min_response_tokens` must fit in max_seq_length."""
    return prompt_tokens + min_response_tokens > max_seq_length


def rows_without_room_for_response(path: str | Path, tokenizer: str | TokenCounter,
                                   max_seq_length: int, *, fmt: str = "prompt_response",
                                   fields: dict | None = None,
                                   system_prompt: str | None = None,
                                   min_response_tokens: int = 1) -> list[NoRoom]:
    """Every row of `path` (by line) whose prompt leaves no room for its response.

    `tokenizer` is a model folder, or a TokenCounter already loaded for the same format,
    fields and system prompt. Reads the file and writes nothing; malformed rows are skipped
    (`validate_file` names them), and text rows have no prompt, so none is listed for them.
    Raises DataFileError (the file) or DataToolError (the tokenizer or its template).
    """
    fields = fields or make_fields()
    if fmt == "text":
        return []
    counter = tokenizer if isinstance(tokenizer, TokenCounter) else TokenCounter(
        str(tokenizer), fmt, fields, system_prompt)
    found: list[NoRoom] = []
    pending: list[tuple[int, dict]] = []

    def flush() -> None:
        lengths = counter.count([obj for _, obj in pending], with_prompt=True)
        for (line, _), (total, head) in zip(pending, lengths, strict=True):
            if leaves_no_room(head, max_seq_length, min_response_tokens):
                found.append(NoRoom(line, head, total))
        pending.clear()

    with DataFile(path) as source:
        for item in source.scan(fmt, fields, ScanCounts()):
            if not item.problems:
                pending.append((item.line, item.obj))
                if len(pending) >= TOKEN_BATCH:
                    flush()
    if pending:
        flush()
    return found


# --------------------------------------------------------------------------- validate

@dataclass
class ValidationReport:
    file: str
    strict: bool
    counts: ScanCounts
    rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    max_tokens: int | None = None
    by_severity: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)

    def add(self, problem: Problem) -> None:
        """Count every problem; keep the MAX_KEPT_PROBLEMS earliest lines' messages."""
        self.by_severity[problem.severity] += 1
        self.by_kind[problem.kind] += 1
        self.problems.append(problem)
        if len(self.problems) >= 2 * MAX_KEPT_PROBLEMS:
            self._trim()

    def _trim(self) -> None:
        self.problems.sort(key=lambda p: p.line)  # stable: a line's problems keep their order
        del self.problems[MAX_KEPT_PROBLEMS:]

    @property
    def errors(self) -> int:
        return self.by_severity[ERROR]

    @property
    def warnings(self) -> int:
        return self.by_severity[WARNING]

    @property
    def omitted(self) -> int:
        return self.errors + self.warnings - len(self.problems)

    def kind_counts(self) -> dict:
        return {"malformed_rows": self.counts.malformed,
                "exact_duplicates": self.by_kind["duplicate"],
                "normalised_duplicates": self.by_kind["near_duplicate"],
                "too_long": self.by_kind["too_long"], "no_room": self.by_kind["no_room"]}

    def summary(self) -> str:
        k = self.kind_counts()
        state = "invalid" if self.errors else "ok"
        text = (f"{self.file}: {state}: {self.rows} rows, {self.errors} errors, "
                f"{self.warnings} warnings ({k['malformed_rows']} malformed, "
                f"{k['exact_duplicates']} exact duplicates, {k['normalised_duplicates']} "
                f"normalised duplicates, {k['too_long']} too long")
        if k["no_room"]:
            text += f", {k['no_room']} without room for the response"
        if self.max_tokens is not None:
            text += f"; longest row {self.max_tokens} tokens"
        return text + ")"

    def to_json(self) -> dict:
        return {"file": self.file, "ok": not self.errors, "strict": self.strict,
                "lines": self.counts.lines, "blank_lines": self.counts.blank,
                "rows": self.rows, "valid_rows": self.rows - self.counts.malformed,
                "errors": self.errors, "warnings": self.warnings, **self.kind_counts(),
                "max_tokens": self.max_tokens,
                "problems": [p.to_json() for p in self.problems],
                "problems_omitted": self.omitted}


def validate_file(path: Path, fmt: str, fields: dict, *, strict: bool = False,
                  counter: TokenCounter | None = None,
                  max_seq_length: int | None = None) -> ValidationReport:
    """Every problem in the file with its line, in line order; nothing is loaded whole.

    A file that cannot be read at all (missing, a FIFO, a directory) is one error, line 0.
    """
    name = str(path)
    report = ValidationReport(name, strict, ScanCounts())
    soft = ERROR if strict else WARNING
    dups = DuplicateIndex()
    pending: list[tuple[int, dict]] = []
    room = max_seq_length is not None and fmt != "text"

    def flush() -> None:
        if not pending:
            return
        lengths = counter.count([obj for _, obj in pending], with_prompt=room)
        for (line, _), (total, head) in zip(pending, lengths, strict=True):
            report.max_tokens = max(report.max_tokens or 0, total)
            if room and leaves_no_room(head, max_seq_length):
                report.add(Problem(name, line, soft, "no_room",
                                   NoRoom(line, head, total).message(max_seq_length)))
            elif max_seq_length is not None and total > max_seq_length:
                report.add(Problem(
                    name, line, soft, "too_long",
                    f"{total} tokens after the chat template, over --max-seq-length "
                    f"{max_seq_length} (expected at most {max_seq_length})"))
        pending.clear()

    try:
        with DataFile(path) as source:
            for item in source.scan(fmt, fields, report.counts):
                report.rows += 1
                if item.problems:
                    for p in item.problems:
                        report.add(Problem(name, item.line, ERROR, "malformed", p))
                    continue
                dup = dups.check(item.line, row_keys(item.obj, fmt, fields))
                if dup:
                    report.add(Problem(name, item.line, soft, dup[0], duplicate_message(*dup),
                                       duplicate_of=dup[1]))
                if counter is not None:
                    pending.append((item.line, item.obj))
                    if len(pending) >= TOKEN_BATCH:
                        flush()
    except DataFileError as exc:
        report.add(Problem(name, 0, ERROR, "unreadable", exc.message))
        return report
    if counter is not None:
        flush()
    if report.rows == 0:
        report.add(Problem(name, 0, ERROR, "empty", "no examples in file "
                           "(expected at least one JSON object line)"))
    report._trim()
    return report


# --------------------------------------------------------------------------- stats

def _summary(values: array) -> dict | None:
    if not values:
        return None
    ordered = sorted(values)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]  # nearest rank
    return {"mean": round(statistics.fmean(ordered), 2), "median": statistics.median(ordered),
            "p95": p95, "max": ordered[-1]}


def file_stats(path: Path, fmt: str, fields: dict,
               counter: TokenCounter | None = None) -> dict:
    """Length distributions and duplicate counts; malformed rows are counted and skipped.

    DataFileError when the file cannot be read at all (missing, not a regular file).
    """
    counts = ScanCounts()
    dups = DuplicateIndex()
    dup_counts: Counter = Counter()
    chars: dict[str, array] = {k: array("l") for k in
                               (("text",) if fmt == "text" else ("prompt", "response"))}
    tokens: dict[str, array] = {k: array("l") for k in
                                (("total",) if fmt == "text" else ("prompt", "response",
                                                                   "total"))}
    pending: list[dict] = []

    def flush() -> None:
        if not pending:
            return
        for total, head in counter.count(pending, with_prompt=fmt != "text"):
            tokens["total"].append(total)
            if head is not None:
                tokens["prompt"].append(head)
                tokens["response"].append(total - head)
        pending.clear()

    valid = 0
    with DataFile(path) as source:
        for item in source.scan(fmt, fields, counts):
            if item.problems:
                continue
            valid += 1
            turns = _turns(item.obj, fmt, fields)
            if fmt == "text":
                chars["text"].append(len(turns[0][1]))
            else:
                chars["prompt"].append(sum(len(text) for _, text in turns[:-1]))
                chars["response"].append(len(turns[-1][1]))
            dup = dups.check(item.line, row_keys(item.obj, fmt, fields))
            if dup:
                dup_counts[dup[0]] += 1
            if counter is not None:
                pending.append(item.obj)
                if len(pending) >= TOKEN_BATCH:
                    flush()
    if counter is not None:
        flush()
    return {"file": str(path), "format": fmt, "lines": counts.lines,
            "blank_lines": counts.blank, "rows": valid, "malformed_rows": counts.malformed,
            "duplicates": {"exact": dup_counts["duplicate"],
                           "normalised": dup_counts["near_duplicate"]},
            "chars": {k: _summary(v) for k, v in chars.items()},
            "tokenizer": counter.path if counter else None,
            "tokens": {k: _summary(v) for k, v in tokens.items()} if counter else None}


# --------------------------------------------------------------------------- prepare

class PrepareRefused(Exception):
    """The input has malformed rows (the first MAX_REPORTED, and how many more): nothing is
    written."""

    def __init__(self, problems: list[Problem], more: int = 0):
        self.problems, self.more = problems, more
        text = "\n".join(p.render() for p in problems)
        super().__init__(text + (f"\n... and {more} more problems" if more else ""))


def val_ratio_problem(value: float) -> str | None:
    """Why `value` cannot be a validation share, or None: a finite number in [0, 1)."""
    if not (isinstance(value, int | float) and math.isfinite(value) and 0 <= value < 1):
        return (f"expected a number from 0 up to, not including, 1 (0.1: one row in ten), "
                f"got {value!r}")
    return None


def split_indices(n: int, ratio: float, seed: int, groups: list[bytes] | None
                  ) -> tuple[list[int], list[int]]:
    """Seeded shuffle, then validation from the end, as `data.split` does.

    With `groups`, rows sharing a group (normalised prompt) go to the same side, so no
    validation prompt is also a training prompt. Without, each row is its own group and the
    result is exactly `data.split`'s.
    """
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = val_count(n, ratio)
    if groups is None:
        return order[: n - n_val], order[n - n_val:]
    sizes = Counter(groups)
    in_val: dict[bytes, bool] = {}
    taken = 0
    for i in reversed(order):
        g = groups[i]
        if g in in_val:
            continue
        in_val[g] = taken + sizes[g] <= n_val
        taken += sizes[g] if in_val[g] else 0
    if n_val and not taken and len(sizes) > 1:
        # Every group is larger than the validation share: use the smallest (latest) one.
        first_seen: dict[bytes, int] = {}
        for pos, i in enumerate(reversed(order)):
            first_seen.setdefault(groups[i], pos)
        in_val[min(sizes, key=lambda g: (sizes[g], first_seen[g]))] = True
    train = [i for i in order if not in_val[groups[i]]]
    val = [i for i in order if in_val[groups[i]]]
    return train, val


def subset_sizes(n_train: int, n_val: int, subset: int, ratio: float) -> tuple[int, int]:
    """The seed's pilot: N training rows and validation in the same proportion (900/100)."""
    want_val = max(1, round(subset * ratio / (1 - ratio))) if ratio > 0 else 0
    return min(subset, n_train), min(want_val, n_val)


def _write_rows(source: DataFile, offsets: array, indices: list[int], out: Any,
                convert: Any) -> dict:
    """Copy rows by byte offset into `out`; returns rows and sha256 of what was written."""
    sha = hashlib.sha256()
    for i in indices:
        raw = source.row_at(offsets[i])
        data = (convert(raw) if convert else raw) + b"\n"
        sha.update(data)
        out.write(data)
    return {"rows": len(indices), "sha256": sha.hexdigest()}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def prepare_file(path: Path, out_dir: Path, fmt: str, fields: dict, *, val_ratio: float = 0.1,
                 seed: int = 42, subset: int | None = None, dedup: bool = True,
                 system_prompt: str | None = None) -> tuple[dict, list[str]]:
    """Deduplicate, split and subset `path` into `out_dir`; returns (manifest, warnings).

    Memory holds byte offsets and digests only; rows are re-read by offset when written,
    byte for byte (or as chat messages when a system prompt must be added). The outputs are
    staged and renamed together at the end, only if the input did not change meanwhile, so
    a failure leaves the previous outputs (or none), never a mix or half a file.
    """
    path, out_dir = Path(path), Path(out_dir)
    problem = val_ratio_problem(val_ratio)
    if problem:
        raise DataToolError(f"--val-ratio: {problem}")
    if system_prompt and fmt == "text":
        raise DataToolError("--system-prompt needs chat rows: the text format has no roles")
    for name in OUTPUT_NAMES + ("prepare.json",):
        if _same_file(out_dir / name, path):
            raise DataToolError(f"{out_dir / name} is the input file; choose another --out")
    name = str(path)
    try:
        with DataFile(path) as source:
            return _prepare(source, out_dir, fmt, fields, val_ratio, seed, subset, dedup,
                            system_prompt)
    except DataFileError as exc:
        raise PrepareRefused([Problem(name, 0, ERROR, "unreadable", exc.message)]) from None


def _prepare(source: DataFile, out_dir: Path, fmt: str, fields: dict, val_ratio: float,
             seed: int, subset: int | None, dedup: bool, system_prompt: str | None
             ) -> tuple[dict, list[str]]:
    counts = ScanCounts()
    input_sha = hashlib.sha256()
    dups = DuplicateIndex()
    offsets, lines = array("q"), array("l")
    prompts: list[bytes] = []
    malformed: list[Problem] = []
    more = 0
    dropped: list[dict] = []
    kept_duplicates = 0
    name = source.name
    for item in source.scan(fmt, fields, counts, input_sha):
        if item.problems:
            for p in item.problems:
                if len(malformed) < MAX_REPORTED:
                    malformed.append(Problem(name, item.line, ERROR, "malformed", p))
                else:
                    more += 1
            continue
        keys = row_keys(item.obj, fmt, fields)
        dup = dups.check(item.line, keys)
        kept_duplicates += bool(dup) and not dedup
        if dup and dedup:
            dropped.append({"line": item.line, "duplicate_of": dup[1],
                            "kind": "exact" if dup[0] == "duplicate" else "normalised"})
            continue
        offsets.append(item.offset)
        lines.append(item.line)
        prompts.append(keys.prompt)
    del dups
    if malformed:
        raise PrepareRefused(malformed, more)
    if not offsets:
        raise PrepareRefused([Problem(name, 0, ERROR, "empty", "no examples in file "
                                      "(expected at least one JSON object line)")])

    n = len(offsets)
    train, val = split_indices(n, val_ratio, seed, prompts if dedup else None)
    val_prompts = {prompts[i] for i in val}
    train_prompts = {prompts[i] for i in train}
    shared = val_prompts & train_prompts
    overlap = {"prompts": len(shared),
               "train_rows": sum(prompts[i] in shared for i in train),
               "val_rows": sum(prompts[i] in shared for i in val),
               "val_lines": sorted(lines[i] for i in val if prompts[i] in shared)}
    assert not (dedup and shared), "grouped split must keep prompts on one side"

    warnings: list[str] = []
    plan: dict[str, list[int]] = {"train.jsonl": train}
    if val:
        plan["val.jsonl"] = val
    else:
        warnings.append(f"no validation rows ({n} rows, --val-ratio {val_ratio}); "
                        "val.jsonl not written")
    if shared:
        warnings.append(f"{len(shared)} normalised prompts appear in both train and val "
                        f"({overlap['val_rows']} validation rows); use --dedup to prevent it")
    requested_val = val_count(n, val_ratio)
    if val and len(val) != requested_val:
        warnings.append(f"validation has {len(val)} rows, not {requested_val}: rows sharing "
                        "a prompt are kept on the same side")
    if subset:
        n_sub_train, n_sub_val = subset_sizes(len(train), len(val), subset, val_ratio)
        if n_sub_train < subset:
            warnings.append(f"--subset {subset} is more than the {len(train)} training rows; "
                            "train_subset.jsonl holds all of them")
        plan["train_subset.jsonl"] = train[:n_sub_train]
        if n_sub_val:
            plan["val_subset.jsonl"] = val[:n_sub_val]

    convert = None
    if system_prompt:
        def convert(raw: bytes) -> bytes:
            row = to_canonical(json.loads(raw), fmt, fields, system_prompt)
            return json.dumps(row, ensure_ascii=False).encode("utf-8")

    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {}
    with ExitStack() as stack:  # every output renamed into place at the end, or none
        for out_name, indices in plan.items():
            out = stack.enter_context(staged_output(out_dir / out_name))
            outputs[out_name] = _write_rows(source, offsets, indices, out, convert)
        if not source.unchanged():
            raise DataToolError(f"{name} changed while it was being prepared; nothing "
                                "written, run it again")
    for stale in OUTPUT_NAMES:
        if stale not in plan and (out_dir / stale).exists():
            (out_dir / stale).unlink()
            warnings.append(f"removed {out_dir / stale} left by an earlier prepare")

    manifest = {
        "tool": f"jessy data prepare {__version__}",
        "input": {"path": name, "sha256": input_sha.hexdigest(), "bytes": counts.bytes,
                  "lines": counts.lines, "blank_lines": counts.blank},
        "format": fmt, "fields": fields,
        "output_format": "messages" if system_prompt else fmt,
        "system_prompt": system_prompt, "seed": seed, "val_ratio": val_ratio,
        "dedup": dedup, "subset": subset,
        "counts": {"rows": n + len(dropped), "duplicates_dropped": len(dropped),
                   "duplicates_kept": kept_duplicates, "kept": n,
                   "train": len(train), "val": len(val), "val_requested": requested_val,
                   "train_subset": len(plan.get("train_subset.jsonl", [])) if subset else None,
                   "val_subset": len(plan.get("val_subset.jsonl", [])) if subset else None},
        "dropped_duplicates": dropped,
        "overlap": overlap,
        "outputs": outputs,
    }
    write_json_atomic(out_dir / "prepare.json", manifest)
    return manifest, warnings
