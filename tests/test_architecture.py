"""docs/architecture.md stays a true picture of the code, and the layers stay layers.

Every module of the package is named on the page (a new module must be placed in the
picture), and the layering the page states is checked on the imports themselves (a static
read of every `import`/`from` statement, lazy ones inside functions included).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jessy_adapters"
PAGE = (ROOT / "docs" / "architecture.md").read_text()

LAYERS = ("toolkit", "data", "run")
FEATURES = ("cli", "compare", "export", "importers", "sweep", "ui", "testing", "runtime")
FRONT_ENDS = {"contract", "docgen", "evaluate"}
"""Top-level modules that are front ends over the core (the page's last table row)."""

ALLOWED = {
    "toolkit": {"toolkit"},
    "data": {"data"},
    "run": {"run", "data", "toolkit"},
}
"""Which sub-packages each layer may import besides the plugin API and the leaves."""

LAZY_EXCEPTIONS = {("schedule", "data"), ("schedule", "toolkit")}
"""Stated on the page: the schedule counts packed sequences (data/room.py) and ranks
(toolkit/scaleout.py) when asked for a run's schedule."""


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def imported_layers(path: Path, source: str | None = None) -> set[str]:
    """The jessy_adapters sub-packages and top-level modules (first component) this module
    imports; `source` stands in for the file's text."""
    here = path.relative_to(PACKAGE).parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source if source is not None else path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[: len(here) - (node.level - 1)]) if node.level > 1 else \
                    list(here)
                target = base + (node.module.split(".") if node.module else [])
                names = [a.name for a in node.names] if not node.module else []
            elif node.module and node.module.startswith("jessy_adapters"):
                target = node.module.split(".")[1:]
                names = [a.name for a in node.names] if len(target) == 0 else []
            else:
                continue
            if target:
                found.add(target[0])
            found.update(names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "jessy_adapters" and len(parts) > 1:
                    found.add(parts[1])
    return found


def test_every_module_is_on_the_page():
    missing = []
    for path in modules():
        rel = path.relative_to(PACKAGE)
        if rel.name == "__init__.py" and len(rel.parts) > 1:
            continue  # a package is named by its folder
        if rel.stem not in PAGE:
            missing.append(str(rel))
    for folder in (*LAYERS, *FEATURES):
        if f"{folder}/" not in PAGE:
            missing.append(f"{folder}/")
    assert missing == [], f"docs/architecture.md does not place: {missing}"


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_what_the_page_allows(layer):
    wrong = {}
    for path in (PACKAGE / layer).rglob("*.py"):
        above = imported_layers(path) & {*LAYERS, *FEATURES, *FRONT_ENDS}
        extra = above - ALLOWED[layer] - {"runtime"} if layer == "toolkit" else \
            above - ALLOWED[layer]
        if extra:
            wrong[str(path.relative_to(PACKAGE))] = sorted(extra)
    assert wrong == {}


def test_leaves_and_configuration_import_no_layer_above_them():
    wrong = {}
    for path in PACKAGE.glob("*.py"):
        if path.stem in FRONT_ENDS or path.name == "__init__.py":
            continue
        above = imported_layers(path) & {*LAYERS, *FEATURES}
        extra = {layer for layer in above if (path.stem, layer) not in LAZY_EXCEPTIONS}
        if extra:
            wrong[path.name] = sorted(extra)
    assert wrong == {}


def test_the_check_sees_an_import_that_breaks_the_layering():
    """A test of the test: a toolkit module importing run/ is seen, relative or absolute,
    lazy or not; an import of its own package or the leaves is not."""
    probe = PACKAGE / "toolkit" / "probe.py"
    for source in ("from ..run.runner import Runner\n",
                   "def f():\n    from jessy_adapters.run import runner\n",
                   "import jessy_adapters.run.supervise\n", "from .. import run\n"):
        assert "run" in imported_layers(probe, source), source
    assert imported_layers(probe, "from .adapters import x\nfrom ..backend import B\n") == \
        {"toolkit", "backend"}
