"""The seed report's weighted method, scored from measured figures instead of stars.

Criteria and default weights are the seed's (quality 35, speed 25, memory 20); its ease of use
and community support cannot be measured by a run, so they are not scored at all. Each
criterion is read from the first of its measures that every succeeded backend has, and
normalised across those backends: best = 10, the others in proportion.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from .evaluation import tuned

DEFAULT_WEIGHTS = {"quality": 35.0, "speed": 25.0, "memory": 20.0}
NOT_MEASURABLE = ("ease", "community")
FORMULA = ("score = 10 × value / best where higher is better, 10 × best / value where lower "
           "is better (best = 10); total = 10 × Σ(weight × score) / Σ(weight) over the "
           "criteria scored, out of 100")


class WeightsError(ValueError):
    pass


@dataclass(frozen=True)
class Measure:
    name: str
    higher_is_better: bool
    read: Callable[[dict], float | None]


def _figure(name: str) -> Callable[[dict], float | None]:
    return lambda row: row.get(name)


def _held_out_accuracy(row: dict) -> float | None:
    return tuned(row.get("eval")).get("held_out_accuracy")


CRITERIA: dict[str, tuple[Measure, ...]] = {
    "quality": (Measure("held_out_accuracy", True, _held_out_accuracy),
                Measure("final_eval_loss", False, _figure("final_eval_loss"))),
    "speed": (Measure("trained_tokens_per_second", True, _figure("trained_tokens_per_second")),
              Measure("seconds_per_step", False, _figure("seconds_per_step"))),
    "memory": (Measure("peak_rss_gb", False, _figure("peak_rss_gb")),),
}


def parse_weights(text: str | None) -> dict[str, float]:
    """`quality=35,speed=25` -> weights; the given set replaces the defaults (a criterion not
    named is not scored)."""
    if text is None:
        return dict(DEFAULT_WEIGHTS)
    known = ", ".join(CRITERIA)
    if not text.strip():
        raise WeightsError(f"no weights given (e.g. quality=35,speed=25,memory=20; criteria: "
                           f"{known})")
    weights: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        name, sep, value = (x.strip() for x in item.partition("="))
        if not sep or not name:
            raise WeightsError(f"{item!r} is not criterion=weight (e.g. quality=35)")
        if name in NOT_MEASURABLE:
            raise WeightsError(f"{name!r} is not measurable from a run (measurable: {known})")
        if name not in CRITERIA:
            raise WeightsError(f"unknown criterion {name!r} (measurable: {known})")
        if name in weights:
            raise WeightsError(f"{name} is weighted twice")
        try:
            weight = float(value)
        except ValueError:
            raise WeightsError(f"weight of {name} is not a number: {value!r}") from None
        if not math.isfinite(weight) or weight < 0:
            raise WeightsError(f"weight of {name} must be a finite number >= 0 (got {value})")
        weights[name] = weight
    if not any(weights.values()):
        raise WeightsError("every weight is 0: nothing to score")
    return weights


@dataclass
class Scoring:
    weights: dict[str, float]
    measures: dict[str, Measure] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    scores: dict[str, dict] = field(default_factory=dict)
    """backend -> {criterion: score, ..., "total": out of 100}"""
    winner: str | None = None
    verdict: str = ""

    def to_json(self) -> dict:
        return {"weights": self.weights, "formula": FORMULA,
                "criteria": {c: {"weight": self.weights[c], "measure": m.name,
                                 "better": "higher" if m.higher_is_better else "lower"}
                             for c, m in self.measures.items()},
                "left_out": self.left_out, "winner": self.winner, "verdict": self.verdict}


def score(rows: list[dict], weights: dict[str, float]) -> Scoring:
    result = Scoring(weights)
    succeeded = [r for r in rows if r["status"] == "succeeded"]
    if not succeeded:
        result.verdict = "No backend succeeded: no verdict."
        return result
    per_criterion: dict[str, dict[str, float]] = {}
    for criterion, weight in weights.items():
        if weight <= 0:
            continue
        measure = _measure_known_for_all(criterion, succeeded)
        if measure is None:
            result.left_out[criterion] = (
                "not measured on every succeeded backend ("
                + " or ".join(m.name for m in CRITERIA[criterion]) + ")")
            continue
        result.measures[criterion] = measure
        values = {r["backend"]: float(measure.read(r)) for r in succeeded}
        per_criterion[criterion] = normalise(values, measure.higher_is_better)
    if not per_criterion:
        result.verdict = "No criterion was measured on every succeeded backend: no verdict."
        return result
    weight_sum = sum(weights[c] for c in per_criterion)
    for r in succeeded:
        name = r["backend"]
        row_scores = {c: round(s[name], 2) for c, s in per_criterion.items()}
        total = 10 * sum(weights[c] * s[name] for c, s in per_criterion.items()) / weight_sum
        result.scores[name] = {**row_scores, "total": round(total, 1)}
    result.winner, result.verdict = verdict(result, succeeded, rows)
    return result


def _measure_known_for_all(criterion: str, succeeded: list[dict]) -> Measure | None:
    for measure in CRITERIA[criterion]:
        values = [measure.read(r) for r in succeeded]
        if all(isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in values):
            return measure
    return None


def normalise(values: dict[str, float], higher_is_better: bool) -> dict[str, float]:
    """Best = 10, the others in proportion to it (a zero is best when lower is better)."""
    if higher_is_better:
        best = max(values.values())
        return {k: 10.0 if best == 0 else 10 * v / best for k, v in values.items()}
    best = min(values.values())
    return {k: 10.0 if v == best else 10 * best / v for k, v in values.items()}


def verdict(result: Scoring, succeeded: list[dict], rows: list[dict]) -> tuple[str | None, str]:
    """The winner by weighted total (None on a tie), and why: the criteria it is strictly best
    on, against the next best value."""
    ranked = sorted(succeeded, key=lambda r: -result.scores[r["backend"]]["total"])
    winner = ranked[0]["backend"]
    top = result.scores[winner]["total"]
    if len(ranked) == 1:
        others = [f"{r['backend']} {r.get('failure_class') or r['status']}"
                  for r in rows if r["backend"] != winner]
        return winner, (f"**{winner}** is the only backend that succeeded"
                        + (f" ({', '.join(others)})." if others else "."))
    tied = [r["backend"] for r in ranked if result.scores[r["backend"]]["total"] == top]
    if len(tied) > 1:
        return None, f"{' and '.join(tied)} tie at {top}/100."
    runner_up = ranked[1]["backend"]
    reasons = []
    for criterion, measure in result.measures.items():
        by_name = {r["backend"]: measure.read(r) for r in succeeded}
        mine = by_name.pop(winner)
        next_best = (max if measure.higher_is_better else min)(by_name.values())
        if not (mine > next_best if measure.higher_is_better else mine < next_best):
            continue  # not best, or a shared first place: explains nothing
        reasons.append(f"best {criterion} ({measure.name} {mine:.4g} vs "
                       f"{next_best:.4g})")
    why = ", ".join(reasons) if reasons else "on the weighted total, best on no single criterion"
    return winner, (f"**{winner}** wins with {top}/100 ({runner_up} "
                    f"{result.scores[runner_up]['total']}): {why}.")
