"""What each JSON endpoint returns, built from the folders with the tolerant readers.

A run whose run.json cannot be read is still a row (status "unreadable", with why); an unknown
status (a sweep's "pruned", a future one) is passed through as it is. List rows are cached by
the files' stat signatures and read only the tail of metrics.jsonl; the run page's progress
reads metrics.jsonl once and afterwards only the bytes added since.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path

from .folders import COMPARE, RUN, SWEEP, Found, Roots, file_inside, inside, valid_relative
from .progress import Progress, planned_steps
from .reading import (
    clean,
    lock_held,
    number,
    parse_time,
    read_events,
    read_object,
    read_text,
    tail_events,
    tail_text,
)

UNREADABLE = "unreadable"
_RUN_ID = re.compile(r"^\d{8}-\d{6}-(?P<name>.+)-[0-9a-f]{4}$")
NATIVE_SUFFIXES = (".yaml", ".yml", ".json", ".toml", ".txt", ".cfg", ".ini", ".py", ".sh",
                   ".jsonl", ".md")
"""Files directly in an attempt folder shown as "what the backend got" (logs excluded)."""
MAX_NATIVE_FILES = 20


def _stat_sig(path: Path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def run_name(run_id: str, folder: Path) -> str:
    """The spec name inside a run id (<stamp>-<name>-<hex>), else the folder's name."""
    match = _RUN_ID.match(run_id or "")
    return match.group("name") if match else folder.name


def _attempts(manifest: dict) -> list[dict]:
    attempts = manifest.get("attempts")
    return [a for a in attempts if isinstance(a, dict)] if isinstance(attempts, list) else []


def _failure(value) -> dict | None:
    if not isinstance(value, dict):
        return None
    return {"kind": value.get("kind"), "reason": value.get("reason")}


def _str(value) -> str | None:
    return value if isinstance(value, str) else None


class Documents:
    """The dashboard's view of the roots; safe to share between request threads."""

    def __init__(self, roots: Roots):
        self.roots = roots
        self._lock = threading.Lock()
        self._rows: dict[str, tuple] = {}
        self._progress: OrderedDict[str, dict] = OrderedDict()

    # ---- the runs list -------------------------------------------------------------------

    def listing(self, status: str | None = None, backend: str | None = None) -> dict:
        found = self.roots.discover()
        runs = [self.run_row(f) for f in found if f.kind == RUN]
        runs.sort(key=lambda r: (r["started_at"] or 0, r["run_id"] or ""), reverse=True)
        statuses = sorted({r["status"] for r in runs})
        backends = sorted({b for r in runs for b in r["backends"]})
        if status:
            wanted = set(status.split(","))
            runs = [r for r in runs if r["status"] in wanted]
        if backend:
            wanted = set(backend.split(","))
            runs = [r for r in runs if wanted & set(r["backends"])]
        doc = {"roots": self.roots.describe(), "runs": runs,
               "compares": [self.compare_row(f) for f in found if f.kind == COMPARE],
               "sweeps": [self.sweep_row(f) for f in found if f.kind == SWEEP],
               "statuses": statuses, "backends": backends}
        doc = clean(doc)
        stable = json.dumps({**doc, "runs": [{k: v for k, v in r.items() if k != "wall_s"}
                                             for r in doc["runs"]]}, sort_keys=True)
        doc["version"] = hashlib.sha1(stable.encode()).hexdigest()[:16]
        return doc

    def run_row(self, found: Found) -> dict:
        """One row of the runs list (cached until run.json or metrics.jsonl change)."""
        sig = (_stat_sig(found.path / "run.json"), _stat_sig(found.path / "metrics.jsonl"))
        with self._lock:
            cached = self._rows.get(found.key)
        if cached is None or cached[0] != sig:
            cached = (sig, self._build_row(found))
            with self._lock:
                self._rows[found.key] = cached
        row = dict(cached[1])
        if row["status"] == "running":
            row["stale"] = lock_held(found.path) is False
            if row["started_at"] and not row["finished"]:
                row["wall_s"] = max(0.0, time.time() - row["started_at"])
        return row

    def _build_row(self, found: Found) -> dict:
        manifest, error = read_object(found.path / "run.json")
        if error is None and manifest is None:
            error = "run.json is missing"
        row = {"key": found.key, "kind": RUN, "group": found.group, "run_id": found.path.name,
               "name": found.path.name, "status": UNREADABLE, "readable": False,
               "error": error, "stale": None, "winner": None, "plan": [], "backends": [],
               "fallbacks": [], "steps_done": None, "steps_planned": None, "final_loss": None,
               "wall_s": None, "started": None, "started_at": None, "finished": None}
        if manifest is None:
            try:
                row["started_at"] = os.stat(found.path).st_mtime
            except OSError:
                pass
            return row
        run_id = _str(manifest.get("run_id")) or found.path.name
        attempts = _attempts(manifest)
        status = manifest.get("status")
        row.update(run_id=run_id, name=run_name(run_id, found.path),
                   status=status if isinstance(status, str) and status else "unknown",
                   readable=True, error=None, winner=_str(manifest.get("winner")),
                   plan=[p for p in manifest.get("plan") or [] if isinstance(p, str)]
                   if isinstance(manifest.get("plan"), list) else [],
                   started=_str(manifest.get("created")),
                   started_at=parse_time(manifest.get("created")),
                   finished=_str(manifest.get("finished")),
                   steps_planned=planned_steps(manifest))
        row["backends"] = sorted({a["backend"] for a in attempts
                                  if isinstance(a.get("backend"), str)} | set(row["plan"]))
        row["fallbacks"] = [{"backend": a.get("backend"), "status": a.get("status"),
                             **(_failure(a.get("failure")) or {"kind": None, "reason": None})}
                            for a in attempts if a.get("status") in ("failed", "skipped")]
        events = tail_events(found.path / "metrics.jsonl")
        last_attempt = attempts[-1].get("number") if attempts else None
        train = [e for e in events if e.get("type") == "train"
                 and (last_attempt is None or e.get("attempt") == last_attempt)]
        if train:
            row["steps_done"] = train[-1].get("step")
        summary = manifest.get("summary") if isinstance(manifest.get("summary"), dict) else {}
        loss = number(summary.get("final_loss"))
        if loss is None:
            losses = [e["loss"] for e in train if number(e.get("loss")) is not None]
            loss = losses[-1] if losses else None
        row["final_loss"] = loss
        if row["steps_done"] is None and number(summary.get("steps")) is not None:
            row["steps_done"] = summary["steps"]
        end = parse_time(manifest.get("finished"))
        if row["started_at"] and end:
            row["wall_s"] = max(0.0, end - row["started_at"])
        elif isinstance(manifest.get("timings"), dict):
            row["wall_s"] = number(manifest["timings"].get("process_s"))
        return clean(row)

    def compare_row(self, found: Found) -> dict:
        report, error = read_object(found.path / "compare.json")
        state, _ = read_object(found.path / "compare-state.json")
        spec = (report or {}).get("spec") or (state or {}).get("spec") or {}
        rows = (report or {}).get("backends") if isinstance((report or {}).get("backends"),
                                                             list) else []
        backends = [{"backend": r.get("backend"), "status": r.get("status")}
                    for r in rows if isinstance(r, dict)]
        if not backends and isinstance((state or {}).get("runs"), dict):
            backends = [{"backend": b, "status": None} for b in state["runs"]]
        scoring = (report or {}).get("scoring") if isinstance((report or {}).get("scoring"),
                                                              dict) else {}
        return clean({"key": found.key, "kind": COMPARE, "group": found.group,
                      "name": spec.get("name") if isinstance(spec, dict) else None,
                      "folder": found.path.name, "error": error, "backends": backends,
                      "winner": scoring.get("winner"), "complete": (report or {}).get("complete"),
                      "updated": (report or {}).get("updated")})

    def sweep_row(self, found: Found) -> dict:
        sweep, error = read_object(found.path / "sweep.json")
        trials = [t for t in (sweep or {}).get("trials") or [] if isinstance(t, dict)] \
            if isinstance((sweep or {}).get("trials"), list) else []
        states: dict[str, int] = {}
        for t in trials:
            state = str(t.get("state") or "unknown")
            states[state] = states.get(state, 0) + 1
        return clean({"key": found.key, "kind": SWEEP, "group": found.group,
                      "name": (sweep or {}).get("name") or found.path.name,
                      "folder": found.path.name, "error": error, "trials": len(trials),
                      "states": states})

    # ---- one run ---------------------------------------------------------------------------

    def run(self, key: str, path: Path) -> dict:
        found = Found(RUN, key, path, self._group_of(key))
        row = self.run_row(found)
        manifest, _ = read_object(path / "run.json")
        summary = (manifest or {}).get("summary")
        doc = {**row, "manifest": clean(manifest), "progress": None, "attempts": [],
               "summary": summary if isinstance(summary, dict) else None,
               "spec": None, "eval": None, "export": None}
        running = row["status"] == "running"
        doc["progress"] = self.progress(key, path, planned_steps(manifest or {}),
                                        running and not row["stale"])
        spec, cut = read_text(path / "spec.yaml")
        if spec is not None:
            doc["spec"] = {"text": spec, "truncated": cut}
        doc["attempts"] = [self._attempt(path, a) for a in _attempts(manifest or {})]
        doc["eval"] = self._eval(path)
        doc["export"] = self._export(path)
        return clean(doc)

    def progress(self, key: str, path: Path, planned: int | None, running: bool) -> dict:
        """The progress of KEY's metrics.jsonl, read on from where the last call stopped."""
        metrics = path / "metrics.jsonl"
        sig = _stat_sig(metrics)
        with self._lock:
            entry = self._progress.get(key)
            if entry is None or sig is None or entry["ino"] != sig[0] or entry["offset"] > sig[1]:
                entry = {"ino": sig[0] if sig else None, "offset": 0, "progress": Progress(),
                         "lock": threading.Lock()}
                self._progress[key] = entry
            self._progress.move_to_end(key)
            while len(self._progress) > 256:
                self._progress.popitem(last=False)
        with entry["lock"]:
            while True:
                chunk = read_events(metrics, entry["offset"])
                if chunk.reset:  # replaced by a shorter file: start again
                    entry["progress"], entry["offset"] = Progress(), 0
                    continue
                for event in chunk.events:
                    entry["progress"].feed(event)
                if chunk.offset == entry["offset"]:
                    break
                entry["offset"] = chunk.offset
            return entry["progress"].to_json(planned, running)

    def _group_of(self, key: str) -> str | None:
        """The nearest compare or sweep folder above KEY, if any."""
        parts = key.split("/")
        for n in range(len(parts) - 1, 0, -1):
            parent = "/".join(parts[:n])
            for kind in (COMPARE, SWEEP):
                if self.roots.resolve(parent, kind) is not None:
                    return parent
        return None

    def _attempt(self, run_path: Path, attempt: dict) -> dict:
        doc = {k: attempt.get(k) for k in ("number", "backend", "status", "started",
                                           "finished", "seconds", "exit_code", "dir",
                                           "command", "device", "availability", "notes",
                                           "total_steps", "phases", "continue_adapter",
                                           "memory_limit_gb", "runtime")}
        notes = attempt.get("notes")
        doc["notes"] = [str(n) for n in notes] if isinstance(notes, list) else []
        for name in ("phases", "runtime"):
            if not isinstance(doc[name], dict):
                doc[name] = None
        doc["failure"] = _failure(attempt.get("failure"))
        doc["stderr_tail"] = doc["stdout_tail"] = None
        doc["files"] = []
        rel = attempt.get("dir")
        folder = file_folder(run_path, rel) if isinstance(rel, str) else None
        if folder is None:
            return doc
        for log in ("stderr", "stdout"):
            log_file = file_inside(run_path, f"{rel}/{log}.log")
            if log_file is not None:
                doc[f"{log}_tail"] = tail_text(log_file)
        try:
            names = sorted(e.name for e in os.scandir(folder) if not e.name.startswith("."))
        except OSError:
            names = []
        for name in names:
            if not name.endswith(NATIVE_SUFFIXES) or len(doc["files"]) >= MAX_NATIVE_FILES:
                continue
            file = file_inside(run_path, f"{rel}/{name}")
            if file is None:
                continue
            text, cut = read_text(file, 64 * 1024)
            if text is not None:
                doc["files"].append({"name": name, "path": f"{rel}/{name}",
                                     "bytes": file.stat().st_size, "text": text,
                                     "truncated": cut})
        return doc

    def _eval(self, run_path: Path) -> dict | None:
        data, error = read_object(run_path / "eval.json")
        if data is None and error is None:
            return None
        if error:
            return {"error": error}
        examples = data.get("examples") if isinstance(data.get("examples"), dict) else {}
        sets = {}
        for name, rows in examples.items():
            if isinstance(rows, list):
                sets[name] = [{k: r.get(k) for k in ("prompt", "expected", "base", "tuned",
                                                     "base_correct", "tuned_correct")}
                              for r in rows if isinstance(r, dict)]
        models = data.get("models") if isinstance(data.get("models"), dict) else {}
        models = {k: v for k, v in models.items() if isinstance(v, dict)}
        return {"error": None, "models": models, "general_drop": data.get("general_drop"),
                "backend": data.get("backend"), "model": data.get("model"),
                "seconds": data.get("seconds"), "examples": sets}

    def _export(self, run_path: Path) -> dict | None:
        folder = file_folder(run_path, "export")
        if folder is None:
            return None
        files = []
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            entries = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_file(follow_symlinks=False):
                    files.append({"name": entry.name, "bytes": entry.stat().st_size,
                                  "kind": "gguf" if entry.name.endswith(".gguf") else "file"})
                elif entry.is_dir(follow_symlinks=False):
                    files.append({"name": entry.name + "/", "kind": "folder",
                                  "bytes": sum(e.stat().st_size for e in os.scandir(entry.path)
                                               if e.is_file(follow_symlinks=False))})
            except OSError:
                continue
        info, error = read_object(folder / "export.json")
        if info is not None:
            gguf = info.get("gguf")
            info["gguf"] = [g for g in gguf if isinstance(g, dict)] if isinstance(gguf, list) \
                else []
            if not isinstance(info.get("modelfile"), dict):
                info["modelfile"] = {}
        modelfile = file_inside(run_path, "export/Modelfile")
        text = read_text(modelfile, 64 * 1024)[0] if modelfile else None
        return {"files": files, "info": info, "error": error, "modelfile": text}

    # ---- compare and sweep folders ------------------------------------------------------

    def _run_key(self, folder: Path, rel) -> str | None:
        """The key of the run folder REL (relative to FOLDER, or absolute) names, if it is a
        run folder inside a root."""
        if not isinstance(rel, str) or not rel:
            return None
        if os.path.isabs(rel):
            target = Path(rel)
        else:
            parts = valid_relative(rel.rstrip("/"))
            if parts is None:
                return None
            target = folder.joinpath(*parts)
        key = self.roots.key_for(target)
        return key if key is not None and self.roots.resolve(key, RUN) is not None else None

    def _status_of(self, key: str | None) -> str | None:
        if key is None:
            return None
        path = self.roots.resolve(key, RUN)
        return self.run_row(Found(RUN, key, path))["status"] if path else None

    def compare(self, key: str, path: Path) -> dict:
        row = self.compare_row(Found(COMPARE, key, path))
        report, _ = read_object(path / "compare.json")
        state, state_error = read_object(path / "compare-state.json")
        markdown = read_text(path / "compare.md")[0]
        backends = []
        rows = report.get("backends") if isinstance((report or {}).get("backends"), list) \
            else []
        seen = set()
        for r in rows:
            if not isinstance(r, dict):
                continue
            run_key = self._run_key(path, r.get("run_dir"))
            backends.append({**r, "run_key": run_key, "live_status": self._status_of(run_key)})
            seen.add(r.get("backend"))
        state_runs = (state or {}).get("runs") if isinstance((state or {}).get("runs"), dict) \
            else {}
        for name, rel in state_runs.items():
            if name not in seen:  # in progress: not in compare.json yet
                run_key = self._run_key(path, rel)
                backends.append({"backend": name, "status": self._status_of(run_key),
                                 "run_dir": rel, "run_key": run_key,
                                 "live_status": self._status_of(run_key)})
        return clean({**row, "report": report, "state_error": state_error,
                      "markdown": markdown, "backends": backends})

    def sweep(self, key: str, path: Path) -> dict:
        row = self.sweep_row(Found(SWEEP, key, path))
        sweep, _ = read_object(path / "sweep.json")
        trials = []
        raw = (sweep or {}).get("trials")
        for t in raw if isinstance(raw, list) else []:
            if not isinstance(t, dict):
                continue
            run_key = self._run_key(path, t.get("run_dir"))
            values = t.get("values")
            if values is not None and not isinstance(values, (list, dict)):
                values = [values]
            trials.append({"number": t.get("number"), "state": t.get("state"),
                           "params": t.get("params") if isinstance(t.get("params"), dict)
                           else {}, "values": values, "run_dir": t.get("run_dir"),
                           "run_key": run_key, "run_status": self._status_of(run_key)})
        others = {k: v for k, v in (sweep or {}).items() if k != "trials"}
        return clean({**row, "sweep": others, "trials": trials,
                      "markdown": read_text(path / "sweep.md")[0]})


def file_folder(folder: Path, rel: str) -> Path | None:
    """The folder REL names inside FOLDER (resolved, still inside it), or None."""
    return inside(folder, rel.rstrip("/"), Path.is_dir) if isinstance(rel, str) else None
