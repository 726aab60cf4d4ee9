"""Server-sent events for one run: metrics.jsonl tailed from a byte offset, run.json watched.

The stream never re-reads a file whole: it stats metrics.jsonl and reads only the bytes past
its offset (complete lines only), and re-reads run.json (small) only when its stat changes.
Each `metrics` message carries `id: <offset>`, so a browser that reconnects (EventSource does
so by itself) sends Last-Event-ID and gets exactly the lines it has not seen. Messages:

    metrics   {"events": [...], "offset": N, "skipped": K}   new complete lines
    progress  Progress.to_json(...)                        after each metrics message
    run       {"status", "stale", "attempts", "winner"}      when run.json changes
    reset     {}                                             the file was replaced: start again
    end       {"status"}                                     the run is over and fully sent
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

from .progress import planned_steps
from .reading import clean, lock_held, read_events, read_object


def message(event: str, data, id: int | None = None) -> str:
    head = f"id: {id}\n" if id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(clean(data), allow_nan=False)}\n\n"


def _stat(path: Path):
    try:
        st = path.stat()
        return (st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        return None


def run_stream(docs, key: str, path: Path, offset: int = 0, poll: float = 0.5,
               heartbeat: float = 10.0, max_bytes: int = 1024 * 1024) -> Iterator[str]:
    """The run's events from byte OFFSET, then new ones as they are appended, until the run
    is no longer running and every complete line has been sent."""
    metrics, manifest_file = path / "metrics.jsonl", path / "run.json"
    yield f"retry: 2000\n: jessy ui stream for {key}\n\n"
    manifest_sig, status, manifest = object(), None, {}
    quiet_since = time.monotonic()
    while True:
        sig = _stat(manifest_file)
        if sig != manifest_sig:
            manifest_sig = sig
            manifest, error = read_object(manifest_file)
            manifest = manifest or {}
            status = manifest.get("status") if error is None and manifest else None
            attempts = manifest.get("attempts") if isinstance(manifest.get("attempts"),
                                                              list) else []
            yield message("run", {
                "status": status if isinstance(status, str) else "unreadable",
                "error": error,
                "stale": lock_held(path) is False if status == "running" else None,
                "winner": manifest.get("winner"),
                "attempts": [{k: a.get(k) for k in ("number", "backend", "status", "failure")}
                             for a in attempts if isinstance(a, dict)]})
            quiet_since = time.monotonic()
        chunk = read_events(metrics, offset, max_bytes)
        if chunk.reset:
            offset = 0
            yield message("reset", {})
            continue
        if chunk.offset != offset:
            offset = chunk.offset
            yield message("metrics", {"events": chunk.events, "offset": offset,
                                      "skipped": chunk.skipped}, id=offset)
            running = status == "running"
            yield message("progress", docs.progress(
                key, path, planned_steps(manifest),
                running and lock_held(path) is not False))
            quiet_since = time.monotonic()
            if offset < chunk.size:
                continue  # more complete lines may be waiting: send them before sleeping
        elif isinstance(status, str) and status != "running":
            # over, and no complete line left (a partial one a killed writer left never ends)
            yield message("end", {"status": status, "offset": offset})
            return
        if time.monotonic() - quiet_since >= heartbeat:
            yield ": keepalive\n\n"  # finds a client that has gone, frees its thread
            quiet_since = time.monotonic()
        time.sleep(poll)
