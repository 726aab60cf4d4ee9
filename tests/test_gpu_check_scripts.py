"""scripts/gpu-check and scripts/gpu-wheels (docs/gpu-check.md) run only where a GPU machine
is lent, which no task has been so far: here they must at least parse, and the carry
folder must stay out of git."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [ROOT / "scripts" / "gpu-check", ROOT / "scripts" / "gpu-wheels"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_the_gpu_scripts_parse(script):
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    if shutil.which("shellcheck"):
        checked = subprocess.run(["shellcheck", "-S", "error", str(script)],
                                 capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout


def test_the_carry_folder_is_ignored():
    assert "gpu-carry/" in (ROOT / ".gitignore").read_text().splitlines()
