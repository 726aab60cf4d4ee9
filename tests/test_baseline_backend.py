"""`jessy run --backend ollama-modelfile`: the seed's baseline row, no training, one flag."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import write_spec

from jessy_adapters.export import validate_modelfile


def test_baseline_run_writes_a_verified_gguf_and_modelfile(tmp_path, tiny_model, toy_data):
    path = write_spec(tmp_path / "b.yaml", f"""\
name: baseline
model:
  name_or_path: {tiny_model}
data:
  train: {toy_data}
  system_prompt: You are Jessy, a friendly AI assistant.
export:
  gguf: [q8_0]
""")
    proc = subprocess.run([sys.executable, "-m", "jessy_adapters.cli", "run", "--backend",
                           "ollama-modelfile", str(path), "--output", str(tmp_path / "runs")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    m = json.loads((run_dir / "run.json").read_text())
    assert m["status"] == "succeeded" and m["adapter"] is None
    assert m["outputs"]["format"] == "none"
    runtime = m["attempts"][0]["runtime"]
    assert runtime["gguf"] == "base-q8_0.gguf" and runtime["answer"] is not None
    modelfile = run_dir / "export" / "Modelfile"
    assert validate_modelfile(modelfile) == []
    text = modelfile.read_text()
    assert 'SYSTEM """You are Jessy, a friendly AI assistant."""' in text
    assert "FROM ./base-q8_0.gguf" in text and "PARAMETER temperature 0.8" in text
    assert (run_dir / "export" / "base-q8_0.gguf").read_bytes()[:4] == b"GGUF"
    assert any("no training" in n for n in m["attempts"][0]["notes"])
