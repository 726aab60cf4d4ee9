"""LLaMA-Factory: translation semantics, its own parser accepts our YAML, real CPU runs."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from conftest import require_env, write_spec

from jessy_adapters.backend import RunInputs, TranslationRefused
from jessy_adapters.data import prepare
from jessy_adapters.envs import BackendEnv
from jessy_adapters.spec import load_spec
from jessy_llamafactory.backend import LlamaFactoryBackend


@pytest.fixture
def chatml_model(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"num_hidden_layers": 2}))
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}"}))
    return d


def translate(tmp_path, model, toy_data, extra=""):
    spec = load_spec(write_spec(tmp_path / "s.yaml", f"""\
model:
  name_or_path: {model}
data:
  train: {toy_data}
  validation_split: 0.25
  system_prompt: You are Jessy.
{extra}"""))
    data = prepare(spec, tmp_path / "data")
    out = LlamaFactoryBackend().translate(spec, RunInputs(str(model), data), tmp_path / "a",
                                          BackendEnv("llamafactory", tmp_path / "env"))
    return yaml.safe_load(out.files["llamafactory.yaml"]), out


def test_meaning_is_converted(tmp_path, chatml_model, toy_data):
    cfg, out = translate(tmp_path, chatml_model, toy_data, """\
lora:
  r: 16
  alpha: 32
  target_modules: [q_proj, v_proj]
training:
  gradient_checkpointing: false
""")
    assert (cfg["lora_rank"], cfg["lora_alpha"]) == (16, 32)
    assert cfg["lora_target"] == "q_proj,v_proj"
    assert cfg["disable_gradient_checkpointing"] is True  # gradient_checkpointing: false is ignored
    assert cfg["train_on_prompt"] is False
    assert cfg["template"] == "chatml"  # plain ChatML; the tokenizer's default system below
    assert "default_system" not in cfg  # this tokenizer's template adds none
    assert cfg["overwrite_output_dir"] is False and cfg["report_to"] == "none"
    assert cfg["include_num_input_tokens_seen"] is True
    info = json.loads(out.files["data/dataset_info.json"])
    assert info["jessy_train"]["formatting"] == "sharegpt"
    assert info["jessy_train"]["tags"]["system_tag"] == "system"
    assert cfg["eval_dataset"] == "jessy_valid"


def test_default_system_prompt_of_the_tokenizer_is_kept(tmp_path, toy_data):
    """SmolLM2's template adds its own system prompt to rows without one; MLX and Unsloth train
    on it (tokenizer-rendered), so LLaMA-Factory's chatml gets it as default_system."""
    d = tmp_path / "smol"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"num_hidden_layers": 2}))
    (d / "chat_template.jinja").write_text(
        "{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are SmolLM<|im_end|>\n' }}{% endif %}")
    spec = load_spec(write_spec(tmp_path / "s.yaml", f"model:\n  name_or_path: {d}\n"
                                                      f"data:\n  train: {toy_data}\n"))
    data = prepare(spec, tmp_path / "data")
    out = LlamaFactoryBackend().translate(spec, RunInputs(str(d), data), tmp_path / "a",
                                          BackendEnv("llamafactory", tmp_path / "env"))
    cfg = yaml.safe_load(out.files["llamafactory.yaml"])
    assert cfg["template"] == "chatml" and cfg["default_system"] == "You are SmolLM"


def test_qlora_and_refusals(tmp_path, chatml_model, toy_data):
    cfg, _ = translate(tmp_path, chatml_model, toy_data, "method: qlora\n")
    assert cfg["quantization_bit"] == 4
    with pytest.raises(TranslationRefused, match="/lora/layers"):
        translate(tmp_path, chatml_model, toy_data, "lora:\n  layers: [1]\n")
    cfg, _ = translate(tmp_path, chatml_model, toy_data, "method: full\n")
    assert cfg["finetuning_type"] == "full" and "lora_rank" not in cfg


@pytest.fixture(scope="module")
def lf_env():
    return require_env("llamafactory")


def test_llamafactorys_own_parser_accepts_the_translation(tmp_path, chatml_model, toy_data,
                                                          lf_env, tiny_model):
    """get_train_args with argv-style values: type and choice checks, unknown keys refused."""
    cfg, _ = translate(tmp_path, tiny_model, toy_data, "training:\n  max_steps: 2\n")
    argv = []
    for key, value in cfg.items():
        argv += [f"--{key}", str(value)]
    code = ("import sys, json\nfrom llamafactory.hparams import get_train_args\n"
            "get_train_args(json.loads(sys.argv[1]))\nprint('ok')")
    proc = subprocess.run([str(lf_env.python), "-c", code, json.dumps(cfg)],
                          capture_output=True, text=True, env={"DISABLE_VERSION_CHECK": "1",
                                                               "HF_HUB_OFFLINE": "1",
                                                               "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
    bad = dict(cfg, lora_rnk=8)
    proc = subprocess.run([str(lf_env.python), "-c", code, json.dumps(bad)],
                          capture_output=True, text=True, env={"DISABLE_VERSION_CHECK": "1",
                                                               "HF_HUB_OFFLINE": "1",
                                                               "PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0 and "lora_rnk" in proc.stderr


@pytest.mark.parametrize("backend", ["llamafactory", "unsloth", "axolotl"])
def test_qlora_trains_on_cpu_with_bitsandbytes(backend, tmp_path, tiny_model, toy_data):
    """method: qlora -> a 4-bit base (bitsandbytes CPU) under a PEFT adapter, for real."""
    import sys

    from jessy_adapters.contract import peft_output_change
    from jessy_adapters.plugins import load_registry
    from jessy_adapters.run.runner import Runner

    require_env(backend)
    spec = load_spec(write_spec(tmp_path / "q.yaml", f"""\
name: qlora-test
model:
  name_or_path: {tiny_model}
  max_seq_length: 128
data:
  train: {toy_data}
  validation_split: 0.25
method: qlora
lora:
  r: 4
  alpha: 8
training:
  max_steps: 6
  batch_size: 4
  learning_rate: 0.01
  logging_steps: 1
  lr_scheduler: constant
"""))
    run = Runner(load_registry(), console=lambda m: print(m, file=sys.stderr)).run(
        spec, [backend], tmp_path / "runs")
    assert run.manifest["status"] == "succeeded", run.manifest["failure"]
    config = (run.path / "attempts" / f"01-{backend}").glob("*.*")
    text = "".join(p.read_text() for p in config if p.suffix in (".yaml", ".json"))
    assert ("quantization_bit: 4" in text or '"load_in_4bit": true' in text
            or "load_in_4bit: true" in text)
    losses = [json.loads(x)["loss"] for x in (run.path / "metrics.jsonl").open()
              if '"loss"' in x and json.loads(x).get("loss") is not None]
    assert len(losses) == 6
    assert peft_output_change(tiny_model, run.path / "adapter") > 1e-4
