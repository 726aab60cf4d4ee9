"""The measured figures of one run, from its run.json and metrics.jsonl.

A figure the run recorded itself (run.json `schedule`, `summary`) wins; otherwise it is
derived from the metric events, each derivation written once below; unknown stays None.
The older `tokens_per_second` is neither rate: backends counted different tokens in it (MLX
loss tokens, the Hugging Face trainers input tokens), so comparing it across them misleads.
"""

from __future__ import annotations

import json
from pathlib import Path

FIGURES = ("optimizer_steps", "steps_done", "first_eval_loss", "final_eval_loss",
           "final_train_loss", "trained_tokens", "input_tokens", "seconds_per_step",
           "input_tokens_per_second", "trained_tokens_per_second", "peak_rss_gb", "wall_s")


def read_run(run_dir: Path, backend: str) -> tuple[dict, list[dict]]:
    """run.json and the events of BACKEND's last attempt in it (a resumed run has several)."""
    manifest = json.loads((run_dir / "run.json").read_text())
    number = last_attempt(manifest, backend).get("number")
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    events = [json.loads(line) for line in lines if line.strip()]
    return manifest, [e for e in events if e.get("backend") == backend
                      and e.get("attempt") == number]


def last_attempt(manifest: dict, backend: str) -> dict:
    mine = [a for a in manifest.get("attempts", []) if a.get("backend") == backend]
    return mine[-1] if mine else {}


def figures(manifest: dict, events: list[dict], backend: str) -> dict:
    summary = manifest.get("summary") or {}
    schedule = manifest.get("schedule") or {}
    train = train_events(events)
    evals = [e for e in events if e.get("eval_loss") is not None]
    return {
        "optimizer_steps": _known(schedule.get("optimizer_steps"), last_step(train)),
        "steps_done": last_step(train),
        "first_eval_loss": _known(summary.get("first_eval_loss"), first_value(evals, "eval_loss")),
        "final_eval_loss": _known(summary.get("final_eval_loss"), last_value(evals, "eval_loss")),
        "final_train_loss": _known(summary.get("final_loss"), last_value(train, "loss")),
        "trained_tokens": _known(summary.get("trained_tokens"), total(train, "trained_tokens")),
        "input_tokens": _known(summary.get("input_tokens"), total(train, "input_tokens")),
        "seconds_per_step": seconds_per_step(train),
        "input_tokens_per_second": _known(summary.get("input_tokens_per_second"),
                                          rate(train, "input_tokens_per_second",
                                               "input_tokens")),
        "trained_tokens_per_second": _known(summary.get("trained_tokens_per_second"),
                                            rate(train, "trained_tokens_per_second",
                                                 "trained_tokens")),
        "peak_rss_gb": _known(summary.get("peak_rss_gb"), peak(events, "peak_rss_gb")),
        "wall_s": last_attempt(manifest, backend).get("seconds"),
    }


def _known(recorded, derived):
    return recorded if recorded is not None else derived


def train_events(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("type") == "train"]


def last_step(train: list[dict]) -> int | None:
    return max((e["step"] for e in train if e.get("step") is not None), default=None)


def first_value(events: list[dict], key: str):
    return next((e[key] for e in events if e.get(key) is not None), None)


def last_value(events: list[dict], key: str):
    return first_value(list(reversed(events)), key)


def total(train: list[dict], key: str) -> int | None:
    """Sum of a per-optimizer-step count; None when no event carries it."""
    counts = [e[key] for e in train if e.get(key) is not None]
    return sum(counts) if counts else None


def seconds_per_step(train: list[dict]) -> float | None:
    """(last train event time - first) / (steps between them): the steady pace, without
    start-up (model loading) before the first event."""
    timed = [e for e in train if e.get("time") is not None and e.get("step") is not None]
    if len(timed) < 2 or timed[-1]["step"] <= timed[0]["step"]:
        return None
    return (timed[-1]["time"] - timed[0]["time"]) / (timed[-1]["step"] - timed[0]["step"])


def rate(train: list[dict], rate_key: str, count_key: str) -> float | None:
    """The backend's own rate (mean over events); else counted tokens over event times: the
    tokens of the events after the first, over the time since the first."""
    rates = [e[rate_key] for e in train if e.get(rate_key) is not None]
    if rates:
        return sum(rates) / len(rates)
    timed = [e for e in train if e.get("time") is not None]
    later = total(timed[1:], count_key)
    if later is None or timed[-1]["time"] <= timed[0]["time"]:
        return None
    return later / (timed[-1]["time"] - timed[0]["time"])


def peak(events: list[dict], key: str) -> float | None:
    return max((e[key] for e in events if e.get(key) is not None), default=None)
