"""Progress, ETA, throughput and memory from the metric stream, fed one event at a time.

The same accumulator serves the run page (fed a whole metrics.jsonl once, then only the new
lines) and the live stream, so both say the same. Steps planned come from run.json
`schedule.optimizer_steps` (the core's schedule); the time per step from the current attempt's
train events (an earlier attempt's pace, on another backend, says nothing about this one).
"""

from __future__ import annotations

import time

from .reading import number


class Progress:
    def __init__(self):
        self.attempt = None
        self.backend = None
        self.first: tuple[float, float] | None = None
        """(step, time) of the current attempt's first train event."""
        self.last: tuple[float, float] | None = None
        self.last_loss = None
        self.last_eval_loss = None
        self.rates: dict = {}
        self.peak_rss_gb = None
        self.backend_peak_gb = None
        self.events = 0

    def feed(self, event: dict) -> None:
        self.events += 1
        attempt = event.get("attempt")
        if attempt != self.attempt:
            self.attempt, self.first, self.last, self.rates = attempt, None, None, {}
            self.last_loss = self.last_eval_loss = None
        self.backend = event.get("backend", self.backend)
        rss = number(event.get("peak_rss_gb"))
        if rss is not None:
            self.peak_rss_gb = rss if self.peak_rss_gb is None else max(self.peak_rss_gb, rss)
        own = number(event.get("backend_peak_memory_gb", event.get("peak_memory_gb")))
        if own is not None:
            self.backend_peak_gb = own if self.backend_peak_gb is None else max(
                self.backend_peak_gb, own)
        step, moment = number(event.get("step")), number(event.get("time"))
        if event.get("type") == "eval":
            if number(event.get("eval_loss")) is not None:
                self.last_eval_loss = event["eval_loss"]
            return
        if event.get("type") != "train" or step is None:
            return
        if moment is not None:
            if self.first is None:
                self.first = (step, moment)
            self.last = (step, moment)
        elif self.last is None or step >= self.last[0]:
            self.last = (step, self.last[1] if self.last else None)
        if number(event.get("loss")) is not None:
            self.last_loss = event["loss"]
        for key in ("trained_tokens_per_second", "input_tokens_per_second",
                    "tokens_per_second"):
            if number(event.get(key)) is not None:
                self.rates[key] = event[key]

    def to_json(self, planned: int | None, running: bool, now: float | None = None) -> dict:
        """Steps done of PLANNED, the pace, and (while RUNNING) the time left."""
        now = time.time() if now is None else now
        done = int(self.last[0]) if self.last else None
        per_step = finish_at = eta = None
        if self.first and self.last and self.last[1] is not None \
                and self.last[0] > self.first[0]:
            per_step = (self.last[1] - self.first[1]) / (self.last[0] - self.first[0])
        if running and per_step is not None and planned and done is not None:
            finish_at = self.last[1] + max(0, planned - done) * per_step
            eta = max(0.0, finish_at - now)
        fraction = min(1.0, done / planned) if planned and done is not None else None
        return {"attempt": self.attempt, "backend": self.backend, "steps_done": done,
                "steps_planned": planned, "fraction": fraction,
                "seconds_per_step": per_step, "eta_s": eta, "finish_at": finish_at,
                "last_event_time": self.last[1] if self.last else None,
                "last_loss": self.last_loss, "last_eval_loss": self.last_eval_loss,
                "trained_tokens_per_second": self.rates.get("trained_tokens_per_second"),
                "input_tokens_per_second": self.rates.get("input_tokens_per_second"),
                "backend_tokens_per_second": self.rates.get("tokens_per_second"),
                "peak_rss_gb": self.peak_rss_gb, "backend_peak_memory_gb": self.backend_peak_gb,
                "events": self.events}


def planned_steps(manifest: dict) -> int | None:
    """schedule.optimizer_steps, else the last attempt's total_steps."""
    schedule = manifest.get("schedule") if isinstance(manifest, dict) else None
    steps = number(schedule.get("optimizer_steps")) if isinstance(schedule, dict) else None
    if steps is None:
        attempts = [a for a in manifest.get("attempts") or [] if isinstance(a, dict)] \
            if isinstance(manifest, dict) and isinstance(manifest.get("attempts"), list) else []
        steps = number(attempts[-1].get("total_steps")) if attempts else None
    return int(steps) if steps and steps > 0 else None
