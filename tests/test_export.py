"""`jessy export`: merge, GGUF via llama.cpp's converter, verified answers, Modelfile."""

from __future__ import annotations

import json
import os
import sys

import pytest
from conftest import write_spec

from jessy_adapters.export import (
    ExportError,
    export_run,
    modelfile_text,
    template_family,
    validate_modelfile,
)
from jessy_adapters.plugins import load_registry
from jessy_adapters.run.runner import Runner
from jessy_adapters.spec import load_spec


def test_modelfile_for_chatml_is_valid(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    text = modelfile_text("m.gguf", "chatml", "You are Jessy.", {"temperature": 0.8, "top_k": 40})
    mf = tmp_path / "Modelfile"
    mf.write_text(text)
    assert validate_modelfile(mf) == []
    assert 'PARAMETER stop "<|im_end|>"' in text and 'SYSTEM """You are Jessy."""' in text
    assert text.startswith("FROM ./m.gguf\n")


def test_modelfile_problems_are_named_with_lines(tmp_path):
    mf = tmp_path / "Modelfile"
    mf.write_text("FROM ./missing.gguf\nPARAMETER temprature 0.8\nBOGUS x\n")
    problems = validate_modelfile(mf)
    assert f"{mf}:1: FROM file not found: ./missing.gguf" in problems
    assert f"{mf}:2: unknown PARAMETER temprature" in problems
    assert f"{mf}:3: unknown instruction BOGUS" in problems


def test_template_family():
    assert template_family("<|im_start|>{{ x }}", "auto") == "chatml"
    assert template_family("<start_of_turn>user", "auto") == "gemma"
    assert template_family("anything", "gemma") == "gemma"
    with pytest.raises(ExportError, match="model.chat_template"):
        template_family("[INST]", "auto")


def test_q4_k_m_without_llama_cpp_says_how(tmp_path, monkeypatch):
    import jessy_adapters.export as export
    from jessy_adapters.export import gguf

    monkeypatch.setattr(gguf, "llama_library", lambda: None)  # where to_gguf looks it up
    with pytest.raises(ExportError, match="install node and npm"):
        export.to_gguf(tmp_path, "q4_k_m", tmp_path / "x.gguf")


@pytest.mark.slow
def test_export_of_a_real_smollm2_run_answers_from_each_gguf(tmp_path, smollm2, toy_data,
                                                             mlx_env):
    """Train SmolLM2 briefly, export f16, q8_0, q4_k_m; each answers coherently in llama.cpp."""
    from jessy_adapters.export import llama_library

    if llama_library() is None:
        pytest.skip("no node/npm here: llama.cpp's quantiser and runtime are not available")
    spec = load_spec(write_spec(tmp_path / "spec.yaml", f"""\
name: export-test
model:
  name_or_path: {smollm2}
  max_seq_length: 128
data:
  train: {toy_data}
  validation_split: 0.25
  system_prompt: You are Jessy.
training:
  max_steps: 2
  batch_size: 2
  learning_rate: 0.0001
export:
  gguf: [f16, q8_0, q4_k_m]
"""))
    run = Runner(load_registry(), console=lambda m: print(m, file=sys.stderr)).run(
        spec, ["mlx"], tmp_path / "runs")
    assert run.manifest["status"] == "succeeded"
    record = export_run(run.path, question="What is the capital of France?")
    assert [g["type"] for g in record["gguf"]] == ["f16", "q8_0", "q4_k_m"]
    import shutil

    for g in record["gguf"]:
        assert (run.path / "export" / g["path"]).read_bytes()[:4] == b"GGUF"
        assert "paris" in g["answer"].lower(), g["answer"]
        if shutil.which("node") and shutil.which("npm"):
            assert g["verified_by"].startswith("llama.cpp"), g["verified_by"]
    f16, q8, q4 = record["gguf"]
    assert q4["bytes"] < q8["bytes"] < 0.6 * f16["bytes"]
    assert record["modelfile"]["family"] == "chatml"
    assert validate_modelfile(run.path / "export" / "Modelfile") == []
    saved = json.loads((run.path / "export" / "export.json").read_text())
    assert saved["gguf"][1]["answer"] == q8["answer"]


def test_ollama_create_is_called_where_ollama_exists(tmp_path, monkeypatch):
    """With an `ollama` CLI on PATH, export runs `ollama create NAME -f Modelfile` there."""
    from jessy_adapters.export import ollama_create

    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "ollama"
    fake.write_text("#!/bin/sh\necho \"$@\" > \"$PWD/ollama-args\"\necho success\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    folder = tmp_path / "export"
    folder.mkdir()
    assert ollama_create("jessy-maximum", folder) == "success"
    assert (folder / "ollama-args").read_text().split() == ["create", "jessy-maximum", "-f",
                                                             "Modelfile"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert ollama_create("x", folder) is None
