"""The MLX backend for real: mlx-lm trains, jessy normalises, PEFT loads the result."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import numpy as np
import pytest
from conftest import write_spec

from jessy_adapters.plugins import load_registry
from jessy_adapters.run.runner import Runner
from jessy_adapters.spec import load_schema, load_spec

PROMPT = [{"role": "user", "content": "What is your favourite colour?"}]

MLX_LOGITS = r"""
import json, sys
import mlx.core as mx
import numpy as np
from mlx_lm.utils import load
model_path, adapter, out = sys.argv[1], sys.argv[2], sys.argv[3]
model, tok = load(model_path, adapter_path=adapter or None)
ids = tok.apply_chat_template(json.loads(sys.argv[4]), add_generation_prompt=True)
logits = model(mx.array([ids]))[0, -1].astype(mx.float32)
np.save(out, np.array(logits))
print(json.dumps(ids))
"""


def mlx_logits(env, model, adapter, tmp_path, name):
    out = tmp_path / f"{name}.npy"
    ids = subprocess.check_output([str(env.python), "-c", MLX_LOGITS, model, adapter or "",
                                   str(out), json.dumps(PROMPT)], text=True)
    return np.load(out), json.loads(ids.strip().splitlines()[-1])


def peft_logits(model, adapter, ids):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    with torch.no_grad():
        plain = base(torch.tensor([ids])).logits[0, -1].numpy().copy()
        tuned = PeftModel.from_pretrained(base, adapter)
        lora = tuned(torch.tensor([ids])).logits[0, -1].numpy().copy()
    return plain, lora


def train(tmp_path, model, data, training):
    spec = load_spec(write_spec(tmp_path / "spec.yaml", f"""\
name: mlx-test
model:
  name_or_path: {model}
  max_seq_length: 128
data:
  train: {data}
  validation_split: 0.25
lora:
  r: 4
  alpha: 8
training:
{training}"""))
    runner = Runner(load_registry(), console=lambda m: print(m, file=sys.stderr))
    return runner.run(spec, ["mlx"], tmp_path / "runs")


def test_tiny_model_run_is_complete_and_learns(tmp_path, tiny_model, toy_data, mlx_env):
    result = train(tmp_path, tiny_model, toy_data,
                   "  max_steps: 30\n  batch_size: 4\n  learning_rate: 0.01\n"
                   "  logging_steps: 5\n  eval_steps: 10\n  lr_scheduler: constant\n")
    m = json.loads((result.path / "run.json").read_text())
    assert m["status"] == "succeeded", m["failure"]
    jsonschema.validate(m, load_schema("run-manifest"))
    events = [json.loads(x) for x in (result.path / "metrics.jsonl").open()]
    for e in events:
        jsonschema.validate(e, load_schema("metrics-event"))
    losses = [e["loss"] for e in events if e.get("loss") is not None]
    assert [e["step"] for e in events if e["type"] == "train"] == [5, 10, 15, 20, 25, 30]
    assert losses[-1] < 0.7 * losses[0], losses
    evals = [e["eval_loss"] for e in events if e.get("eval_loss") is not None]
    assert evals[-1] < evals[0]
    assert (result.path / "plots" / "loss.png").stat().st_size > 1000
    assert m["summary"]["steps"] == 30
    # the PEFT adapter loads and changes the model's output
    config = json.loads((result.path / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8
    assert config["layers_to_transform"] == [0, 1]
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj",
                                             "gate_proj", "up_proj", "down_proj"}
    ids = list(range(1, 12))
    plain, lora = peft_logits(tiny_model, str(result.path / "adapter"), ids)
    assert np.abs(lora - plain).max() > 1e-3


def test_openblas_is_really_loaded_on_linux(tmp_path, tiny_model, toy_data, mlx_env):
    from jessy_mlx.blas import find_openblas

    if find_openblas() is None:
        pytest.skip("no system OpenBLAS on this machine")
    result = train(tmp_path, tiny_model, toy_data, "  max_steps: 1\n  batch_size: 4\n")
    runtime = result.manifest["attempts"][0]["runtime"]
    assert "openblas" in runtime["blas"].lower()


def test_wrong_model_path_is_a_classified_failure(tmp_path, toy_data, mlx_env):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    result = train(tmp_path, empty, toy_data, "  max_steps: 1\n  batch_size: 4\n")
    m = result.manifest
    assert m["status"] == "failed"
    assert m["attempts"][0]["failure"]["kind"] in ("config_rejected", "crashed")
    assert (result.path / "attempts" / "01-mlx" / "stderr.log").stat().st_size > 0


@pytest.mark.slow
def test_peft_matches_mlx_on_real_smollm2(tmp_path, smollm2, toy_data, mlx_env):
    """The normalised adapter is the same function as mlx-lm's own, on the real model."""
    result = train(tmp_path, smollm2, toy_data,
                   "  max_steps: 3\n  batch_size: 2\n  learning_rate: 0.002\n"
                   "  logging_steps: 1\n  eval_steps: 100\n")
    assert result.manifest["status"] == "succeeded", result.manifest["failure"]
    native = str(result.path / "attempts" / "01-mlx" / "adapters")
    mlx_base, ids = mlx_logits(mlx_env, smollm2, None, tmp_path, "base")
    mlx_tuned, _ = mlx_logits(mlx_env, smollm2, native, tmp_path, "tuned")
    torch_base, torch_tuned = peft_logits(smollm2, str(result.path / "adapter"), ids)
    moved = np.abs(mlx_tuned - mlx_base).max()
    gap = np.abs(torch_tuned - mlx_tuned).max()
    base_gap = np.abs(torch_base - mlx_base).max()
    print(f"adapter moved logits by {moved:.4f}; PEFT vs MLX gap {gap:.2e} "
          f"(base models differ by {base_gap:.2e})")
    assert moved > 0.05
    assert gap < 1e-3 + 2 * base_gap
    assert int(np.argmax(torch_tuned)) == int(np.argmax(mlx_tuned))


def test_real_nan_loss_is_stopped_and_classified(tmp_path, tiny_model, toy_data, mlx_env):
    """fp16 at lr 1.0 overflows within a few steps: the run stops at once as nan_loss."""
    spec = load_spec(write_spec(tmp_path / "nan.yaml", f"""\
model:
  name_or_path: {tiny_model}
  max_seq_length: 128
data:
  train: {toy_data}
  validation_split: 0.25
training:
  max_steps: 200
  batch_size: 4
  learning_rate: 1.0
  precision: fp16
  max_grad_norm: null
  logging_steps: 1
  eval_steps: 1000
  lr_scheduler: constant
"""))
    result = Runner(load_registry(), console=lambda m: None).run(spec, ["mlx"],
                                                                  tmp_path / "runs")
    m = result.manifest
    assert m["status"] == "failed"
    assert m["attempts"][0]["failure"]["kind"] == "nan_loss", m["attempts"][0]
    steps = [json.loads(x)["step"] for x in (result.path / "metrics.jsonl").open()]
    assert max(steps) < 50  # stopped long before its 200 steps


def test_run_json_stays_parseable_when_jessy_itself_is_killed(tmp_path, tiny_model, toy_data,
                                                              mlx_env):
    """SIGKILL `jessy run` (and its backend) mid-run: run.json is whole, logs and metrics kept."""
    import os
    import signal
    import time

    path = write_spec(tmp_path / "k.yaml", f"""\
model:
  name_or_path: {tiny_model}
data:
  train: {toy_data}
  validation_split: 0.25
training:
  max_steps: 500
  logging_steps: 1
""")
    proc = subprocess.Popen([sys.executable, "-m", "jessy_adapters.cli", "run", "--backend",
                             "mlx", str(path), "--output", str(tmp_path / "runs")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        metrics = list((tmp_path / "runs").glob("*/metrics.jsonl"))
        if metrics and len(metrics[0].read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # jessy's group
    proc.wait()
    run_dir = next((tmp_path / "runs").iterdir())
    attempt = str(run_dir / "attempts" / "01-mlx")
    for _ in range(50):  # the backend must not outlive jessy (PR_SET_PDEATHSIG)
        alive = subprocess.run(["pgrep", "-f", attempt], capture_output=True).stdout.strip()
        if not alive:
            break
        time.sleep(0.2)
    assert not alive, "the backend kept running after jessy was killed"
    m = json.loads((run_dir / "run.json").read_text())
    assert m["status"] == "running" and m["attempts"][0]["backend"] == "mlx"
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) >= 3
    assert (run_dir / "attempts" / "01-mlx" / "stdout.log").read_text()


def test_timeout_stops_a_real_backend(tmp_path, tiny_model, toy_data, mlx_env):
    spec = load_spec(write_spec(tmp_path / "t.yaml", f"""\
model:
  name_or_path: {tiny_model}
data:
  train: {toy_data}
  validation_split: 0.25
training:
  max_steps: 5000
  logging_steps: 1
"""))
    result = Runner(load_registry(), console=lambda m: None, timeout=20).run(
        spec, ["mlx"], tmp_path / "runs")
    attempt = result.manifest["attempts"][0]
    assert attempt["failure"]["kind"] == "timeout"
    assert attempt["seconds"] < 60
    assert (result.path / "attempts" / "01-mlx" / "stdout.log").read_text()
