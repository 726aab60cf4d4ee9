"""docs/plugins.md tells the whole contract (datasette's meta-test): every public member of
Backend and every field of RunInputs is documented, with the signature the code has."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

from jessy_adapters.backend import Backend, RunInputs

DOC = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()


def documented_methods(doc: str) -> dict[str, str]:
    """Method name -> the argument list the methods table shows."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)\(([^)]*)\)", doc, re.M)}


def documented_fields(doc: str) -> set[str]:
    table = doc.split("| field | meaning", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^\| `(\w+)` \|", table, re.M))


def undocumented(cls: type, doc: str) -> list[str]:
    """Public methods of `cls` missing from the table, or shown with other arguments."""
    shown, problems = documented_methods(doc), []
    for name, member in inspect.getmembers(cls, inspect.isfunction):
        if name.startswith("_"):
            continue
        params = [p for p in inspect.signature(member).parameters.values() if p.name != "self"]
        args = ", ".join(p.name if p.default is inspect.Parameter.empty
                         else f"{p.name}={p.default!r}" for p in params)
        if name not in shown:
            problems.append(f"{name} is not documented")
        elif shown[name].replace(" ", "") != args.replace(" ", ""):
            problems.append(f"{name}({args}) is documented as {name}({shown[name]})")
    return problems


def test_every_backend_member_is_documented_with_its_signature():
    assert undocumented(Backend, DOC) == []


def test_every_run_inputs_field_is_documented():
    assert documented_fields(DOC) == {f.name for f in dataclasses.fields(RunInputs)}


def test_the_meta_test_catches_an_undocumented_member():
    class Grown(Backend):
        def warm_up(self, env, seconds=3):
            """A member the docs do not know."""

    assert undocumented(Grown, DOC) == ["warm_up is not documented"]
    renamed = DOC.replace("`check(env, require_accelerator=False)", "`check(env, gpu=False)")
    assert any("check" in p for p in undocumented(Backend, renamed))
