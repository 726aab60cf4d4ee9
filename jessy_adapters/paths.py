"""Where jessy keeps things that are not part of a run: environments and built models."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SPECS_DIR = REPO_ROOT / "specs"


def jessy_home() -> Path:
    """JESSY_HOME, else ~/.cache/jessy: shared by every checkout so environments are built once."""
    return Path(os.environ.get("JESSY_HOME") or Path.home() / ".cache" / "jessy")


def envs_dir() -> Path:
    return jessy_home() / "envs"


def models_dir() -> Path:
    return jessy_home() / "models"


def schema_path(name: str) -> Path:
    return SPECS_DIR / f"{name}.schema.json"
