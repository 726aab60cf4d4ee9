"""The Unsloth backend: translation, the cheap availability check, real CPU runs, fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require_env, run_and_kill_backend, write_spec

from jessy_adapters.backend import RunInputs, TranslationRefused
from jessy_adapters.contract import tiny_spec
from jessy_adapters.data import prepare
from jessy_adapters.envs import BackendEnv
from jessy_adapters.plugins import load_registry
from jessy_adapters.run.runner import Runner
from jessy_adapters.spec import load_spec
from jessy_unsloth.backend import UnslothBackend


def translate(tmp_path, toy_data, extra="", require=False, model_extra=""):
    spec = load_spec(write_spec(tmp_path / "s.yaml", f"""\
model:
  name_or_path: /models/x
{model_extra}data:
  train: {toy_data}
  validation_split: 0.25
{extra}"""))
    data = prepare(spec, tmp_path / "data")
    out = UnslothBackend().translate(spec, RunInputs("/models/x", data, require), tmp_path / "a",
                                     BackendEnv("unsloth", tmp_path / "env"))
    return json.loads(out.files["unsloth_config.json"]), out


def test_peft_style_lora_passes_through(tmp_path, toy_data):
    cfg, _ = translate(tmp_path, toy_data, "lora:\n  r: 16\n  alpha: 32\n  dropout: 0.1\n"
                                           "  target_modules: [q_proj, v_proj]\n")
    assert cfg["peft"]["r"] == 16 and cfg["peft"]["lora_alpha"] == 32  # same meaning as PEFT
    assert cfg["peft"]["target_modules"] == ["q_proj", "v_proj"]
    assert "layers_to_transform" not in cfg["peft"]


def test_all_linear_and_layers(tmp_path, toy_data):
    cfg, _ = translate(tmp_path, toy_data, "lora:\n  layers: [3, 1]\n")
    assert len(cfg["peft"]["target_modules"]) == 7
    assert cfg["peft"]["layers_to_transform"] == [1, 3]


def test_seed_recipe_maps_to_unsloth_arguments(tmp_path, toy_data):
    cfg, out = translate(tmp_path, toy_data, """\
method: qlora
training:
  epochs: 3
  batch_size: 4
  gradient_accumulation_steps: 4
  learning_rate: 0.00005
  lr_scheduler: cosine
  warmup_steps: 100
  optimizer: adamw_8bit
  gradient_checkpointing: true
""")
    assert cfg["from_pretrained"]["load_in_4bit"] is True
    s = cfg["sft"]
    assert (s["per_device_train_batch_size"], s["gradient_accumulation_steps"]) == (4, 4)
    # epochs reach Unsloth as the core's update count: 3 epochs x ceil(ceil(n/4)/4) updates
    updates = out.total_steps
    assert (s["lr_scheduler_type"], s["warmup_steps"], s["max_steps"]) == ("cosine",
                                                                           updates, updates)
    assert "num_train_epochs" not in s and s["eval_on_start"] is True
    assert s["optim"] == "adamw_8bit" and s["logging_nan_inf_filter"] is False
    assert cfg["peft"]["use_gradient_checkpointing"] == "unsloth"
    assert s["report_to"] == "none" and s["include_num_input_tokens_seen"] is True


def test_cpu_defaults_to_float32_and_refuses_fp16(tmp_path, toy_data, monkeypatch):
    import jessy_unsloth.backend as mod

    monkeypatch.setattr(mod, "nvidia_gpu", lambda: None)
    cfg, out = translate(tmp_path, toy_data)
    assert cfg["from_pretrained"]["dtype"] == "float32"
    with pytest.raises(TranslationRefused, match="/training/precision"):
        translate(tmp_path, toy_data, "training:\n  precision: fp16\n")
    with pytest.raises(TranslationRefused, match="flash_attention_2"):
        translate(tmp_path, toy_data, model_extra="  attn_implementation: flash_attention_2\n")


def test_require_accelerator_sets_unsloths_own_switch(tmp_path, toy_data):
    _, out = translate(tmp_path, toy_data, require=True)
    assert out.env["UNSLOTH_DISABLE_CPU_FALLBACK"] == "1"
    _, out = translate(tmp_path, toy_data)
    assert "UNSLOTH_DISABLE_CPU_FALLBACK" not in out.env
    assert out.env["UNSLOTH_AUTO_INSTALL"] == "0"


def test_cheap_check_without_environment(clean_home):
    avail = UnslothBackend().check(BackendEnv("unsloth"))
    assert not avail.ok and "jessy env create unsloth" in avail.reason


def test_cheap_check_is_cheap_and_imports_nothing_heavy():
    code = ("import sys, json, time; t=time.perf_counter()\n"
            "from jessy_adapters.envs import BackendEnv\n"
            "from jessy_unsloth.backend import UnslothBackend\n"
            "a = UnslothBackend().check(BackendEnv('unsloth'), True)\n"
            "print(json.dumps({'mods': sorted(m.split('.')[0] for m in sys.modules),"
            " 'reason': a.reason}))")
    out = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    assert not {"torch", "unsloth", "transformers"} & set(out["mods"])


def test_no_gpu_with_requirement_is_unavailable(tmp_path, monkeypatch):
    import jessy_unsloth.backend as mod

    monkeypatch.setattr(mod, "nvidia_gpu", lambda: None)
    env = BackendEnv("unsloth", tmp_path / "env")
    (tmp_path / "env" / "bin").mkdir(parents=True)
    (tmp_path / "env" / "bin" / "python").touch()
    (tmp_path / "env" / ".jessy-env.json").write_text("{}")
    assert UnslothBackend().check(env, False).reason == "runs on CPU (slow); GPU not found"
    refused = UnslothBackend().check(env, True)
    assert not refused.ok and "no NVIDIA GPU" in refused.reason


# --- real runs (need `jessy env create unsloth`) ------------------------------------------

@pytest.fixture(scope="module")
def unsloth_env():
    return require_env("unsloth")


def spec_for(tmp_path, model, data, steps=4):
    return tiny_spec(tmp_path, model, data, "unsloth-test", {"max_steps": steps})


def test_unsloth_trains_on_cpu_for_real(tmp_path, tiny_model, toy_data, unsloth_env):
    import jsonschema
    import numpy as np

    from jessy_adapters.spec import load_schema

    spec = spec_for(tmp_path, tiny_model, toy_data, steps=6)
    result = Runner(load_registry(), console=lambda m: print(m, file=sys.stderr)).run(
        spec, ["unsloth"], tmp_path / "runs")
    m = result.manifest
    assert m["status"] == "succeeded", m["failure"]
    jsonschema.validate(m, load_schema("run-manifest"))
    assert m["attempts"][0]["runtime"]["device"] == "cpu"
    events = [json.loads(x) for x in (result.path / "metrics.jsonl").open()]
    losses = [e["loss"] for e in events if e.get("loss") is not None]
    assert len(losses) == 6 and losses[-1] < losses[0]
    from test_mlx_backend import peft_logits

    plain, lora = peft_logits(tiny_model, str(result.path / "adapter"), list(range(1, 12)))
    assert np.abs(lora - plain).max() > 1e-3


def test_runtime_refusal_is_unavailable_and_falls_back_to_mlx(tmp_path, tiny_model, toy_data,
                                                              unsloth_env, mlx_env, monkeypatch):
    """Unsloth itself refuses (UNSLOTH_DISABLE_CPU_FALLBACK=1); jessy classifies and falls back.

    The cheap check is bypassed here on purpose, to prove the late path works too.
    """
    import jessy_unsloth.backend as mod
    from jessy_adapters.backend import Availability

    if mod.nvidia_gpu():
        pytest.skip("a GPU is present: Unsloth would not refuse")
    monkeypatch.setattr(mod.UnslothBackend, "check",
                        lambda self, env, req=False: Availability(True, "forced", "cpu"))
    monkeypatch.setenv("UNSLOTH_DISABLE_CPU_FALLBACK", "1")
    spec = spec_for(tmp_path, tiny_model, toy_data)
    result = Runner(load_registry(), console=lambda m: None).run(
        spec, ["unsloth", "mlx"], tmp_path / "runs")
    m = result.manifest
    assert m["attempts"][0]["failure"]["kind"] == "unavailable", m["attempts"][0]
    assert "accelerator" in m["attempts"][0]["failure"]["reason"]
    assert (result.path / "attempts" / "01-unsloth" / "stderr.log").read_text()
    assert m["winner"] == "mlx" and m["status"] == "succeeded"
    assert (result.path / "adapter" / "adapter_model.safetensors").exists()


def test_cli_headline_falls_back_when_unsloth_env_is_missing(tmp_path, tiny_model, toy_data,
                                                             mlx_env):
    """`jessy run --backend unsloth SPEC` with no Unsloth environment trains on MLX."""
    home = tmp_path / "home"
    (home / "envs").mkdir(parents=True)
    (home / "envs" / "mlx").symlink_to(mlx_env.root)
    spec = spec_for(tmp_path, tiny_model, toy_data)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "jessy_adapters.cli", "run", "--backend",
                           "unsloth", str(spec.source), "--output", str(tmp_path / "runs")],
                          capture_output=True, text=True,
                          env={**os.environ, "JESSY_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    m = json.loads((run_dir / "run.json").read_text())
    assert m["plan"] == ["unsloth", "mlx"]
    assert m["attempts"][0]["status"] == "skipped"
    assert m["attempts"][0]["failure"]["kind"] == "unavailable"
    assert m["winner"] == "mlx" and m["adapter"]["backend"] == "mlx"
    assert "falling back to mlx" in proc.stderr
    print(f"fallback run took {time.monotonic() - start:.1f} s")


def test_killed_mid_run_falls_back_and_keeps_the_log(tmp_path, tiny_model, toy_data,
                                                     unsloth_env, mlx_env):
    """SIGKILL the Unsloth process after its first step: crashed, logs kept, MLX finishes."""

    spec = spec_for(tmp_path, tiny_model, toy_data, steps=30)
    runner = Runner(load_registry(), console=lambda m: None)
    run, killed = run_and_kill_backend(
        runner, lambda: runner.run(spec, ["unsloth", "mlx"], tmp_path / "runs"),
        lambda: any('"backend": "unsloth"' in metrics.read_text()
                    for metrics in (tmp_path / "runs").glob("*/metrics.jsonl")))
    assert killed
    m = run.manifest
    first = m["attempts"][0]
    assert first["failure"]["kind"] == "crashed" and "SIGKILL" in first["failure"]["reason"]
    assert (run.path / "attempts" / "01-unsloth" / "stdout.log").read_text()
    assert m["winner"] == "mlx" and m["status"] == "succeeded"


def test_gemma2_on_cpu_gets_eager_attention(tmp_path, toy_data, monkeypatch):
    import jessy_unsloth.backend as mod

    monkeypatch.setattr(mod, "nvidia_gpu", lambda: None)
    model = tmp_path / "gemma"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "gemma2"}))
    spec = load_spec(write_spec(tmp_path / "g.yaml", f"""\
model:
  name_or_path: {model}
data:
  train: {toy_data}
  validation_split: 0.25
"""))
    data = prepare(spec, tmp_path / "gdata")
    out = UnslothBackend().translate(spec, RunInputs(str(model), data), tmp_path / "ga",
                                     BackendEnv("unsloth", tmp_path / "env"))
    cfg = json.loads(out.files["unsloth_config.json"])
    assert cfg["from_pretrained"]["attn_implementation"] == "eager"
    assert any("soft-capping" in n for n in out.notes)


def test_trl_accepts_the_sft_config(tmp_path, toy_data, unsloth_env):
    """The `sft` section is valid for the installed trl.SFTConfig (its own validation)."""
    cfg, _ = translate(tmp_path, toy_data, "training:\n  max_steps: 3\n  save_steps: 2\n")
    code = ("import json, sys\nfrom trl import SFTConfig\n"
            "c = SFTConfig(**json.loads(sys.argv[1]))\n"
            "print(json.dumps([c.max_steps, c.save_strategy, c.lr_scheduler_type]))")
    out = subprocess.run([str(unsloth_env.python), "-c", code, json.dumps(cfg["sft"])],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [3, "steps", "linear"]
    bad = dict(cfg["sft"], lr_scheduler_type="cosin")
    out = subprocess.run([str(unsloth_env.python), "-c", code, json.dumps(bad)],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "cosin" in out.stderr
