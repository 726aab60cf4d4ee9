"""The canonical spec: YAML -> defaults from the JSON Schema -> strict validation.

The schema in jessy_adapters/schemas/spec.schema.json is the single source of truth:
defaults are read from it (not repeated in code) and every error names the file, the YAML
line, the spec path, the offending value and what was expected. The file itself is read
within the limits of yaml_limits (size, encoding, aliases, depth, duplicate keys).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from . import yaml_limits
from .paths import schema_path


@dataclass
class SpecIssue:
    path: str  # JSON pointer, e.g. /training/learning_rate
    message: str
    value: Any = None
    line: int | None = None

    def render(self, file: str | None) -> str:
        where = file or "<spec>"
        if self.line is not None:
            where += f":{self.line}"
        shown = "" if self.value is _MISSING else f" (got {_show(self.value)})"
        return f"{where}: {self.path or '/'}: {self.message}{shown}"


_MISSING = object()
_SHOWN_CHARS = 200  # a 1 MiB string in a wrong place is not echoed back whole


def _show(value: Any) -> str:
    try:
        shown = json.dumps(value, default=str)
    except (TypeError, ValueError):  # keys JSON cannot spell, e.g. a date
        shown = repr(value)
    return _shorten(shown)


def _shorten(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


_LISTED = 50  # problems listed; a spec with thousands of wrong keys is not echoed back whole


class SpecError(Exception):
    """Raised with every problem found, not just the first (up to _LISTED, then a count)."""

    def __init__(self, issues: list[SpecIssue], file: str | None = None):
        if len(issues) > _LISTED:
            more = len(issues) - _LISTED
            issues = [*issues[:_LISTED],
                      SpecIssue("", f"and {more:,} more problem(s), not listed", _MISSING)]
        self.issues = issues
        self.file = file
        super().__init__("\n".join(i.render(file) for i in issues))


@dataclass
class Spec:
    """A validated spec with defaults applied; paths resolved against the spec's folder."""

    data: dict
    source: Path | None = None
    raw: dict = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    def resolve_path(self, value: str | None) -> Path | None:
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def name(self) -> str:
        if self.data.get("name"):
            return self.data["name"]
        return self.source.stem if self.source else "spec"

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.data, sort_keys=False, allow_unicode=True)

    def digest(self) -> str:
        canon = json.dumps(self.data, sort_keys=True, default=str).encode()
        return hashlib.sha256(canon).hexdigest()


@cache
def load_schema(name: str = "spec") -> dict:
    return json.loads(schema_path(name).read_text(encoding="utf-8"))


def apply_defaults(instance: Any, schema: dict) -> Any:
    """Fill `default`s from the schema, recursively, without touching given values."""
    if not isinstance(instance, dict) or schema.get("type") not in ("object", None):
        return instance
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance and isinstance(instance[key], dict) and "properties" in sub:
            apply_defaults(instance[key], sub)
    return instance


_BOUNDS = {"pattern": "expected text matching {}", "maxLength": "expected at most {} characters",
           "minLength": "expected at least {} character(s)",
           "minItems": "expected at least {} item(s)", "uniqueItems": "expected each item once",
           "exclusiveMinimum": "expected a value > {}", "minimum": "expected a value >= {}",
           "exclusiveMaximum": "expected a value < {}", "maximum": "expected a value <= {}"}
"""What a bound validator expected, in the user's terms (the bound in place of {})."""


def _expected(error) -> str:
    """Turn a jsonschema error into 'what was expected', in the user's terms."""
    v, s = error.validator, error.schema
    if v == "additionalProperties":
        allowed = ", ".join(sorted(s.get("properties", {})))
        return f"unknown key; allowed here: {allowed}"
    if v == "required":
        return error.message
    if v == "enum":
        return f"expected one of {', '.join(map(str, s['enum']))}"
    if v == "type":
        return _expected_type(error.instance, s["type"])
    if v in _BOUNDS:
        return _BOUNDS[v].format(s.get(v))
    if v == "oneOf":
        options = []
        for alt in s["oneOf"]:
            if "const" in alt:
                options.append(repr(alt["const"]))
            elif "title" in alt:  # a branch that names its own form, e.g. 'last N'
                options.append(alt["title"])
            elif alt.get("type") == "array":
                items = alt.get("items", {})
                options.append(
                    f"a list of {', '.join(items['enum'])}" if "enum" in items else "a list"
                )
            elif "type" in alt:
                options.append(f"a {alt['type']}")
        return f"expected {' or '.join(options)}{_branch_detail(error)}"
    return _shorten(error.message)  # jsonschema's own words quote the value: keep them short


def _expected_type(value: Any, expected: str | list[str]) -> str:
    types = [expected] if isinstance(expected, str) else expected
    if isinstance(value, float) and not math.isfinite(value):
        return f"expected {' or '.join(types)}; NaN and infinity are refused"
    if isinstance(value, float) and "number" not in types and "integer" in types:
        hint = f" (write {int(value)}, not {value})" if value.is_integer() else ""
        return f"expected an integer, not a decimal{hint}"
    return f"expected {' or '.join(types)}"


def _branch_detail(error) -> str:
    """When the value's kind picks one alternative of a oneOf (a list, say), what inside it
    broke that alternative: `; /lora/layers/0: expected an integer`."""
    picked = [i for i, alt in enumerate(error.schema["oneOf"])
              if "type" in alt and _checker().is_type(error.instance, alt["type"])]
    if len(picked) != 1:
        return ""
    inner = [e for e in error.context if e.relative_schema_path[0] == picked[0]]
    if not inner:
        return ""
    first = inner[0]
    return f"; {''.join(f'/{p}' for p in first.absolute_path)}: {_expected(first)}"


def _is_integer(_checker, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(_checker, value: Any) -> bool:
    return _is_integer(_checker, value) or (isinstance(value, float) and math.isfinite(value))


@cache
def _validator_class():
    """Draft 2020-12 with stricter types: jsonschema counts 3.0 as an integer and NaN or
    infinity as numbers, but a backend given `batch_size: 2.0` or `epochs: .inf` fails late
    and obscurely, so both are refused here, for every field the schema types."""
    from jsonschema import Draft202012Validator, validators

    checker = Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_finite_number})
    return validators.extend(Draft202012Validator, type_checker=checker)


def _checker():
    return _validator_class().TYPE_CHECKER


def validate(data: Any, lines: dict[str, int] | None = None) -> list[SpecIssue]:
    """Every problem in `data`; `lines` maps spec paths to YAML lines (see parse)."""
    if not isinstance(data, dict):
        return [SpecIssue("", "the spec must be a YAML mapping (key: value)", data, 1)]
    lines = lines or {}
    validator = _validator_class()(load_schema("spec"))
    _read_exponents_as_numbers(data, validator)
    issues = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path))):
        pointer = "".join(f"/{p}" for p in error.path)
        value: Any = error.instance
        if error.validator == "additionalProperties":
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})),
                           key=str)
            for key in extra:
                p = f"{pointer}/{key}"
                issues.append(SpecIssue(p, _expected(error), _MISSING, lines.get(p)))
            continue
        message = _expected(error)
        if error.validator == "required":
            value = _MISSING
        elif "propertyNames" in error.schema_path:  # the instance is a key, not a value
            message, value = f"key {_show(error.instance)}: {message}", _MISSING
        issues.append(SpecIssue(pointer, message, value, lines.get(pointer)))
    issues.extend(_cross_field_issues(data, lines))
    return issues


_EXPONENT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _read_exponents_as_numbers(data: dict, validator) -> None:
    """PyYAML follows YAML 1.1, where `5e-5` (no dot) is the string "5e-5", not a number;
    the seed report and most training configs write learning rates that way. Where the
    schema expects a number, such a string is read as the number it spells."""
    def wants_number(error) -> bool:
        expected = error.validator_value
        return "number" in (expected if isinstance(expected, list) else [expected])

    def found(errors):
        for error in errors:
            if (error.validator == "type" and wants_number(error)
                    and isinstance(error.instance, str) and _EXPONENT.match(error.instance)):
                yield list(error.absolute_path), float(error.instance)
            yield from found(error.context or ())  # inside anyOf/oneOf

    for path, number in list(found(validator.iter_errors(data))):  # all found, then changed
        *parents, key = path
        target = data
        for part in parents:
            target = target[part]
        target[key] = number


def _cross_field_issues(data: dict, lines: dict[str, int]) -> list[SpecIssue]:
    """Rules a JSON Schema cannot say clearly."""
    out = []
    method = data.get("method", "lora")
    lora = data.get("lora") if isinstance(data.get("lora"), dict) else {}
    if method == "full" and lora:
        out.append(SpecIssue("/lora", "a lora section makes no sense with method: full",
                             _MISSING, lines.get("/lora")))
    t = data.get("training") if isinstance(data.get("training"), dict) else {}
    if t.get("warmup_ratio") and t.get("warmup_steps"):
        out.append(SpecIssue("/training/warmup_ratio", "give either training.warmup_steps or "
                             "training.warmup_ratio, not both", t.get("warmup_ratio"),
                             lines.get("/training/warmup_ratio")))
    d = data.get("data") if isinstance(data.get("data"), dict) else {}
    if d.get("validation") and d.get("validation_split"):
        out.append(SpecIssue("/data/validation_split",
                             "give either data.validation (a file) or "
                             "data.validation_split, not both",
                             d.get("validation_split"), lines.get("/data/validation_split")))
    tracking = data.get("tracking") if isinstance(data.get("tracking"), dict) else {}
    reports = tracking.get("report_to")
    if isinstance(reports, list) and "tensorboard" in reports:
        out.append(SpecIssue("/tracking/report_to", "TensorBoard files are written by jessy "
                             "itself, for every backend: set tracking.tensorboard: true",
                             _MISSING, lines.get("/tracking/report_to")))
    return out


def parse(text: str, file: str | None = None) -> tuple[Any, dict[str, int]]:
    """The YAML's data (yaml.safe_load's meaning) and the line of every spec path."""
    try:
        return yaml_limits.load(text)
    except yaml_limits.YamlInputError as exc:
        raise SpecError([SpecIssue(exc.path, exc.message, _MISSING, exc.line)], file) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        context, since = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context:  # e.g. "while scanning a quoted scalar", where that began
            problem += f" ({context}{f' at line {since.line + 1}' if since else ''})"
        raise SpecError([SpecIssue("", f"not valid YAML: {problem}", _MISSING, line)],
                        file) from None


def _read_spec_text(path: Path) -> str:
    """The spec file's text, or a SpecError: not a regular file, over 1 MiB, not UTF-8."""
    try:
        return yaml_limits.read_text(path)
    except yaml_limits.YamlInputError as exc:
        raise SpecError([SpecIssue("", exc.message, _MISSING, exc.line)], str(path)) from None
    except OSError as exc:
        raise SpecError([SpecIssue("", f"cannot read spec: {exc.strerror}", _MISSING)],
                        str(path)) from None


def load_spec(path: str | Path, overrides: dict | None = None) -> Spec:
    """Read, default and validate a spec file; raise SpecError listing every problem."""
    path = Path(path)
    raw, lines = parse(_read_spec_text(path), str(path))
    if raw is None:
        raw = {}
    data = copy.deepcopy(raw)
    if overrides and isinstance(data, dict):
        deep_merge(data, overrides)
    issues = validate(data, lines)
    if isinstance(data, dict):
        issues.extend(_file_name_issues(data, path))
    if issues:
        raise SpecError(issues, str(path))
    apply_defaults(data, load_schema("spec"))
    return Spec(data=data, source=path.resolve(), raw=raw if isinstance(raw, dict) else {})


def _file_name_issues(data: dict, path: Path) -> list[SpecIssue]:
    """Without `name:`, the run id uses the file's name, so it must obey name's rule."""
    if "name" in data:
        return []
    rule = load_schema("spec")["properties"]["name"]
    if _validator_class()(rule).is_valid(path.stem):
        return []
    return [SpecIssue("/name", f"no name: is set, and the file's name {path.stem!r} cannot "
                      f"stand in for one; add a name: to the spec, of at most "
                      f"{rule['maxLength']} characters matching {rule['pattern']}", _MISSING)]


def spec_from_dict(data: dict, base_dir: Path | None = None) -> Spec:
    """Validate an in-memory spec (used by tests and by --resume)."""
    data = copy.deepcopy(data)
    issues = validate(data)
    if issues:
        raise SpecError(issues)
    apply_defaults(data, load_schema("spec"))
    source = (base_dir / "spec.yaml") if base_dir else None
    return Spec(data=data, source=source, raw=data)


def deep_merge(into: dict, extra: dict) -> None:
    """`extra` written over `into`, section by section (a spec's overrides)."""
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            deep_merge(into[k], v)
        else:
            into[k] = v


# Spec fields the core consumes itself (data preparation, evaluation, export, run layout):
# a backend neither carries nor refuses them.
CORE_FIELDS = ("/name", "/data/train", "/data/validation", "/data/validation_split",
               "/data/format", "/data/fields/", "/data/system_prompt", "/data/max_samples",
               "/evaluation/", "/export/", "/output/", "/requirements/", "/plans",
               "/training/continue_on_fallback", "/tracking/tensorboard")


def leaf_paths(schema: dict | None = None, prefix: str = "") -> list[str]:
    schema = schema or load_schema("spec")
    out = []
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}/{name}"
        if sub.get("type") == "object" and "properties" in sub:
            out.extend(leaf_paths(sub, path))
        else:
            out.append(path)
    return out


def backend_fields() -> list[str]:
    return [p for p in leaf_paths() if not any(p == c or p.startswith(c) if c.endswith("/")
                                               else p == c for c in CORE_FIELDS)]
