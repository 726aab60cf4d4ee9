"""The core never imports a backend library, and stays cheap to import."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "jessy_adapters"
# sub-packages whose modules are each imported too (the CLI and export import heavy
# libraries only inside functions)
CORE_PACKAGES = ("cli", "export")
BACKEND_LIBS = {"mlx", "mlx_lm", "unsloth", "unsloth_zoo", "axolotl", "llamafactory", "trl",
                "deepspeed", "bitsandbytes"}


def test_no_backend_import_in_core_sources():
    offenders = []
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in BACKEND_LIBS:
                    offenders.append(f"{path.name}:{node.lineno} imports {name}")
    assert offenders == []


def test_importing_every_core_module_loads_no_backend_or_torch():
    modules = sorted(f"jessy_adapters.{p.stem}" for p in CORE.glob("*.py")
                     if p.stem != "__init__")
    modules += sorted(f"jessy_adapters.{package}.{p.stem}" for package in CORE_PACKAGES
                      for p in (CORE / package).glob("*.py")
                      if p.stem not in ("__init__", "__main__"))
    code = ("import sys, json\n" + "".join(f"import {m}\n" for m in modules) +
            "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))")
    loaded = set(json.loads(subprocess.check_output([sys.executable, "-c", code], text=True)))
    assert loaded & BACKEND_LIBS == set()
    # torch/transformers are allowed in the core only lazily (eval, export, model builds)
    assert "torch" not in loaded and "transformers" not in loaded


def test_plugin_registration_does_not_import_its_backend_library():
    code = ("import sys, json\nfrom jessy_adapters.plugins import load_registry\n"
            "load_registry()\nprint(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))")
    loaded = set(json.loads(subprocess.check_output([sys.executable, "-c", code], text=True)))
    assert loaded & BACKEND_LIBS == set()
