"""What a training data file and each of its rows must be: every rule written once.

`data.prepare` (what `jessy run` and `jessy translate` train on) and `jessy data
validate|prepare|stats` read data only through `DataFile`, so a file `jessy data validate`
passes also loads at run time, and a hostile file (a FIFO, /dev/zero, bytes that are not
UTF-8, one endless line, a lone surrogate, NaN) is refused the same way everywhere, with
its file and line, in bounded time and memory, before anything is written.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..templates import ALPACA_INPUT, ALPACA_INPUT_SYSTEM
from ..yaml_limits import _KINDS as FILE_KINDS
from ..yaml_limits import _SIGNATURES as NOT_UTF8_SIGNATURES

MAX_ROW_BYTES = 1 << 20
"""One row, line ending excluded: ~250k tokens, far beyond any context window, so a longer
line is a file without newlines (or an attack), and it is skipped, never held in memory."""
MAX_REPORTED = 50  # problems printed (or raised) per file; the rest are counted
ROLES = {"system", "user", "assistant"}
FORMATS = ("prompt_response", "messages", "text", "alpaca", "sharegpt")
FIELDS = {"prompt": "prompt", "response": "response", "messages": "messages", "text": "text",
          "instruction": "instruction", "input": "input", "output": "output",
          "conversations": "conversations"}
"""Each format's field names by default (a spec's data.fields renames them)."""
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "model": "assistant", "bot": "assistant", "chatgpt": "assistant",
                  "system": "system"}
"""ShareGPT `from` values as chat roles (the names the public ShareGPT sets use)."""
_CHUNK = 1 << 16
_UTF8_BOM = b"\xef\xbb\xbf"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class DataFileError(Exception):
    """The file as a whole cannot be read as JSONL: missing, not a regular file, unreadable."""

    def __init__(self, file: str, message: str):
        self.file, self.message = file, message
        super().__init__(f"{file}: {message}")


def _kind(mode: int) -> str:
    return next((name for test, name in FILE_KINDS if test(mode)), "not a regular file")


def stat_data_file(path: str | Path) -> os.stat_result:
    """The file's stat (symlinks followed) if it is a regular file, else DataFileError.

    A FIFO, /dev/zero or a socket would otherwise block or be read forever, or (as a socket
    cannot be opened) be called missing: each is refused by what it is.
    """
    name = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataFileError(name, "file not found") from None
    except OSError as exc:
        raise DataFileError(name, f"cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataFileError(name, f"not a regular file: it is {_kind(st.st_mode)}; expected "
                                  "a JSONL file (one JSON object per line)")
    return st


# --------------------------------------------------------------------------- one row

class _RowRefused(ValueError):
    """Raised from the JSON decoder's hooks: valid for Python's json, but not portable."""


def _object(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _RowRefused(f"duplicate key {key!r} in one object (readers disagree on which "
                          "value counts); expected each key once")
    return obj


def _constant(name: str) -> Any:
    raise _RowRefused(f"{name} is not a JSON value (JSON has no NaN or Infinity); expected a "
                      "number or a string")


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant)


def _lone_surrogate(obj: Any) -> str | None:
    """Where the first lone surrogate is (a JSON pointer), or None; iterative, any depth."""
    stack = [(obj, "")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")  # at C speed: a long string of emoji is no slow path
            except UnicodeEncodeError as exc:
                return f"lone surrogate \\u{ord(value[exc.start]):04x} in {where or '/'}"
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                stack.append((item, f"{where}/{key}"))
                stack.append((key, f"a key of {where or '/'}"))
        elif isinstance(value, list):
            stack.extend((item, f"{where}/{i}") for i, item in reversed(list(enumerate(value))))
    return None


def parse_row(text: str) -> tuple[Any, str | None]:
    """(object, None) or (None, what is wrong) for one decoded line, line ending included.

    Strict JSON only: NaN, Infinity, duplicate keys and lone surrogates (`"\\ud800"`) are
    accepted by Python's json but break the UTF-8 writer or other readers at run time.
    """
    try:
        obj = _DECODER.decode(text.rstrip("\r\n"))  # errors then point into the line
    except json.JSONDecodeError as exc:
        where = (f"column {exc.colno}" if exc.msg.endswith(" at")  # "... starting at"
                 else f"(column {exc.colno})")
        return None, f"not valid JSON: {exc.msg} {where}; expected one JSON object per line"
    except _RowRefused as exc:
        return None, f"not valid JSON: {exc}"
    except RecursionError:
        return None, ("cannot read this row: values nested too deeply; expected a JSON "
                      "object of strings and lists")
    except ValueError as exc:  # an integer over Python's 4300-digit limit
        return None, f"cannot read this row: {str(exc).split(':')[0]}"
    if _SURROGATE_ESCAPE.search(text):
        where = _lone_surrogate(obj)
        if where:
            return None, (f"{where} (half of a UTF-16 pair, which UTF-8 cannot encode); "
                          "expected valid Unicode text")
    return obj, None


def json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
             float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _string_field(obj: dict, key: str) -> str | None:
    if key not in obj:
        return f"missing field {key!r} (expected a non-empty string)"
    if not isinstance(obj[key], str):
        return f"field {key!r} must be a string, got {json_type(obj[key])}"
    if not obj[key].strip():
        return f"field {key!r} is empty (expected a non-empty string)"
    return None


def as_messages(obj: dict, fmt: str, fields: dict, alpaca_prompt: bool = False
                ) -> tuple[list, list[str]]:
    """An alpaca or ShareGPT row as chat messages (prompt and response become the user and
    assistant turns), with what is wrong with its own fields; other formats: ([], []).

    An alpaca row's input follows its instruction on the next line, as LLaMA-Factory and
    Axolotl render alpaca rows through a chat template; with `alpaca_prompt` (the spec's
    chat_template is alpaca) under Alpaca's `### Input:` heading."""
    if fmt == "alpaca":
        problems = [p for p in (_string_field(obj, fields["instruction"]),
                                _string_field(obj, fields["output"])) if p]
        extra = obj.get(fields["input"])
        if extra is not None and not isinstance(extra, str):
            problems.append(f"field {fields['input']!r} must be a string, got {json_type(extra)}")
        if problems:
            return [], problems
        prompt = obj[fields["instruction"]]
        if _has_input(obj, fields):
            prompt += (ALPACA_INPUT if alpaca_prompt else "\n") + extra
        msgs = [{"role": "user", "content": prompt},
                {"role": "assistant", "content": obj[fields["output"]]}]
        if isinstance(obj.get("system"), str) and obj["system"].strip():
            msgs.insert(0, {"role": "system", "content": obj["system"]})
        return msgs, []
    if fmt == "sharegpt":
        turns = obj.get(fields["conversations"])
        if not isinstance(turns, list) or not turns:
            return [], [f"field {fields['conversations']!r} must be a non-empty list of "
                        "{from, value} turns"]
        msgs, problems = [], []
        for i, turn in enumerate(turns):
            role = SHAREGPT_ROLES.get(turn.get("from")) if isinstance(turn, dict) else None
            if role is None:
                problems.append(f"turn {i}: 'from' must be one of "
                                f"{', '.join(sorted(SHAREGPT_ROLES))} (got "
                                f"{turn.get('from') if isinstance(turn, dict) else turn!r})")
                continue
            msgs.append({"role": role, "content": turn.get("value")})
        return msgs, problems
    return [], []


def row_problems(obj: Any, fmt: str, fields: dict) -> list[str]:
    """Every reason one parsed row is unusable (empty list: usable), so one pass fixes it."""
    if not isinstance(obj, dict):
        return [f"expected a JSON object per line, got {json_type(obj)}"]
    if fmt in ("alpaca", "sharegpt"):
        msgs, problems = as_messages(obj, fmt, fields)
        if problems:
            return problems
        obj, fmt, fields = {"messages": msgs}, "messages", {**fields, "messages": "messages"}
    if fmt == "prompt_response":
        found = [_string_field(obj, fields[role]) for role in ("prompt", "response")]
        return [p for p in found if p]
    if fmt == "text":
        problem = _string_field(obj, fields["text"])
        return [problem] if problem else []
    key = fields["messages"]
    msgs = obj.get(key)
    if key not in obj:
        return [f"missing field {key!r} (expected a non-empty list of messages)"]
    if not isinstance(msgs, list) or not msgs:
        return [f"field {key!r} must be a non-empty list of messages, got "
                + ("an empty array" if isinstance(msgs, list) else json_type(msgs))]
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            out.append(f"message {i}: expected an object with role and content, "
                       f"got {json_type(m)}")
            continue
        if m.get("role") not in ROLES:
            out.append(f"message {i}: role must be one of system, user, assistant "
                       f"(got {m.get('role')!r})")
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            out.append(f"message {i}: content must be a non-empty string")
    last = msgs[-1]
    if isinstance(last, dict) and last.get("role") in ROLES and last["role"] != "assistant":
        out.append("the last message must be the assistant's (it is what the model learns), "
                   f"got {last['role']!r}")
    return out


def to_canonical(obj: dict, fmt: str, fields: dict, system_prompt: str | None,
                 alpaca_prompt: bool = False) -> dict:
    """A usable row as every backend receives it: `messages` (chat formats) or `text`. Rows
    without a system text get the spec's system prompt; with `alpaca_prompt`, failing that,
    an alpaca row with an input gets Alpaca's preamble for inputs (the template writes the
    other one, as Axolotl's alpaca prompter chooses between them)."""
    if fmt == "text":
        return {"text": obj[fields["text"]]}
    if fmt == "prompt_response":
        msgs = [{"role": "user", "content": obj[fields["prompt"]]},
                {"role": "assistant", "content": obj[fields["response"]]}]
    elif fmt in ("alpaca", "sharegpt"):
        msgs, _ = as_messages(obj, fmt, fields, alpaca_prompt)
    else:
        msgs = [{"role": m["role"], "content": m["content"]} for m in obj[fields["messages"]]]
    if system_prompt and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": system_prompt})
    elif alpaca_prompt and fmt == "alpaca" and msgs[0]["role"] != "system" and _has_input(
            obj, fields):
        msgs.insert(0, {"role": "system", "content": ALPACA_INPUT_SYSTEM})
    return {"messages": msgs}


def _has_input(obj: dict, fields: dict) -> bool:
    extra = obj.get(fields["input"])
    return isinstance(extra, str) and bool(extra.strip())


# --------------------------------------------------------------------------- one file

@dataclass
class ScannedLine:
    line: int
    offset: int  # where the row's bytes start in the file (after a UTF-8 BOM)
    obj: Any = None
    problems: list[str] = field(default_factory=list)


@dataclass
class ScanCounts:
    lines: int = 0
    blank: int = 0
    malformed: int = 0
    bytes: int = 0


class DataFile:
    """A JSONL data file, opened only if it is a regular file, read a bounded line at a time.

    Opened without blocking and checked again on the open descriptor, so what is checked is
    what is read. `unchanged()` tells a caller that re-reads rows by offset (`jessy data
    prepare`) whether the file was rewritten meanwhile.
    """

    def __init__(self, path: str | Path):
        self.name = str(path)
        stat_data_file(path)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                         | getattr(os, "O_BINARY", 0))
        except OSError as exc:
            raise DataFileError(self.name, f"cannot read: {exc.strerror}") from None
        self._fh: BinaryIO = os.fdopen(fd, "rb")
        self._stat = os.fstat(fd)
        if not stat.S_ISREG(self._stat.st_mode):  # replaced between stat and open
            self._fh.close()
            raise DataFileError(self.name, "not a regular file: it is "
                                           f"{_kind(self._stat.st_mode)}")

    def __enter__(self) -> DataFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def unchanged(self) -> bool:
        now = os.fstat(self._fh.fileno())
        return ((now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns)
                == (self._stat.st_dev, self._stat.st_ino, self._stat.st_size,
                    self._stat.st_mtime_ns))

    def row_at(self, offset: int) -> bytes:
        """The row starting at `offset` (one that scan accepted), without its line ending."""
        self._fh.seek(offset)
        return self._fh.readline(MAX_ROW_BYTES + 2).rstrip(b"\r\n")

    def _lines(self, hasher: Any) -> Iterator[tuple[int, int, bytes | int, int]]:
        """(number, offset, bytes, length) of every line; instead of the bytes of a line over
        MAX_ROW_BYTES, its size (line ending excluded): it is skipped a chunk at a time."""
        offset = 0
        self._fh.seek(0)
        for number in itertools.count(1):
            data = self._fh.readline(MAX_ROW_BYTES + 2)  # room for "\r\n"
            if not data:
                return
            length = len(data)
            if hasher is not None:
                hasher.update(data)
            size = len(data.rstrip(b"\r\n"))
            if size > MAX_ROW_BYTES:
                while not data.endswith(b"\n"):
                    data = self._fh.readline(_CHUNK)
                    if not data:
                        break
                    length += len(data)
                    if hasher is not None:
                        hasher.update(data)
                size = length - (len(data) - len(data.rstrip(b"\r\n")))
            yield number, offset, size if size > MAX_ROW_BYTES else data, length
            offset += length

    def scan(self, fmt: str, fields: dict, counts: ScanCounts,
             hasher: Any = None) -> Iterator[ScannedLine]:
        """Every non-blank line, parsed and checked, with its byte offset.

        Blank lines are skipped. A UTF-8 BOM before the first row is allowed (editors write
        one); a file that starts like UTF-16 or gzip is refused at line 1 and not read on.
        """
        try:
            for number, start, data, length in self._lines(hasher):
                counts.lines, counts.bytes = number, start + length
                if isinstance(data, int):
                    counts.malformed += 1
                    yield ScannedLine(number, start, problems=[
                        f"the line has {data:,} bytes, more than the {MAX_ROW_BYTES:,} "
                        f"({MAX_ROW_BYTES / 2**20:g} MiB) one row may have; it was not "
                        "parsed; expected one JSON object per line"])
                    continue
                if number == 1 and data.startswith(_UTF8_BOM):
                    data, start = data[len(_UTF8_BOM):], start + len(_UTF8_BOM)
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    counts.malformed += 1
                    guess = next((what for sig, what in NOT_UTF8_SIGNATURES
                                  if number == 1 and data.startswith(sig)), None)
                    yield ScannedLine(number, start, problems=[
                        f"not valid UTF-8: byte 0x{data[exc.start]:02x} at byte offset "
                        f"{start + exc.start:,} of the file (byte {exc.start + 1} of the line)"
                        + (f"; it looks like {guess}" if guess else "")
                        + "; expected UTF-8 text"])
                    if guess:
                        return
                    continue
                if not text.strip():
                    counts.blank += 1
                    continue
                obj, problem = parse_row(text)
                problems = [problem] if problem else row_problems(obj, fmt, fields)
                if problems:
                    counts.malformed += 1
                yield ScannedLine(number, start, obj, problems)
        except OSError as exc:
            raise DataFileError(self.name, f"cannot read: {exc.strerror}") from None


# --------------------------------------------------------------------------- outputs

@contextmanager
def staged_output(dest: Path) -> Iterator[BinaryIO]:
    """A temp file beside `dest` that becomes `dest` only if the block ends without error,
    so an error (or a kill) mid-way never leaves half a file under dest's name."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(tmp, dest)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
