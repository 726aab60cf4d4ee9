"""Where jessy keeps things that are not part of a run: environments and built models."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

# A source checkout (editable install) has the example specs and data beside the package; an
# installed wheel has only the package. Nothing the commands need at run time lives there.
REPO_ROOT = Path(__file__).resolve().parents[1]
SPECS_DIR = REPO_ROOT / "specs"


def package_file(*parts: str) -> Path:
    """A file shipped inside the package (schemas, plans, runtime scripts), wheel or checkout."""
    return Path(str(resources.files("jessy_adapters").joinpath(*parts)))


def is_checkout() -> bool:
    """True when running from a source checkout (pyproject.toml beside the package)."""
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "jessy_adapters").is_dir()


def jessy_home() -> Path:
    """JESSY_HOME, else ~/.cache/jessy: shared by every checkout so environments are built once."""
    return Path(os.environ.get("JESSY_HOME") or Path.home() / ".cache" / "jessy")


def envs_dir() -> Path:
    return jessy_home() / "envs"


def models_dir() -> Path:
    return jessy_home() / "models"


def schema_path(name: str) -> Path:
    return package_file("schemas", f"{name}.schema.json")
