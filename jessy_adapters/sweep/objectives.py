"""What a sweep optimises and what it requires: metric names, their direction, where each is
read (eval.json's tuned model, or run.json's summary), and `--constraint 'M<=X'`."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# name -> (direction, source): "eval" metrics need `jessy eval` on each trial's run
METRICS = {
    "held_out_accuracy": ("maximize", "eval"),
    "general_accuracy": ("maximize", "eval"),
    "general_drop": ("minimize", "eval"),
    "validation_perplexity": ("minimize", "eval"),
    "validation_bleu": ("maximize", "eval"),
    "final_eval_loss": ("minimize", "run"),
    "final_loss": ("minimize", "run"),
}
_CONSTRAINT = re.compile(r"^\s*([a-z_]+)\s*(<=|>=)\s*(\S+)\s*$")


class ObjectiveError(ValueError):
    """An objective or constraint jessy cannot measure (exit 2)."""


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str
    bound: float

    def violation(self, value: float | None) -> float:
        """Optuna's convention: <= 0 when satisfied; a missing value is infeasible."""
        if value is None:
            return 1.0
        return value - self.bound if self.op == "<=" else self.bound - value

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"


def check_metric(name: str, option: str) -> str:
    if name not in METRICS:
        raise ObjectiveError(f"{option}: unknown metric {name!r}; known: "
                             f"{', '.join(METRICS)}")
    return name


def parse_constraint(text: str) -> Constraint:
    match = _CONSTRAINT.match(text)
    if not match:
        raise ObjectiveError(f"--constraint {text!r}: write METRIC<=X or METRIC>=X, e.g. "
                             "'general_drop<=0.05'")
    metric, op, bound = match.groups()
    check_metric(metric, "--constraint")
    try:
        value = float(bound)
    except ValueError:
        raise ObjectiveError(f"--constraint {text!r}: {bound!r} is not a number") from None
    if not math.isfinite(value):
        raise ObjectiveError(f"--constraint {text!r}: the bound must be finite")
    return Constraint(metric, op, value)


def needs_eval(names: list[str]) -> bool:
    return any(METRICS[n][1] == "eval" for n in names)


def read_metrics(manifest: dict, evaluation: dict | None) -> dict[str, float | None]:
    """Every known metric of one trial (None where not measured)."""
    summary = manifest.get("summary") or {}
    tuned = ((evaluation or {}).get("models") or {}).get("tuned") or {}
    out: dict[str, float | None] = {}
    for name, (_, source) in METRICS.items():
        if source == "run":
            out[name] = summary.get(name)
        elif name == "general_drop":
            out[name] = (evaluation or {}).get("general_drop")
        else:
            out[name] = tuned.get(name)
    return out
