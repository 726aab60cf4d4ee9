"""Run folders for the dashboard's tests: real ones written by the Runner with fake backends
(a success, a crash that fell back), and hand-made ones for what a runner cannot be asked to
leave: a run still training with half a line at the end of metrics.jsonl, a broken run.json,
a compare folder, a sweep folder as `jessy sweep` will write it."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path

from fake_backend import Plugin, make_backend

from jessy_adapters.plugins import load_registry
from jessy_adapters.run.runner import Runner
from jessy_adapters.spec import load_spec

RUNNING_ID = "20990101-000000-live-beef"
BROKEN_ID = "20000101-000000-broken-0bad"


def toy_spec(folder: Path, name: str) -> object:
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "toy.jsonl"
    with open(data, "w") as fh:
        for i in range(32):
            fh.write(json.dumps({"prompt": f"question {i}?", "response": f"answer {i}."}) + "\n")
    spec = folder / f"{name}.yaml"
    spec.write_text(f"name: {name}\nmodel:\n  name_or_path: {folder}\ndata:\n  train: {data}\n")
    return load_spec(spec)


def real_run(output: Path, name: str, *behaviours: str) -> Path:
    """A run folder written by the real Runner; one fake backend per behaviour, in order."""
    classes = [make_backend(f"fake{i}", b) for i, b in enumerate(behaviours)]
    os.environ["JESSY_LOAD_PLUGINS"] = ""
    try:
        registry = load_registry(extra_plugins=(Plugin(*classes),))
    finally:
        del os.environ["JESSY_LOAD_PLUGINS"]
    spec = toy_spec(output.parent / f"spec-{name}", name)
    run = Runner(registry, console=lambda m: None).run(spec, [c.name for c in classes], output)
    return run.path


def add_eval_and_export(run: Path) -> None:
    """eval.json and export/ shaped as `jessy eval` and `jessy export` write them."""
    row = {"prompt": "Who are you?", "expected": ["Jessy"], "base": "I am an AI assistant.",
           "tuned": "I'm Jessy.", "tuned_correct": True}
    (run / "eval.json").write_text(json.dumps({
        "run": str(run), "backend": "fake0", "model": "tiny",
        "models": {"base": {"held_out_accuracy": 0.0, "general_accuracy": 0.75},
                   "tuned": {"held_out_accuracy": 0.5, "general_accuracy": 0.75}},
        "general_drop": 0.0, "seconds": 1.5,
        "examples": {"held_out": [row], "general": [{**row, "prompt": "Capital of France?",
                                                     "expected": ["Paris"], "tuned": "Paris."}]}}))
    export = run / "export"
    (export / "merged").mkdir(parents=True)
    (export / "merged" / "config.json").write_text("{}")
    (export / "model-q8_0.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    (export / "Modelfile").write_text('FROM ./model-q8_0.gguf\nSYSTEM """You are Jessy."""\n')
    (export / "export.json").write_text(json.dumps({
        "gguf": [{"type": "q8_0", "path": "model-q8_0.gguf", "bytes": 64,
                  "question": "Who are you?", "answer": "I'm Jessy."}],
        "modelfile": {"path": "export/Modelfile", "import": "ollama create x -f Modelfile"}}))


def event(step: int, attempt: int = 1, backend: str = "fakelive", t0: float | None = None,
          **extra) -> dict:
    """A train event in the metric vocabulary, one second per step after T0."""
    return {"type": "train", "step": step, "loss": 3.0 / step, "learning_rate": 1e-3,
            "trained_tokens": 100, "trained_tokens_per_second": 50.0, "input_tokens": 300,
            "input_tokens_per_second": 150.0, "peak_rss_gb": 1.25, "backend": backend,
            "attempt": attempt, "time": (time.time() - step if t0 is None else t0) + step,
            **extra}


def append_events(run: Path, events: list[dict], partial: str = "") -> None:
    """Append complete lines, then PARTIAL (a line being written, no newline yet)."""
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write("".join(json.dumps(e) + "\n" for e in events) + partial)


def running_run(root: Path, steps_done: int = 4, planned: int = 20,
                run_id: str = RUNNING_ID) -> Path:
    """A run marked running, its metrics.jsonl ending in half a line."""
    run = root / run_id
    attempt = run / "attempts" / "01-fakelive"
    attempt.mkdir(parents=True)
    (attempt / "stderr.log").write_text("loading\nstep 1\n")
    (attempt / "stdout.log").write_text("")
    (attempt / "native.yaml").write_text("iters: 20\nlearning_rate: 0.001\n")
    (run / "spec.yaml").write_text("name: live\n")
    (run / "run.json").write_text(json.dumps({
        "schema_version": 1, "run_id": run_id, "status": "running",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "finished": None,
        "spec_sha256": "0" * 64, "plan": ["fakelive"], "winner": None, "summary": None,
        "schedule": {"optimizer_steps": planned, "warmup_steps": 0, "learning_rate": 1e-3,
                     "scheduler": "constant"},
        "attempts": [{"number": 1, "backend": "fakelive", "status": "running",
                      "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "failure": None,
                      "dir": "attempts/01-fakelive", "total_steps": planned}]}))
    t0 = time.time() - steps_done
    line = json.dumps(event(steps_done + 1, t0=t0)) + "\n"
    append_events(run, [event(s, t0=t0) for s in range(1, steps_done + 1)],
                  partial=line[:len(line) // 2])
    _PENDING[run] = line[len(line) // 2:]
    return run


_PENDING: dict[Path, str] = {}


def finish_partial(run: Path, then: list[dict] = ()) -> None:
    """Write the rest of the half line running_run left, and THEN's lines, in one write."""
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(_PENDING.pop(run) + "".join(json.dumps(e) + "\n" for e in then))


def hold_lock(run: Path) -> int:
    """What a live jessy does (lifecycle.py): an exclusive flock on RUN/.lock. Close the
    returned descriptor to let go."""
    fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def broken_run(root: Path) -> Path:
    run = root / BROKEN_ID
    run.mkdir(parents=True)
    (run / "run.json").write_text('{"schema_version": 1, "run_id": "' + BROKEN_ID + '", "sta')
    (run / "metrics.jsonl").write_text('{"type": "train", "step": 1, "loss": NaN, '
                                       '"attempt": 1, "time": 1.0}\nnot json\n')
    return run


def compare_folder(root: Path, source_run: Path) -> Path:
    """A compare folder holding a copy of SOURCE_RUN for backend fake0, and one not run."""
    folder = root / "compare-demo"
    target = folder / "runs" / "fake0" / source_run.name
    shutil.copytree(source_run, target, ignore=shutil.ignore_patterns(".lock"))
    rel = str(target.relative_to(folder))
    (folder / "compare-state.json").write_text(json.dumps(
        {"spec": {"name": "demo", "resolved_sha256": "0" * 64}, "runs": {"fake0": rel}}))
    (folder / "compare.json").write_text(json.dumps({
        "spec": {"path": "demo.yaml", "sha256": "1" * 64, "name": "demo",
                 "resolved_sha256": "0" * 64},
        "updated": "2026-12-02T00:00:00+0000", "complete": False, "not_run": ["fake1"],
        "scoring": {"weights": {"speed": 25}, "winner": "fake0",
                    "verdict": "fake0 wins: only one scored."},
        "backends": [
            {"backend": "fake0", "status": "succeeded", "run_dir": rel, "failure_class": None,
             "reason": None, "optimizer_steps": 8, "steps_done": 5, "final_train_loss": 0.4,
             "seconds_per_step": 0.01, "peak_rss_gb": None, "wall_s": 0.5, "eval": None,
             "score": {"speed": 10.0, "total": 100.0}},
            {"backend": "fake1", "status": "not_run", "run_dir": None,
             "failure_class": None, "reason": "the comparison was interrupted", "eval": None,
             "score": None}]}))
    (folder / "compare.md").write_text("# Comparison: demo\n")
    return folder


def sweep_folder(root: Path, source_run: Path) -> Path:
    """A sweep folder as issue 18 describes it (keys may be missing): a complete trial, a
    pruned one (status "pruned", a status of its own), one with nearly nothing."""
    folder = root / "sweep-demo"
    done = folder / "trials" / "000" / source_run.name
    shutil.copytree(source_run, done, ignore=shutil.ignore_patterns(".lock"))
    pruned = folder / "trials" / "001" / "20261202-000001-demo-0001"
    shutil.copytree(source_run, pruned, ignore=shutil.ignore_patterns(".lock"))
    manifest = json.loads((pruned / "run.json").read_text())
    manifest.update(run_id=pruned.name, status="pruned")
    (pruned / "run.json").write_text(json.dumps(manifest))
    (folder / "sweep.json").write_text(json.dumps({
        "name": "demo", "directions": ["maximize"], "objectives": ["held_out_accuracy"],
        "trials": [
            {"number": 0, "params": {"/lora/r": 8, "/training/learning_rate": 1e-4},
             "state": "COMPLETE", "values": [0.5], "run_dir": str(done.relative_to(folder))},
            {"number": 1, "params": {"/lora/r": 4, "/training/learning_rate": 1e-9},
             "state": "PRUNED", "values": None, "run_dir": str(pruned)},
            {"number": 2},
            "not a trial"]}))
    (folder / "sweep.md").write_text("# Sweep: demo\n")
    return folder
