"""What every dialect's importer shares: reading the native file, the three verdicts a key
can get (mapped, dropped as not affecting training, refused), and the spec they build.

A dialect module is data plus small converters: LABEL (its name in messages), recognise()
(its signature keys, for --from's default), DEFAULTS (the backend's own defaults, in spec
terms, applied where the file is silent), DROPPED (key -> why it cannot change the trained
weights), REFUSED (key -> what jessy lacks; an empty value there is simply unset), MAPPED
(key -> converter) and finish() for rules that read several keys at once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import yaml_limits

TEMPLATE_FAMILIES = ("auto", "chatml", "llama3", "gemma", "gemma3", "qwen2", "qwen3", "mistral",
                     "phi3")


class NativeFileError(Exception):
    """The native file cannot be read as YAML within jessy's limits; `line` when known."""

    def __init__(self, message: str, line: int | None = None):
        self.message, self.line = message, line
        super().__init__(message)


def read_native(path: Path) -> dict:
    """The file's mapping, read as specs are (yaml_limits: size, aliases, duplicate keys)."""
    try:
        data, _ = yaml_limits.load(yaml_limits.read_text(path))
    except yaml_limits.YamlInputError as exc:
        raise NativeFileError(exc.message, exc.line) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise NativeFileError(f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
                              mark.line + 1 if mark else None) from None
    except OSError as exc:
        raise NativeFileError(f"cannot read: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise NativeFileError("expected a mapping of keys at the top of the file")
    return data


def is_unset(value: Any) -> bool:
    """YAML's empty values (`key:`, false, [], {}): the backend reads them as not set."""
    return value is None or value is False or value in ("", [], {})


def number(value: Any) -> Any:
    """YAML 1.1 reads 5e-5 (no dot) as a string; the backends read it as a number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


@dataclass
class Context:
    """One import in progress: the source, the spec being built, every key's verdict."""

    dialect: str
    source: dict
    native_path: Path
    model_path: str | None = None
    data_path: str | None = None
    spec: dict = field(default_factory=dict)
    mapped: list[tuple[str, str, Any]] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    defaults: list[tuple[str, Any, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    set_by_file: set[str] = field(default_factory=set)

    def put(self, path: str, value: Any) -> None:
        node = self.spec
        *parents, leaf = path.strip("/").split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    def get(self, path: str, default: Any = None) -> Any:
        node: Any = self.spec
        for part in path.strip("/").split("/"):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def map(self, key: str, path: str, value: Any) -> None:
        self.put(path, value)
        self.set_by_file.add(path)
        self.mapped.append((key, path, value))

    def drop(self, key: str, reason: str) -> None:
        self.dropped.append((key, reason))

    def refuse(self, key: str, reason: str) -> None:
        self.refused.append((key, reason))

    def default(self, path: str, value: Any, why: str) -> None:
        """A backend default the file leaves out, applied as the backend applies it."""
        self.put(path, value)
        self.defaults = [d for d in self.defaults if d[0] != path]
        self.defaults.append((path, value, why))

    def layer_count(self) -> int | None:
        """num_hidden_layers from --model's config.json, when --model is a local folder."""
        if not self.model_path:
            return None
        cfg = Path(self.model_path) / "config.json"
        try:
            data = json.loads(cfg.read_text())
        except (OSError, ValueError):
            return None
        data = data.get("text_config", data) if isinstance(data, dict) else {}
        count = data.get("num_hidden_layers")
        return count if isinstance(count, int) else None


Converter = Callable[[Context, str, Any], None]


def inverted(value: Any) -> bool:
    """train_on_prompt -> train_on_responses_only, disable_X -> X."""
    return not value


def zero_is_none(value: Any) -> Any:
    """The HF Trainer's 0 (or empty) for "off" is the spec's null."""
    return value or None


def to_path(path: str, convert: Callable[[Any], Any] = lambda v: v) -> Converter:
    """A key whose value lands at one spec path, converted (numbers from strings, inverted
    flags...)."""

    def apply(ctx: Context, key: str, value: Any) -> None:
        ctx.map(key, path, convert(number(value)))

    return apply


def choice(path: str, table: dict[Any, Any], what: str) -> Converter:
    """A key whose values are names jessy knows under other names; others are refused."""

    def apply(ctx: Context, key: str, value: Any) -> None:
        if value in table:
            ctx.map(key, path, table[value])
        else:
            ctx.refuse(key, f"{what} {value!r} is not one jessy can express (known: "
                            f"{', '.join(map(str, table))})")

    return apply


def only(accepted: Any, reason: str, why_refused: str) -> Converter:
    """A key that only confirms what jessy always does (stage: sft, train: true)."""

    def apply(ctx: Context, key: str, value: Any) -> None:
        if value == accepted:
            ctx.drop(key, reason)
        else:
            ctx.refuse(key, f"{value!r}: {why_refused}")

    return apply


def model_reference(ctx: Context, key: str, value: Any) -> None:
    """The model: --model's local copy, or the file's reference (a hub id needs a copy)."""
    if ctx.model_path:
        ctx.map(key, "/model/name_or_path", ctx.model_path)
        ctx.notes.append(f"{key}: {value!r} in the file; the spec uses --model {ctx.model_path}")
    else:
        ctx.map(key, "/model/name_or_path", str(value))
        if not Path(str(value)).exists():
            ctx.notes.append(f"{key}: {value!r} is not a local folder (a hub id?): jessy runs "
                             "offline, so give a local copy with --model")


FORMAT_BY_KEYS = (({"messages"}, "messages"), ({"conversations"}, "sharegpt"),
                  ({"instruction", "output"}, "alpaca"), ({"prompt", "completion"},
                                                          "prompt_response"),
                  ({"prompt", "response"}, "prompt_response"), ({"text"}, "text"))


def sniff_format(path: str) -> tuple[str | None, dict]:
    """(format, fields) from the first row of a local JSONL file; (None, {}) when unreadable."""
    try:
        with open(path, encoding="utf-8") as fh:
            first = next((line for line in fh if line.strip()), "")
        row = json.loads(first)
    except (OSError, ValueError, UnicodeDecodeError):
        return None, {}
    if not isinstance(row, dict):
        return None, {}
    for keys, fmt in FORMAT_BY_KEYS:
        if keys <= row.keys():
            return fmt, ({"response": "completion"} if "completion" in keys else {})
    return None, {}


def set_data(ctx: Context, key: str, train: Any, fmt: str | None, fields: dict) -> None:
    """data.train (--data's local copy wins: its rows say their format), format and fields."""
    if ctx.data_path:
        ctx.notes.append(f"{key}: {train!r} in the file; the spec uses --data {ctx.data_path}")
        train = ctx.data_path
    local = isinstance(train, str) and Path(train).is_file()
    if local and (ctx.data_path or fmt is None):
        sniffed, sniffed_fields = sniff_format(train)
        if sniffed:
            fmt, fields = sniffed, {**fields, **sniffed_fields}
    if not local and isinstance(train, str):
        ctx.notes.append(f"{key}: {train!r} is not a local file (a hub dataset?): jessy runs "
                         "offline, so give a local JSONL copy with --data")
    ctx.map(key, "/data/train", train)
    if fmt:
        ctx.map(key, "/data/format", fmt)
    else:
        ctx.notes.append(f"{key}: the rows' format is unknown; the spec keeps jessy's default "
                         "(prompt_response): check it, or give --data with rows to read")
    for name, column in fields.items():
        if column != name:
            ctx.map(key, f"/data/fields/{name}", column)


def last_layers(ctx: Context, key: str, n: int) -> None:
    """mlx-lm's "the last N blocks": the spec's `last N` (all for -1, or for N at or above
    the model's block count when --model tells it)."""
    count = ctx.layer_count()
    if n == -1 or (count is not None and n >= count):
        ctx.map(key, "/lora/layers", "all")
    elif n < 1:
        ctx.refuse(key, f"{n} blocks: give a positive count, or -1 (all)")
    else:
        ctx.map(key, "/lora/layers", f"last {n}")


def resolve_warmup(ctx: Context, steps_key: str = "warmup_steps",
                   ratio_key: str = "warmup_ratio") -> None:
    """The HF Trainer's rule: warmup_steps > 0 wins over warmup_ratio; the spec holds one."""
    if ctx.source.get(steps_key):
        if ctx.get("/training/warmup_ratio"):
            ctx.notes.append(f"{ratio_key} is ignored by the backend next to {steps_key}")
        ctx.put("/training/warmup_ratio", None)
    elif ctx.get("/training/warmup_ratio"):
        ctx.put("/training/warmup_steps", 0)


def full_has_no_lora(ctx: Context) -> None:
    """A full fine-tune has no adapter: LoRA keys there change nothing (the backend ignores
    them), so they move from mapped to dropped and the spec has no lora section."""
    if ctx.get("/method") != "full":
        return
    ctx.spec.pop("lora", None)
    lora_keys = {key.split(".")[0] for key, path, _ in ctx.mapped if path.startswith("/lora/")}
    ctx.mapped = [m for m in ctx.mapped if m[0].split(".")[0] not in lora_keys]
    ctx.dropped += [(key, "a LoRA setting, and this is a full fine-tune")
                    for key in sorted(lora_keys)]
    ctx.defaults = [d for d in ctx.defaults if not d[0].startswith("/lora/")]


def classify(ctx: Context, dialect) -> None:
    """Every key of the source gets exactly one verdict (unknown keys are refused)."""
    for path, (value, why) in dialect.DEFAULTS.items():
        ctx.default(path, value, why)
    for key, value in ctx.source.items():
        if key in dialect.MAPPED:
            dialect.MAPPED[key](ctx, key, value)
        elif key in dialect.DROPPED:
            ctx.drop(key, dialect.DROPPED[key])
        elif key in dialect.REFUSED:
            if is_unset(value):
                ctx.drop(key, "empty or off: not used")
            else:
                ctx.refuse(key, dialect.REFUSED[key])
        else:
            ctx.refuse(key, f"not a {dialect.LABEL} key jessy knows; it may change training, "
                            "so it is not dropped silently")
    dialect.finish(ctx)
    ctx.defaults = [d for d in ctx.defaults if d[0] not in ctx.set_by_file]


def unclassified(ctx: Context) -> list[str]:
    """Source keys with no verdict, or with more than one kind of verdict (a bug if any)."""
    kinds: dict[str, set[str]] = {}
    for key, *_ in ctx.mapped:  # lora_parameters.rank is a part of lora_parameters
        kinds.setdefault(key.split(".")[0], set()).add("mapped")
    for key, _ in ctx.dropped:
        kinds.setdefault(key, set()).add("dropped")
    for key, _ in ctx.refused:
        kinds.setdefault(key, set()).add("refused")
    return [k for k in ctx.source if len(kinds.get(k, ())) != 1]


def close(a: Any, b: Any, tol: float = 1e-9) -> bool:
    """Equal, with floats within tol (relative)."""
    if isinstance(a, float) or isinstance(b, float):
        return (isinstance(a, (int, float)) and isinstance(b, (int, float))
                and math.isclose(a, b, rel_tol=tol, abs_tol=tol))
    return a == b
