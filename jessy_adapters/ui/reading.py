"""Readers for files that may be half-written, huge, or not what they claim to be.

The dashboard reads run folders while jessy writes them: metrics.jsonl grows a line at a time
(a last line without its newline is not an event yet), run.json is replaced atomically but a
copied or hand-edited one may be broken. Every reader here returns what it could read and says
what it could not; none raises for a bad file, so a bad file never becomes a 500.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

MAX_JSON = 16 * 1024 * 1024
"""Largest JSON document read whole (eval.json with every answer is ~100 KB)."""
MAX_LINE = 1024 * 1024
"""A metrics line longer than this is skipped, not parsed (jessy's events are ~400 bytes)."""


def clean(value: Any) -> Any:
    """VALUE with NaN and infinities as None: Python's json writes them, a browser's
    JSON.parse refuses them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def read_json(path: Path, max_bytes: int = MAX_JSON) -> tuple[Any, str | None]:
    """(value, None), (None, None) when PATH does not exist, (None, why) when it cannot be
    read as JSON."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read {Path(path).name}: {exc.strerror or exc}"
    if len(data) > max_bytes:
        return None, f"{Path(path).name} is larger than {max_bytes} bytes"
    try:
        return json.loads(data.decode("utf-8")), None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, f"{Path(path).name} is not valid JSON ({type(exc).__name__}: {exc})"


def read_object(path: Path) -> tuple[dict | None, str | None]:
    """As read_json, for a file that must hold a JSON object."""
    value, error = read_json(path)
    if error is None and value is not None and not isinstance(value, dict):
        return None, f"{Path(path).name} holds a {type(value).__name__}, not an object"
    return value, error


def read_text(path: Path, max_bytes: int = 256 * 1024) -> tuple[str | None, bool]:
    """(the first MAX_BYTES of PATH as text, whether it was cut); (None, False) when it is
    missing, unreadable or binary (a NUL byte)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError:
        return None, False
    if b"\0" in data[:8192]:
        return None, False
    return data[:max_bytes].decode("utf-8", errors="replace"), len(data) > max_bytes


def tail_bytes(path: Path, max_bytes: int) -> tuple[bytes, bool]:
    """(the last MAX_BYTES of PATH, whether the file is longer); (b"", False) when missing."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - max_bytes))
            return fh.read(max_bytes), size > max_bytes
    except OSError:
        return b"", False


def tail_text(path: Path, max_lines: int = 40, max_bytes: int = 16 * 1024) -> str | None:
    """The last lines of a log (at most MAX_LINES and MAX_BYTES); None when it is missing."""
    if not os.path.isfile(path):
        return None
    data, cut = tail_bytes(path, max_bytes)
    lines = data.decode("utf-8", errors="replace").splitlines()
    if cut and lines:
        lines = lines[1:]  # the first line is cut in the middle
    return "\n".join(lines[-max_lines:])


def _event(line: bytes) -> dict | None:
    try:
        value = json.loads(line)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    step = value.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float))):
        return None
    return clean(value)


@dataclass
class Chunk:
    """Events read from a byte offset, and the offset of the next unread byte."""
    events: list[dict] = field(default_factory=list)
    offset: int = 0
    skipped: int = 0
    reset: bool = False
    """The file is shorter than the offset asked for (replaced): read again from 0."""
    size: int = 0


def read_events(path: Path, offset: int = 0, max_bytes: int = 4 * 1024 * 1024) -> Chunk:
    """The complete lines of metrics.jsonl from byte OFFSET, at most about MAX_BYTES of them.

    A last line without its newline is being written: it is left for the next read (the
    offset stops before it). Lines that are not a JSON object are counted in `skipped`."""
    chunk = Chunk(offset=max(0, offset))
    try:
        fh = open(path, "rb")
    except OSError:
        return chunk
    with fh:
        try:
            size = os.fstat(fh.fileno()).st_size
        except OSError:
            return chunk
        chunk.size = size
        if chunk.offset > size:
            chunk.offset, chunk.reset = 0, True
        if chunk.offset == size:
            return chunk
        fh.seek(chunk.offset)
        data = fh.read(min(max_bytes, size - chunk.offset))
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) >= MAX_LINE:  # one absurd line: step over what was read of it
                chunk.offset += len(data)
                chunk.skipped += 1
            return chunk
        for line in data[:end].split(b"\n"):
            if not line.strip():
                continue
            event = _event(line) if len(line) <= MAX_LINE else None
            if event is None:
                chunk.skipped += 1
            else:
                chunk.events.append(event)
        chunk.offset += end + 1
    return chunk


def tail_events(path: Path, max_bytes: int = 64 * 1024) -> list[dict]:
    """The events in the last MAX_BYTES of metrics.jsonl (for list rows: last step, loss)."""
    data, cut = tail_bytes(path, max_bytes)
    lines = data.split(b"\n")
    if cut:
        lines = lines[1:]
    if lines and not data.endswith(b"\n"):
        lines = lines[:-1]  # being written
    return [e for e in (_event(line) for line in lines if line.strip()) if e is not None]


def parse_time(text: Any) -> float | None:
    """Unix time of run.json's "2026-12-01T23:56:53+0000" (or any ISO form); None if not."""
    if not isinstance(text, str):
        return None
    for parse in (lambda s: datetime.strptime(s, "%Y-%m-%dT%H:%M:%S%z"),
                  datetime.fromisoformat):
        try:
            moment = parse(text)
        except ValueError:
            continue
        return moment.timestamp() if moment.tzinfo else moment.astimezone().timestamp()
    return None


def number(value: Any) -> float | None:
    """VALUE when it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def lock_held(run_path: Path) -> bool | None:
    """Whether a process holds the flock on RUN_PATH/.lock (a live jessy owns the run), read
    from /proc/locks so the dashboard never takes the lock itself (a --resume starting at
    that moment would be refused). None where that cannot be known (no /proc/locks)."""
    try:
        st = os.stat(run_path / ".lock")
    except OSError:
        return False
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or "FLOCK" not in fields:
            continue
        for item in fields:
            parts = item.split(":")
            if len(parts) == 3:
                try:
                    if (int(parts[0], 16), int(parts[1], 16), int(parts[2])) == want:
                        return True
                except ValueError:
                    pass
    return False
