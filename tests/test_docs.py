"""Docs that cannot drift: generated references are current, hooks and commands documented."""

from __future__ import annotations

import inspect
from pathlib import Path

from jessy_adapters import docgen, hookspecs
from jessy_adapters.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def test_spec_reference_is_current():
    current = (ROOT / "docs" / "spec-reference.md").read_text()
    assert current == docgen.render(), "run: python -m jessy_adapters.docgen"


def test_backend_field_table_is_current():
    current = (ROOT / "docs" / "backend-fields.md").read_text()
    assert current == docgen.render_fields(), "run: python -m jessy_adapters.docgen"
    assert "**missing**" not in current
    assert docgen.render_families() in (ROOT / "docs" / "backends.md").read_text()


def test_every_hook_is_documented_and_tested():
    hooks = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction)
             if hasattr(f, "jessy_spec")]
    assert hooks == ["register_backends"]
    docs = (ROOT / "docs" / "plugins.md").read_text()
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("*.py"))
    for hook in hooks:
        assert getattr(hookspecs, hook).__doc__, hook
        assert hook in docs, f"{hook} missing from docs/plugins.md"
        assert hook in tests, f"{hook} has no test"


def test_readme_names_every_command():
    readme = (ROOT / "README.md").read_text()
    for name in cli.commands:
        assert f"jessy {name}" in readme, name


def test_readme_starts_with_the_two_fresh_machine_commands():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:12])
    assert "bash scripts/quickstart" in head and "bash scripts/test" in head
    assert "bash scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_code_is_ruff_clean():
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    proc = subprocess.run([ruff, "check", "jessy_adapters", "plugins", "tests", "benchmarks"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
