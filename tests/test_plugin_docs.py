"""docs/plugins.md tells the whole contract (datasette's meta-test): every public member of
Backend and every field of RunInputs is documented, with the signature the code has, so is
every member a LaunchTarget adds to Backend, and so are the contract's pytest plugin options
and fixtures. Each check is shown to fail on a
member the page does not know (tests of the tests)."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from jessy_adapters import contract
from jessy_adapters.backend import Backend, LaunchTarget, RunInputs
from jessy_adapters.testing import fixtures, plugin

DOC = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()


def documented_methods(doc: str) -> dict[str, str]:
    """Method name -> the argument list the methods table shows."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)\(([^)]*)\)", doc, re.M)}


def documented_fields(doc: str) -> set[str]:
    table = doc.split("| field | meaning", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^\| `(\w+)` \|", table, re.M))


def undocumented(cls: type, doc: str, inherited: type | None = None) -> list[str]:
    """Public methods of `cls` (those it adds to `inherited`, if given) missing from the
    table, or shown with other arguments."""
    shown, problems = documented_methods(doc), []
    for name, member in inspect.getmembers(cls, inspect.isfunction):
        if name.startswith("_") or (inherited is not None and hasattr(inherited, name)):
            continue
        params = [p for p in inspect.signature(member).parameters.values() if p.name != "self"]
        args = ", ".join(p.name if p.default is inspect.Parameter.empty
                         else f"{p.name}={p.default!r}" for p in params)
        if name not in shown:
            problems.append(f"{name} is not documented")
        elif shown[name].replace(" ", "") != args.replace(" ", ""):
            problems.append(f"{name}({args}) is documented as {name}({shown[name]})")
    return problems


def launch_target_section(doc: str) -> str:
    return doc.split("## A launch target", 1)[-1].split("\n## ", 1)[0]


def undocumented_launch_target(cls: type, doc: str) -> list[str]:
    """What `cls` adds to Backend (methods with their signatures, class attributes, declared
    or set) that the launch-target section does not show."""
    section = launch_target_section(doc)
    problems = undocumented(cls, section, inherited=Backend)
    declared = {n for klass in cls.__mro__ if issubclass(klass, LaunchTarget)
                for n in [*vars(klass).get("__annotations__", {}), *vars(klass)]}
    attributes = {n for n in declared if not n.startswith("_") and not hasattr(Backend, n)
                  and not callable(getattr(cls, n, None))} - {n for n in Backend.__annotations__}
    return problems + [f"{n} is not documented" for n in sorted(attributes)
                       if f"| `{n}` |" not in section]


def undocumented_fields(cls: type, doc: str) -> list[str]:
    """Fields of the dataclass `cls` missing from the RunInputs table, and rows of the table
    that name no field."""
    fields, shown = {f.name for f in dataclasses.fields(cls)}, documented_fields(doc)
    return ([f"{f} is not documented" for f in sorted(fields - shown)]
            + [f"{f} is documented but not a field" for f in sorted(shown - fields)])


def _is_fixture(obj) -> bool:
    return type(obj).__name__ == "FixtureFunctionDefinition" or hasattr(
        obj, "_pytestfixturefunction")


def plugin_names() -> set[str]:
    """The pytest plugin's command-line and ini options, and every fixture the contract runs
    with (its own module's, the fixtures module's, and `backend_name`)."""
    class Recorder:
        def __init__(self):
            self.names: set[str] = set()

        def getgroup(self, *args, **kwargs):
            return self

        def addoption(self, *names, **kwargs):
            self.names.update(names)

        def addini(self, name, *args, **kwargs):
            self.names.add(name)

    recorder = Recorder()
    plugin.pytest_addoption(recorder)
    found = {n for module in (contract, fixtures) for n, obj in vars(module).items()
             if _is_fixture(obj)}
    return recorder.names | found | {"backend_name"}


def undocumented_plugin_names(names: set[str], doc: str) -> list[str]:
    section = doc.split("## Testing a plugin", 1)[-1].split("\n## ", 1)[0]
    return [f"{n} is not documented" for n in sorted(names) if f"`{n}" not in section]


def test_every_backend_member_is_documented_with_its_signature():
    assert undocumented(Backend, DOC) == []


def test_every_launch_target_member_is_documented_with_its_signature():
    assert undocumented_launch_target(LaunchTarget, DOC) == []
    assert "bundle" in documented_methods(launch_target_section(DOC))


def test_the_meta_test_catches_an_undocumented_launch_target_member():
    class Grown(LaunchTarget):
        region: str = "eu"

        def teardown(self, cluster, wait=True):
            """A member the docs do not know."""

    assert undocumented_launch_target(Grown, DOC) == ["teardown is not documented",
                                                      "region is not documented"]
    renamed = DOC.replace("`bundle(spec, out_dir, env, plan, accelerator, cloud)",
                          "`bundle(spec, out_dir, env, plan, gpu, cloud)")
    assert any("bundle" in p for p in undocumented_launch_target(LaunchTarget, renamed))
    dropped = DOC.replace("| `task_file` |", "| task file |")
    assert undocumented_launch_target(LaunchTarget, dropped) == ["task_file is not documented"]


def test_every_run_inputs_field_is_documented():
    assert undocumented_fields(RunInputs, DOC) == []


def test_every_option_and_fixture_of_the_pytest_plugin_is_documented():
    names = plugin_names()
    assert {"--jessy-backend", "jessy_backends", "tiny_model", "toy_data", "smollm2",
            "stand_in_model", "backend_env", "backend_name"} <= names
    assert undocumented_plugin_names(names, DOC) == []


def test_the_meta_test_catches_an_undocumented_member():
    class Grown(Backend):
        def warm_up(self, env, seconds=3):
            """A member the docs do not know."""

    assert undocumented(Grown, DOC) == ["warm_up is not documented"]
    renamed = DOC.replace("`check(env, require_accelerator=False)", "`check(env, gpu=False)")
    assert any("check" in p for p in undocumented(Backend, renamed))


def test_the_meta_test_catches_a_member_added_to_backend_itself(monkeypatch):
    def warm_up(self, env, seconds=3):
        """A member grown on Backend that the docs do not know."""

    monkeypatch.setattr(Backend, "warm_up", warm_up, raising=False)
    assert undocumented(Backend, DOC) == ["warm_up is not documented"]


def test_the_meta_test_catches_an_undocumented_run_inputs_field():
    @dataclasses.dataclass
    class GrownInputs(RunInputs):
        max_tokens: int | None = None

    assert undocumented_fields(GrownInputs, DOC) == ["max_tokens is not documented"]
    dropped = DOC.replace("| `init_adapter` |", "| init adapter |")
    assert undocumented_fields(RunInputs, dropped) == ["init_adapter is not documented"]


@pytest.mark.parametrize("name", ["--jessy-backend", "tiny_model", "backend_env"])
def test_the_meta_test_catches_an_undocumented_plugin_option_or_fixture(name):
    assert undocumented_plugin_names(plugin_names() | {"jessy_new_fixture"}, DOC) == [
        "jessy_new_fixture is not documented"]
    section = DOC.split("## Testing a plugin", 1)[1].split("\n## ", 1)[0]
    gone = DOC.replace(section, section.replace(f"`{name}", "`renamed"))
    assert f"{name} is not documented" in undocumented_plugin_names(plugin_names(), gone)
