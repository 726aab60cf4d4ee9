"""One isolated virtual environment per backend, built from the plugin's pinned requirements.

Backends pin conflicting transformers/trl/torch versions, so each gets its own venv under
$JESSY_HOME/envs/<backend> and runs as a subprocess with that venv's interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .paths import envs_dir

MARKER = ".jessy-env.json"


class EnvError(Exception):
    pass


@dataclass
class BackendEnv:
    backend: str
    root: Path | None = None

    def __post_init__(self) -> None:
        if self.root is None:
            self.root = envs_dir() / self.backend

    @property
    def python(self) -> Path:
        sub = "Scripts/python.exe" if os.name == "nt" else "bin/python"
        return self.root / sub

    def bin(self, name: str) -> Path:
        return self.root / ("Scripts" if os.name == "nt" else "bin") / name

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    def exists(self) -> bool:
        """Complete only: the marker is written last, so a broken install does not count."""
        return self.marker.is_file() and self.python.exists()

    def info(self) -> dict:
        if not self.exists():
            return {}
        try:
            return json.loads(self.marker.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def remove(self) -> bool:
        if self.root.exists():
            shutil.rmtree(self.root)
            return True
        return False

    def create(self, pre_requirements: tuple[str, ...], requirements: tuple[str, ...],
               log: Callable[[str], None] = print, recreate: bool = False,
               uninstall: tuple[str, ...] = ()) -> None:
        if self.exists() and not recreate:
            installed = self.info().get("requirements")
            if installed == list(requirements):
                log(f"{self.backend}: environment already exists at {self.root}")
                return
            log(f"{self.backend}: requirements changed; rebuilding {self.root}")
        self.remove()
        self.root.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        log(f"{self.backend}: creating virtual environment {self.root}")
        _check([sys.executable, "-m", "venv", str(self.root)])
        pip = [str(self.python), "-m", "pip", "install", "--disable-pip-version-check"]
        for group in (pre_requirements, requirements):
            if group:
                log(f"{self.backend}: pip install {' '.join(group)}")
                _check(pip + list(group))
        if uninstall:
            log(f"{self.backend}: pip uninstall {' '.join(uninstall)}")
            _check([str(self.python), "-m", "pip", "uninstall", "-y", *uninstall])
        freeze = subprocess.run([str(self.python), "-m", "pip", "freeze"], capture_output=True,
                                text=True).stdout.split()
        self.marker.write_text(json.dumps({
            "backend": self.backend,
            "requirements": list(requirements),
            "pre_requirements": list(pre_requirements),
            "python": sys.version.split()[0],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.monotonic() - start, 1),
            "packages": freeze,
        }, indent=2))

    def package_version(self, name: str) -> str | None:
        prefix = name.lower().replace("_", "-") + "=="
        for line in self.info().get("packages", []):
            if line.lower().replace("_", "-").startswith(prefix):
                return line.split("==", 1)[1]
        return None


def _check(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise EnvError(f"failed: {' '.join(argv)}\n{tail}")


def list_envs() -> list[BackendEnv]:
    root = envs_dir()
    if not root.is_dir():
        return []
    return [BackendEnv(p.name, p) for p in sorted(root.iterdir()) if (p / MARKER).is_file()]
