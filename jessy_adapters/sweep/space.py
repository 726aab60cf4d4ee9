"""The search space of a sweep: spec paths and the values each may take, checked against the
spec schema before the first trial.

    /lora/r: [4, 8, 16]                                        # categorical
    /training/learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}
    /training/epochs: {low: 1, high: 4, step: 1}               # integers: ints throughout
    start_with:                                                # tried first, in this order
      - {/training/learning_rate: 5.0e-4}

Every value a dimension can take at its edges (each choice; low and high) is set into the
spec and validated, so a path or value the schema rejects is an error naming it before any
training starts.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..spec import _MISSING as NO_VALUE
from ..spec import SpecError, SpecIssue, parse, validate
from ..yaml_limits import YamlInputError, read_text

OPTIONS = ("start_with",)
RANGE_KEYS = {"low", "high", "log", "step"}


class SpaceError(Exception):
    """A search space that cannot be swept, with file, line and path."""


@dataclass(frozen=True)
class Dimension:
    path: str  # JSON pointer into the spec
    choices: tuple | None = None
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None

    @property
    def integer(self) -> bool:
        return self.choices is None and all(
            isinstance(v, int) and not isinstance(v, bool)
            for v in (self.low, self.high, self.step) if v is not None)

    def edges(self) -> list:
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def distribution(self):
        import optuna.distributions as d

        if self.choices is not None:
            return d.CategoricalDistribution(self.choices)
        if self.integer:
            return d.IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return d.FloatDistribution(float(self.low), float(self.high), log=self.log,
                                   step=None if self.step is None else float(self.step))


@dataclass(frozen=True)
class Space:
    dimensions: tuple[Dimension, ...]
    start_with: tuple[dict, ...] = ()
    source: str | None = None
    digest: str = ""

    def distributions(self) -> dict:
        return {d.path: d.distribution() for d in self.dimensions}


def set_path(data: dict, pointer: str, value: Any) -> None:
    """Set a JSON pointer's value in a nested dict, creating the mappings on the way."""
    keys = pointer.strip("/").split("/")
    node = data
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


def with_values(raw_spec: dict, values: dict[str, Any]) -> dict:
    data = copy.deepcopy(raw_spec)
    for pointer, value in values.items():
        set_path(data, pointer, value)
    return data


def load_space(path: str | Path, raw_spec: dict) -> Space:
    """Read and check a space file against the spec it will be applied to."""
    path = Path(path)
    try:
        text = read_text(path)
    except YamlInputError as exc:
        raise SpaceError(f"{path}: {exc.message}") from None
    except OSError as exc:
        raise SpaceError(f"{path}: cannot read the search space: {exc.strerror}") from None
    try:
        data, lines = parse(text, str(path))
    except SpecError as exc:
        raise SpaceError(str(exc)) from None
    where = str(path)
    problems: list[SpecIssue] = []
    if not isinstance(data, dict) or not data:
        raise SpaceError(f"{where}: a search space is a mapping of spec paths to values, e.g. "
                         "/lora/r: [4, 8, 16]")
    dims = []
    for key, value in data.items():
        if key in OPTIONS:
            continue
        if not isinstance(key, str) or not key.startswith("/"):
            problems.append(SpecIssue(str(key), "not a spec path: write it as a JSON pointer "
                                      f"starting with /, e.g. /training/learning_rate "
                                      f"(options: {', '.join(OPTIONS)})", NO_VALUE,
                                      lines.get(_escape(str(key)))))
            continue
        dim = _dimension(key, value, lines.get(_escape(key)), problems)
        if dim:
            dims.append(dim)
    if not dims and not problems:
        problems.append(SpecIssue("", "no spec path to search", NO_VALUE))
    start_with = _start_with(data.get("start_with", []), {d.path for d in dims}, lines,
                             problems)
    if not problems:
        problems.extend(_schema_problems(raw_spec, dims, start_with, lines))
    if problems:
        raise SpaceError("\n".join(p.render(where) for p in problems))
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    return Space(tuple(dims), tuple(start_with), str(path.resolve()), digest)


def _escape(key: str) -> str:
    """The line index's pointer of a top-level key (its segments are not escaped)."""
    return "/" + key


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _dimension(key: str, value: Any, line: int | None, problems: list) -> Dimension | None:
    if isinstance(value, list):
        if not value:
            problems.append(SpecIssue(key, "an empty list of choices", value, line))
            return None
        if len({json.dumps(v, sort_keys=True) for v in value}) != len(value):
            problems.append(SpecIssue(key, "a choice is listed twice", value, line))
            return None
        if not all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
            problems.append(SpecIssue(key, "choices must be numbers, strings, booleans or null "
                                      "(Optuna stores them)", value, line))
            return None
        return Dimension(key, choices=tuple(value))
    if isinstance(value, dict):
        unknown = set(value) - RANGE_KEYS
        if unknown or not {"low", "high"} <= set(value):
            problems.append(SpecIssue(key, "a range is {low: X, high: Y} with optional log: "
                                      "true or step: S", value, line))
            return None
        low, high, step, log = value["low"], value["high"], value.get("step"), value.get("log",
                                                                                          False)
        if not (_number(low) and _number(high)) or step is not None and not _number(step):
            problems.append(SpecIssue(key, "low, high and step must be numbers", value, line))
        elif not low < high:
            problems.append(SpecIssue(key, "low must be below high", value, line))
        elif not isinstance(log, bool):
            problems.append(SpecIssue(key, "log must be true or false", value, line))
        elif log and low <= 0:
            problems.append(SpecIssue(key, "a log range needs low > 0", value, line))
        elif log and step is not None:
            problems.append(SpecIssue(key, "a range is either log or stepped, not both", value,
                                      line))
        elif step is not None and step <= 0:
            problems.append(SpecIssue(key, "step must be positive", value, line))
        else:
            return Dimension(key, low=low, high=high, log=log, step=step)
        return None
    problems.append(SpecIssue(key, "give a list of choices or a {low, high} range", value,
                              line))
    return None


def _start_with(value: Any, paths: set[str], lines: dict, problems: list) -> list[dict]:
    line = lines.get("/start_with")
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        problems.append(SpecIssue("start_with", "a list of {spec path: value} mappings", value,
                                  line))
        return []
    for point in value:
        unknown = set(point) - paths
        if unknown:
            problems.append(SpecIssue("start_with", f"{', '.join(sorted(map(str, unknown)))} "
                                      "is not a path of this space", point, line))
    return list(value)


def _schema_problems(raw_spec: dict, dims: list[Dimension], start_with: list[dict],
                     lines: dict) -> list[SpecIssue]:
    """Each edge value and each start_with point, set into the (valid) spec, validated: what
    the schema then rejects, the space's value caused."""
    problems, seen = [], set()
    points = [({d.path: v}, d.path, lines.get(_escape(d.path))) for d in dims
              for v in d.edges()]
    points += [(p, "start_with", lines.get("/start_with")) for p in start_with]
    for values, key, line in points:
        for issue in validate(with_values(raw_spec, values)):
            message = (f"the spec schema rejects {json.dumps(values)}: {issue.path or '/'}: "
                       f"{issue.message}")
            if message not in seen:
                seen.add(message)
                problems.append(SpecIssue(key, message, NO_VALUE, line))
    return problems
