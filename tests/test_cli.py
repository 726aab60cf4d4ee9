"""The command line as a user (or a script) runs it: output, files, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import SPEC_EXAMPLES, write_spec


def jessy(*args, env=None, check=False):
    import os

    proc = subprocess.run([sys.executable, "-m", "jessy_adapters.cli", *map(str, args)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_help_shows_examples():
    for cmd in ([], ["run"], ["translate"], ["validate"], ["backends"], ["env", "create"],
                ["plan"], ["eval"]):
        out = jessy(*cmd, "--help", check=True).stdout
        assert "Example" in out, cmd


def test_backends_json_lists_mlx_with_a_reason(clean_home):
    rows = json.loads(jessy("backends", "--json", check=True).stdout)
    mlx = next(r for r in rows if r["name"] == "mlx")
    assert mlx["environment_exists"] is False and mlx["can_run"] is False
    assert "jessy env create mlx" in mlx["reason"]


def test_backends_reports_ready_mlx(mlx_env):
    rows = json.loads(jessy("backends", "--json", check=True).stdout)
    mlx = next(r for r in rows if r["name"] == "mlx")
    assert mlx["environment_exists"] and mlx["can_run"], mlx


def test_require_gpu_makes_linux_mlx_unavailable(mlx_env):
    import platform

    if platform.system() != "Linux":
        pytest.skip("Linux-only behaviour")
    rows = json.loads(jessy("backends", "--json", "--require-gpu", check=True).stdout)
    mlx = next(r for r in rows if r["name"] == "mlx")
    assert not mlx["can_run"] and "accelerator required" in mlx["reason"]


def test_env_list_and_remove_on_an_empty_home(clean_home):
    assert "no backend environments" in jessy("env", "list", check=True).stdout
    assert "no environment for mlx" in jessy("env", "remove", "mlx", check=True).stdout


def test_a_backend_in_jessy_s_interpreter_has_no_environment_to_create(clean_home):
    proc = jessy("env", "create", "ollama-modelfile", check=True)
    assert proc.stdout.startswith("ollama-modelfile: nothing to create: it runs in jessy's own "
                                  f"interpreter ({sys.executable}); check: ")
    assert not (clean_home / "envs").exists()
    rows = {r["name"]: r for r in json.loads(jessy("backends", "--json", check=True).stdout)}
    baseline = rows["ollama-modelfile"]
    assert baseline["environment"] == "jessy" and baseline["environment_exists"] is True
    assert rows["mlx"]["environment"] == str(clean_home / "envs" / "mlx")


def test_env_create_unknown_backend_fails_clearly(clean_home):
    proc = jessy("env", "create", "nosuch")
    assert proc.returncode == 1 and "no backend named 'nosuch'" in proc.stderr


def test_translate_writes_native_files_and_prints_the_command(tmp_path, smollm2):
    proc = jessy("translate", "--backend", "mlx", SPEC_EXAMPLES / "quickstart.yaml", "--out",
                 tmp_path / "out", check=True)
    cfg = yaml.safe_load((tmp_path / "out" / "mlx_lora.yaml").read_text())
    assert cfg["lora_parameters"] == {"rank": 8, "scale": 2.0, "dropout": 0.0}
    assert cfg["num_layers"] == -1
    command = proc.stdout.strip().splitlines()[-1]
    assert command.endswith(str(tmp_path / "out" / "mlx_lora.yaml"))
    assert "train_entry.py" in command
    assert (tmp_path / "out" / "command.txt").read_text().strip() == command
    assert (tmp_path / "out" / "data" / "train.jsonl").exists()


def test_translate_refusal_exits_2(tmp_path, smollm2):
    spec = yaml.safe_load((SPEC_EXAMPLES / "quickstart.yaml").read_text())
    spec["model"]["attn_implementation"] = "flash_attention_2"
    spec["data"]["train"] = [str((SPEC_EXAMPLES / f).resolve()) for f in spec["data"]["train"]]
    spec["evaluation"] = {}
    path = write_spec(tmp_path / "fa2.yaml", yaml.safe_dump(spec))
    proc = jessy("translate", "--backend", "mlx", path)
    assert proc.returncode == 2
    assert "/model/attn_implementation: flash_attention_2 is a CUDA kernel" in proc.stderr


def test_run_with_bad_data_exits_2_and_names_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a", "response": ""}\n')
    path = write_spec(tmp_path / "s.yaml",
                      f"model:\n  name_or_path: {tmp_path}\ndata:\n  train: {bad}\n")
    proc = jessy("run", "--backend", "mlx", path, "--output", tmp_path / "runs")
    assert proc.returncode == 2
    assert f"{bad}:2: field 'response' is empty" in proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


def test_run_with_a_missing_environment_fails_with_the_fix(tmp_path, clean_home, toy_data):
    path = write_spec(tmp_path / "s.yaml",
                      f"model:\n  name_or_path: {tmp_path}\ndata:\n  train: {toy_data}\n")
    proc = jessy("run", "--backend", "mlx", path, "--output", tmp_path / "runs")
    assert proc.returncode == 1
    assert "unavailable" in proc.stderr and "jessy env create mlx" in proc.stderr


def test_plan_shows_the_chain(tmp_path, toy_data, clean_home):
    path = write_spec(tmp_path / "s.yaml",
                      f"model:\n  name_or_path: {tmp_path}\ndata:\n  train: {toy_data}\n")
    rows = json.loads(jessy("plan", "--plan", "A", path, "--json", check=True).stdout)
    assert [r["backend"] for r in rows] == ["unsloth", "llamafactory", "mlx"]
    for row in rows:
        assert row["can_run"] is False
        assert f"jessy env create {row['backend']}" in row["reason"]
    text = jessy("plan", "--plan", "A", path, check=True).stdout
    assert "would train on: nothing" in text


def test_plan_names_the_first_runnable_backend(tmp_path, toy_data, mlx_env):
    path = write_spec(tmp_path / "s.yaml",
                      f"model:\n  name_or_path: {tmp_path}\ndata:\n  train: {toy_data}\n")
    text = jessy("plan", "--plan", "C", path, check=True).stdout
    assert "-> 1. mlx" in text and "would train on: mlx" in text


def test_run_requires_a_backend_or_plan(tmp_path, toy_data):
    path = write_spec(tmp_path / "s.yaml",
                      f"model:\n  name_or_path: {tmp_path}\ndata:\n  train: {toy_data}\n")
    proc = jessy("run", path)
    assert proc.returncode == 2 and "--backend NAME or --plan" in proc.stderr


def test_cli_run_end_to_end_on_the_tiny_model(tmp_path, tiny_model, toy_data, mlx_env):
    path = write_spec(tmp_path / "s.yaml", f"""\
name: cli-e2e
model:
  name_or_path: {tiny_model}
data:
  train: {toy_data}
  validation_split: 0.25
training:
  max_steps: 4
  logging_steps: 2
""")
    proc = jessy("run", "--backend", "mlx", path, "--output", tmp_path / "runs", check=True)
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path / "runs"
    assert "succeeded on mlx: 4 steps, final loss" in proc.stderr
    assert "[mlx] step 2/4" in proc.stderr  # live progress
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()


def test_a_spec_can_override_a_plan(tmp_path, toy_data, clean_home):
    path = write_spec(tmp_path / "s.yaml", f"""\
model:
  name_or_path: {tmp_path}
data:
  train: {toy_data}
plans:
  A: [llamafactory, mlx]
  laptop: [mlx]
""")
    rows = json.loads(jessy("plan", "--plan", "A", path, "--json", check=True).stdout)
    assert [r["backend"] for r in rows] == ["llamafactory", "mlx"]
    rows = json.loads(jessy("plan", "--plan", "laptop", path, "--json", check=True).stdout)
    assert [r["backend"] for r in rows] == ["mlx"]
    proc = jessy("plan", "--plan", "nosuch", path)
    assert proc.returncode == 2 and "unknown plan 'nosuch'" in proc.stderr
