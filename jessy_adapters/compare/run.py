"""The backends of a comparison, run one after another, each as a normal run directory.

Each backend runs exactly as `jessy run --backend X --no-fallback` would (chain [X]), into
<compare folder>/runs/<backend>/<run-id>/. compare-state.json maps each backend to its run
directory, rewritten atomically after every run, so the same command run again goes on where
it stopped: a backend whose run finished (succeeded, or failed for a reason other than an
interruption) is kept; an interrupted, unfinished or missing one runs again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import failures
from ..jsonio import write_json_atomic
from ..run.runner import Runner
from ..spec import Spec

STATE_FILE = "compare-state.json"


class CompareError(Exception):
    """Bad input found before anything runs (exit 2)."""


def compare_folder(output: Path, spec: Spec) -> Path:
    return Path(output) / f"compare-{spec.name}"


def parse_backends(text: str, installed: list[str]) -> list[str]:
    names = [part.strip() for part in text.split(",")]
    if not any(names):
        raise CompareError("--backends names no backend (e.g. --backends mlx,unsloth)")
    if not all(names):
        raise CompareError(f"--backends {text!r} has an empty name")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise CompareError(f"--backends names {name!r} twice")
        seen.add(name)
    unknown = [n for n in names if n not in installed]
    if unknown:
        raise CompareError(f"unknown backend(s) {', '.join(map(repr, unknown))} (installed: "
                           f"{', '.join(installed) or 'none'})")
    return names


def spec_identity(spec: Spec) -> dict:
    """Which spec was compared: the file as written and the resolved spec the runs used."""
    raw = spec.source.read_bytes() if spec.source and spec.source.is_file() else b""
    return {"path": str(spec.source) if spec.source else None,
            "sha256": hashlib.sha256(raw).hexdigest() if raw else None,
            "name": spec.name, "resolved_sha256": spec.digest()}


@dataclass
class Comparison:
    folder: Path
    spec: dict
    backends: list[str]
    run_dirs: dict[str, Path]
    """backend -> its run directory, for the backends that have one"""
    interrupted: bool = False


def finished(run_dir: Path) -> bool:
    """Whether this run is final: an interrupted or still 'running' (killed) one is not."""
    try:
        manifest = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return False
    kind = (manifest.get("failure") or {}).get("kind")
    return manifest.get("status") == "succeeded" or (
        manifest.get("status") == "failed" and kind != failures.INTERRUPTED)


def run_backends(spec: Spec, backends: list[str], folder: Path, runner: Runner,
                 require_accelerator: bool = False,
                 console: Callable[[str], None] = print) -> Comparison:
    """Run every backend not already finished in FOLDER; stop at the first interruption."""
    folder = Path(folder).resolve()
    identity = spec_identity(spec)
    state = _load_state(folder, identity)
    runs = state["runs"]
    comparison = Comparison(folder, identity, backends, {})
    for index, name in enumerate(backends, 1):
        kept = folder / runs[name] if name in runs else None
        if kept is not None and finished(kept):
            console(f"[compare] {name}: kept {runs[name]} (finished earlier)")
            comparison.run_dirs[name] = kept
            continue
        console(f"[compare] {name} ({index}/{len(backends)})")
        try:
            result = runner.run(spec, [name], folder / "runs" / name,
                                require_accelerator=require_accelerator)
        except KeyboardInterrupt:
            console(f"[compare] interrupted during {name}")
            comparison.interrupted = True
            break
        runs[name] = str(result.path.relative_to(folder))
        write_json_atomic(folder / STATE_FILE, state)
        comparison.run_dirs[name] = result.path
        if result.manifest["status"] == "interrupted":
            console(f"[compare] interrupted during {name}: finished runs are kept; run the "
                    "same command again to go on")
            comparison.interrupted = True
            break
    return comparison


def _load_state(folder: Path, identity: dict) -> dict:
    """The state of an earlier invocation in FOLDER, refused when it compared another spec:
    mixing two specs' runs in one table would compare nothing."""
    path = folder / STATE_FILE
    if not path.exists():
        state = {"spec": identity, "runs": {}}
        write_json_atomic(path, state)
        return state
    state = json.loads(path.read_text())
    if state["spec"]["resolved_sha256"] != identity["resolved_sha256"]:
        raise CompareError(f"{folder} holds a comparison of another version of this spec "
                           f"({state['spec']['path']}); give another --output or remove it")
    return state
