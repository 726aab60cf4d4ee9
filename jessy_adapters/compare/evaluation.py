"""`--eval`: jessy's evaluation (`jessy eval`) of every succeeded run, on the same prompts.

The prompts are the spec's evaluation files, the same spec for every backend, so the runs are
asked the same questions. A run that already has an eval.json (an earlier, interrupted
comparison) is not evaluated again: a finished run directory never changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .. import evaluate

LEFT_OUT = ("examples", "run", "backend", "model")


def evaluate_runs(run_dirs: dict[str, Path], console: Callable[[str], None] = print,
                  ) -> dict[str, dict]:
    """backend -> eval.json's summary, or {"error": why} when evaluating that run failed.
    A Ctrl-C propagates: what was evaluated so far is in each run's eval.json."""
    results = {}
    for name, run_dir in run_dirs.items():
        saved = run_dir / "eval.json"
        if saved.exists():
            results[name] = eval_summary(json.loads(saved.read_text()))
            continue
        console(f"[compare] evaluating {name}")
        try:
            results[name] = eval_summary(evaluate.evaluate_run(run_dir))
        except Exception as exc:  # one run's evaluation failing must not lose the others'
            console(f"[compare] evaluating {name} failed: {type(exc).__name__}: {exc}")
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return results


def eval_summary(results: dict) -> dict:
    """eval.json without the per-question answers (they stay in the run's eval.md) and without
    what the row already says (run, backend, model)."""
    return {k: v for k, v in results.items() if k not in LEFT_OUT}


def tuned(evaluation: dict | None) -> dict:
    """The tuned model's figures in an eval summary ({} when there is none)."""
    return ((evaluation or {}).get("models") or {}).get("tuned") or {}
