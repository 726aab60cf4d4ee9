"""The canonical spec: YAML -> defaults from the JSON Schema -> strict validation.

The schema in specs/spec.schema.json is the single source of truth: defaults are read
from it (not repeated in code) and every error names the file, the YAML line, the spec
path, the offending value and what was expected.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

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
        shown = "" if self.value is _MISSING else f" (got {json.dumps(self.value, default=str)})"
        return f"{where}: {self.path or '/'}: {self.message}{shown}"


_MISSING = object()


class SpecError(Exception):
    """Raised with every problem found, not just the first."""

    def __init__(self, issues: list[SpecIssue], file: str | None = None):
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


def _line_index(text: str) -> dict[str, int]:
    """Map JSON pointers to 1-based YAML lines, so errors point into the user's file."""
    lines: dict[str, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, pointer: str) -> None:
        lines.setdefault(pointer, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                child = f"{pointer}/{key_node.value}"
                lines[child] = key_node.start_mark.line + 1
                walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{pointer}/{i}")

    if root is not None:
        walk(root, "")
    return lines


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
        return f"expected {s['type'] if isinstance(s['type'], str) else ' or '.join(s['type'])}"
    if v == "exclusiveMinimum":
        return f"expected a value > {s['exclusiveMinimum']}"
    if v == "minimum":
        return f"expected a value >= {s['minimum']}"
    if v == "exclusiveMaximum":
        return f"expected a value < {s['exclusiveMaximum']}"
    if v == "maximum":
        return f"expected a value <= {s['maximum']}"
    if v == "oneOf":
        options = []
        for alt in s["oneOf"]:
            if "const" in alt:
                options.append(repr(alt["const"]))
            elif alt.get("type") == "array":
                items = alt.get("items", {})
                options.append(
                    f"a list of {', '.join(items['enum'])}" if "enum" in items else "a list"
                )
            elif "type" in alt:
                options.append(f"a {alt['type']}")
        return f"expected {' or '.join(options)}"
    return error.message


def validate(data: Any, text: str = "", file: str | None = None) -> list[SpecIssue]:
    from jsonschema import Draft202012Validator

    if not isinstance(data, dict):
        return [SpecIssue("", "the spec must be a YAML mapping (key: value)", data, 1)]
    lines = _line_index(text) if text else {}
    validator = Draft202012Validator(load_schema("spec"))
    _read_exponents_as_numbers(data, validator)
    issues = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path))):
        pointer = "".join(f"/{p}" for p in error.path)
        value: Any = error.instance
        if error.validator == "additionalProperties":
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            for key in extra:
                p = f"{pointer}/{key}"
                issues.append(SpecIssue(p, _expected(error), _MISSING, lines.get(p)))
            continue
        if error.validator == "required":
            value = _MISSING
        issues.append(SpecIssue(pointer, _expected(error), value, lines.get(pointer)))
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
    d = data.get("data") if isinstance(data.get("data"), dict) else {}
    if d.get("validation") and d.get("validation_split"):
        out.append(SpecIssue("/data/validation_split",
                             "give either data.validation (a file) or "
                             "data.validation_split, not both",
                             d.get("validation_split"), lines.get("/data/validation_split")))
    return out


def parse(text: str, file: str | None = None) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise SpecError([SpecIssue("", f"not valid YAML: {getattr(exc, 'problem', exc)}",
                                   _MISSING, line)], file) from None


def load_spec(path: str | Path, overrides: dict | None = None) -> Spec:
    """Read, default and validate a spec file; raise SpecError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([SpecIssue("", f"cannot read spec: {exc.strerror}", _MISSING)],
                        str(path)) from None
    raw = parse(text, str(path))
    if raw is None:
        raw = {}
    data = copy.deepcopy(raw)
    if overrides and isinstance(data, dict):
        _deep_merge(data, overrides)
    issues = validate(data, text, str(path))
    if issues:
        raise SpecError(issues, str(path))
    apply_defaults(data, load_schema("spec"))
    return Spec(data=data, source=path.resolve(), raw=raw if isinstance(raw, dict) else {})


def spec_from_dict(data: dict, base_dir: Path | None = None) -> Spec:
    """Validate an in-memory spec (used by tests and by --resume)."""
    data = copy.deepcopy(data)
    issues = validate(data)
    if issues:
        raise SpecError(issues)
    apply_defaults(data, load_schema("spec"))
    source = (base_dir / "spec.yaml") if base_dir else None
    return Spec(data=data, source=source, raw=data)


def _deep_merge(into: dict, extra: dict) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _deep_merge(into[k], v)
        else:
            into[k] = v


# Spec fields the core consumes itself (data preparation, evaluation, export, run layout):
# a backend neither carries nor refuses them.
CORE_FIELDS = ("/name", "/data/train", "/data/validation", "/data/validation_split",
               "/data/format", "/data/fields/", "/data/system_prompt", "/data/max_samples",
               "/evaluation/", "/export/", "/output/", "/requirements/", "/plans",
               "/training/continue_on_fallback")


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
