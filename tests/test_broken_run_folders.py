"""`jessy eval` and `jessy export` on folders that are not usable runs: a clear message,
exit 2, no traceback, and nothing written (no half-made export/)."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest

JESSY = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "jessy"


def run_folder(root: Path, manifest, adapter: bytes | None) -> Path:
    d = root / "run"
    d.mkdir()
    (d / "run.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    (d / "spec.yaml").write_text("name: x\n")
    if adapter is not None:
        (d / "adapter").mkdir()
        (d / "adapter" / "adapter_model.safetensors").write_bytes(adapter)
    return d


def safetensors(n_bytes_of_data: int, truncate: int = 0) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n_bytes_of_data // 4],
                               "data_offsets": [0, n_bytes_of_data]}}).encode()
    blob = struct.pack("<Q", len(header)) + header + b"\0" * n_bytes_of_data
    return blob[:len(blob) - truncate]


CASES = {
    "not a run": (None, None, "not a jessy run folder"),
    "garbage run.json": ("{not json", safetensors(16), "unreadable run folder"),
    "failed run": ({"status": "failed"}, safetensors(16), "did not succeed"),
    "missing adapter": ({"status": "succeeded"}, None, "no adapter/"),
    "truncated adapter": ({"status": "succeeded"}, safetensors(64, truncate=10), "truncated"),
    "not safetensors": ({"status": "succeeded"}, b"\x01\x02", "not a readable safetensors"),
}


@pytest.mark.parametrize("command", ["eval", "export"])
@pytest.mark.parametrize("case", list(CASES))
def test_broken_run_folder_is_refused_cleanly(case, command, tmp_path):
    manifest, adapter, expected = CASES[case]
    if manifest is None:
        folder = tmp_path / "empty"
        folder.mkdir()
    else:
        folder = run_folder(tmp_path, manifest, adapter)
    r = subprocess.run([str(JESSY), command, str(folder)], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert expected in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (folder / "export").exists()
