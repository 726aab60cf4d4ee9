"""Generate docs/spec-reference.md from specs/spec.schema.json (a test keeps it current)."""

from __future__ import annotations

import json
from pathlib import Path

from .spec import load_schema


def _type(s: dict) -> str:
    if "enum" in s:
        return " \\| ".join(f"`{v}`" for v in s["enum"])
    if "oneOf" in s:
        return " or ".join(_type(x) if "const" not in x else f"`{x['const']}`" for x in s["oneOf"])
    if "const" in s:
        return f"`{s['const']}`"
    t = s.get("type", "")
    if t == "array" and "items" in s:
        return f"list of {_type(s['items'])}"
    return " \\| ".join(t) if isinstance(t, list) else str(t)


def _bounds(s: dict) -> str:
    out = []
    for key, sym in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
                     ("exclusiveMaximum", "<")):
        if key in s:
            out.append(f"{sym} {s[key]}")
    return ", ".join(out)


def render() -> str:
    schema = load_schema("spec")
    lines = ["# Spec reference", "",
             "Generated from `specs/spec.schema.json` by `python -m jessy_adapters.docgen`; "
             "do not edit by hand.", "", schema["description"], "",
             "| path | type | default | bounds | meaning |", "|---|---|---|---|---|"]

    def walk(props: dict, prefix: str, required: set) -> None:
        for name, s in props.items():
            path = f"{prefix}/{name}"
            default = "required" if name in required else (
                f"`{json.dumps(s['default'])}`" if "default" in s else "")
            desc = s.get("description", "").replace("|", "\\|")
            kind = "section" if s.get("type") == "object" and "properties" in s else _type(s)
            lines.append(f"| `{path}` | {kind} | {default} | {_bounds(s)} | {desc} |")
            if s.get("type") == "object" and "properties" in s:
                walk(s["properties"], path, set(s.get("required", [])))

    walk(schema["properties"], "", set(schema.get("required", [])))
    lines += ["", "Unknown keys are errors everywhere. `jessy validate SPEC` lists every problem "
              "with its file, line and path, and exits 2."]
    return "\n".join(lines) + "\n"


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "docs" / "spec-reference.md"
    out.write_text(render())
    print(out)


if __name__ == "__main__":
    main()
