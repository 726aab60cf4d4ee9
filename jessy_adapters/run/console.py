"""What `jessy run` shows on stderr while a backend trains: its messages, and the progress.

On a terminal, one live progress bar per attempt (tqdm): steps done of the attempt's steps,
elapsed time, time left, loss and trained tokens per second, with jessy's messages printed
above it. Anywhere else (a pipe, a log file, CI, the tests) each metric event is one plain line,
`progress_line`, as before, with ` eta 1m20s` once the time left can be estimated. Time left
(`Eta`) comes from the attempt's own events: the seconds per step since its first event, times
the steps still to go of the attempt's planned steps (the schedule's optimizer_steps).

The Supervisor prints through any callable; a console that also has `progress(event,
total_steps, eta)` and `end_progress()` (this `Console`) draws the progress itself.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TextIO


def format_duration(seconds: float) -> str:
    """45s, 1m20s, 2h05m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class Eta:
    """Seconds left of an attempt of `total_steps` steps, from its events' steps and times."""

    total_steps: int | None
    _first: tuple[int, float] | None = field(default=None, init=False)
    _done: int = field(default=0, init=False)

    def update(self, event: dict) -> float | None:
        step, when = event.get("step"), event.get("time")
        if not isinstance(step, int) or not isinstance(when, (int, float)):
            return None
        if self._first is None:
            self._first = (step, when)
        self._done = max(self._done, step)
        first_step, first_time = self._first
        if not self.total_steps or self._done <= first_step:
            return None
        per_step = (when - first_time) / (self._done - first_step)
        return max(0.0, (self.total_steps - self._done) * per_step)


def progress_line(event: dict, total_steps: int | None, eta: float | None = None) -> str:
    step = event.get("step")
    of = f"/{total_steps}" if total_steps else ""
    parts = [f"[{event.get('backend')}] step {step}{of}"]
    if event.get("loss") is not None:
        parts.append(f"loss {event['loss']:.4f}")
    if event.get("eval_loss") is not None:
        parts.append(f"eval_loss {event['eval_loss']:.4f}")
    if event.get("learning_rate") is not None:
        parts.append(f"lr {event['learning_rate']:.2e}")
    if event.get("trained_tokens_per_second") is not None:
        parts.append(f"{event['trained_tokens_per_second']:.0f} trained tok/s")
    if event.get("peak_rss_gb") is not None:
        parts.append(f"peak RSS {event['peak_rss_gb']:.2f} GB")
    if eta is not None:
        parts.append(f"eta {format_duration(eta)}")
    return "  ".join(parts)


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class Console:
    """jessy run's stderr (or `stream`): a live bar when it is a terminal (`live` overrides),
    plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None, live: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.live = _is_terminal(self.stream) if live is None else live
        self._bar = None
        self._attempt: tuple | None = None
        self._shown: dict = {}

    def __call__(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message, file=self.stream)  # above the bar, which is redrawn
        else:
            print(message, file=self.stream, flush=True)

    def progress(self, event: dict, total_steps: int | None, eta: float | None) -> None:
        if not self.live:
            self(progress_line(event, total_steps, eta))
            return
        attempt = (event.get("attempt"), event.get("backend"))
        if self._bar is None or attempt != self._attempt:
            self._start(attempt, total_steps)
        bar = self._bar
        bar.n = max(bar.n, event.get("step") or 0)
        for key in ("loss", "eval_loss", "trained_tokens_per_second"):
            if event.get(key) is not None:
                self._shown[key] = event[key]
        if eta is not None:
            self._shown["eta"] = eta
        bar.set_postfix_str(self._postfix(), refresh=False)
        bar.refresh()

    def _start(self, attempt: tuple, total_steps: int | None) -> None:
        from tqdm import tqdm

        self.end_progress()
        counted = "{n_fmt}/{total_fmt}" if total_steps else "{n_fmt}"
        bar = ("{desc} {percentage:3.0f}%|{bar}| " if total_steps else "{desc} ")
        sized = _columns(self.stream) > 0  # a terminal that says 0 columns gets 100
        self._bar = tqdm(total=total_steps or None, desc=f"[{attempt[1]}]", unit="step",
                         file=self.stream, dynamic_ncols=sized, ncols=None if sized else 100,
                         leave=True, mininterval=0,
                         bar_format=bar + counted + " steps [{elapsed}{postfix}]")
        self._attempt, self._shown = attempt, {}

    def _postfix(self) -> str:
        shown, parts = self._shown, []
        if "eta" in shown:
            parts.append(f"eta {format_duration(shown['eta'])}")
        if "loss" in shown:
            parts.append(f"loss {shown['loss']:.4f}")
        if "eval_loss" in shown:
            parts.append(f"eval_loss {shown['eval_loss']:.4f}")
        if "trained_tokens_per_second" in shown:
            parts.append(f"{shown['trained_tokens_per_second']:.0f} trained tok/s")
        return ", ".join(parts)

    def end_progress(self) -> None:
        """The attempt is over: its bar stays on screen as it last was; lines go below it."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
