"""Spec -> mlx-lm translation: meaning converted, refusals explicit, mlx-lm accepts the keys."""

from __future__ import annotations

import json
import math
import subprocess

import pytest
import yaml
from conftest import SPEC_EXAMPLES, write_spec

from jessy_adapters.backend import RunInputs, TranslationRefused
from jessy_adapters.data import prepare
from jessy_adapters.envs import BackendEnv
from jessy_adapters.spec import load_spec
from jessy_mlx.backend import MLXBackend


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"num_hidden_layers": 30}))
    return d


def translate(tmp_path, model_dir, toy_data, extra=""):
    spec = load_spec(write_spec(tmp_path / "s.yaml", f"""\
model:
  name_or_path: {model_dir}
data:
  train: {toy_data}
  validation_split: 0.25
{extra}"""))
    data = prepare(spec, tmp_path / "data")
    out = MLXBackend().translate(spec, RunInputs(str(model_dir), data), tmp_path / "attempt",
                                 BackendEnv("mlx", tmp_path / "env"))
    return yaml.safe_load(out.files["mlx_lora.yaml"]), out, data


def test_alpha_becomes_scale(tmp_path, model_dir, toy_data):
    cfg, _, _ = translate(tmp_path, model_dir, toy_data, "lora:\n  r: 16\n  alpha: 32\n")
    assert cfg["lora_parameters"] == {"rank": 16, "scale": 2.0, "dropout": 0.0}


def test_rslora_scale_uses_sqrt_r(tmp_path, model_dir, toy_data):
    cfg, _, _ = translate(tmp_path, model_dir, toy_data,
                          "lora:\n  r: 16\n  alpha: 32\n  use_rslora: true\n")
    assert cfg["lora_parameters"]["scale"] == pytest.approx(32 / math.sqrt(16))


def test_all_layers_is_explicit_not_mlx_default_16(tmp_path, model_dir, toy_data):
    cfg, _, _ = translate(tmp_path, model_dir, toy_data)
    assert cfg["num_layers"] == -1


def test_a_tail_of_layers_maps_to_num_layers(tmp_path, model_dir, toy_data):
    cfg, _, _ = translate(tmp_path, model_dir, toy_data, "lora:\n  layers: [27, 28, 29]\n")
    assert cfg["num_layers"] == 3


def test_layers_mlx_cannot_express_are_refused(tmp_path, model_dir, toy_data):
    with pytest.raises(TranslationRefused) as err:
        translate(tmp_path, model_dir, toy_data, "lora:\n  layers: [0, 1]\n")
    assert err.value.refusals[0].spec_path == "/lora/layers"
    assert "last N of the 30 blocks" in err.value.refusals[0].reason


def test_target_modules_become_block_keys(tmp_path, model_dir, toy_data):
    cfg, _, _ = translate(tmp_path, model_dir, toy_data,
                          "lora:\n  target_modules: [q_proj, v_proj, down_proj]\n")
    assert cfg["lora_parameters"]["keys"] == ["self_attn.q_proj", "self_attn.v_proj",
                                              "mlp.down_proj"]
    cfg, _, _ = translate(tmp_path, model_dir, toy_data)
    assert "keys" not in cfg["lora_parameters"]  # all-linear = mlx's default set


def test_iters_count_micro_batches(tmp_path, model_dir, toy_data):
    cfg, out, data = translate(tmp_path, model_dir, toy_data,
                               "training:\n  max_steps: 7\n  gradient_accumulation_steps: 3\n"
                               "  logging_steps: 2\n  save_steps: 5\n")
    assert cfg["iters"] == 21 and cfg["grad_accumulation_steps"] == 3
    assert cfg["steps_per_report"] == 6 and cfg["save_every"] == 15
    assert out.total_steps == 7


def test_epochs_become_optimizer_steps(tmp_path, model_dir, toy_data):
    cfg, out, data = translate(tmp_path, model_dir, toy_data,
                               "training:\n  epochs: 3\n  batch_size: 4\n"
                               "  gradient_accumulation_steps: 2\n")
    per_epoch = math.ceil(data.n_train / 8)
    assert out.total_steps == 3 * per_epoch
    assert cfg["iters"] == 3 * per_epoch * 2


def test_mlx_gets_the_cores_lr_of_every_update(tmp_path, model_dir, toy_data):
    cfg, out, _ = translate(tmp_path, model_dir, toy_data,
                            "training:\n  max_steps: 50\n  warmup_steps: 10\n"
                            "  lr_scheduler: cosine\n  learning_rate: 0.001\n")
    table = cfg["jessy_lr_table"]
    assert len(table) == 50 and "lr_schedule" not in cfg
    assert table[0] == 0.0 and table[10] == pytest.approx(0.001)  # HF: warmup from 0
    assert table[1] == pytest.approx(0.0001)
    assert table[-1] == pytest.approx(0.001 * 0.5 * (1 + math.cos(math.pi * 39 / 40)))


def test_mlx_adam_corrects_its_bias_as_torch_does(tmp_path, model_dir, toy_data):
    cfg, _, _ = translate(tmp_path, model_dir, toy_data, "training:\n  weight_decay: 0.1\n")
    assert cfg["optimizer_config"] == {"adamw": {"betas": [0.9, 0.999], "eps": 1e-8,
                                                 "bias_correction": True,
                                                 "weight_decay": 0.1}}


def test_adamw_8bit_is_substituted_with_a_note(tmp_path, model_dir, toy_data):
    cfg, out, _ = translate(tmp_path, model_dir, toy_data,
                            "training:\n  optimizer: adamw_8bit\n  weight_decay: 0.01\n")
    assert cfg["optimizer"] == "adamw"
    assert cfg["optimizer_config"]["adamw"]["weight_decay"] == 0.01
    assert any("adamw_8bit" in n for n in out.notes)


def test_grad_clipping_is_carried(tmp_path, model_dir, toy_data):
    cfg, _, _ = translate(tmp_path, model_dir, toy_data, "training:\n  max_grad_norm: 0.3\n")
    assert cfg["jessy_max_grad_norm"] == 0.3
    cfg, _, _ = translate(tmp_path, model_dir, toy_data, "training:\n  max_grad_norm: null\n")
    assert "jessy_max_grad_norm" not in cfg


def test_qlora_quantises_and_full_trains_every_block(tmp_path, model_dir, toy_data):
    cfg, out, _ = translate(tmp_path, model_dir, toy_data, "method: qlora\n")
    assert cfg["jessy_quantize"] == {"bits": 4, "group_size": 64}
    cfg, out, _ = translate(tmp_path, model_dir, toy_data, "method: full\n")
    assert cfg["fine_tune_type"] == "full" and cfg["num_layers"] == -1
    assert any("embeddings" in n and "frozen" in n for n in out.notes)


def test_batches_larger_than_the_data_train_as_on_the_hf_backends(tmp_path, model_dir,
                                                                   toy_data):
    # jessy's batch iterator (train_entry.Batches) keeps partial batches, as the HF Trainer
    # does; mlx-lm's own refused data smaller than a batch and dropped the longest rows.
    cfg, out, data = translate(tmp_path, model_dir, toy_data,
                               "training:\n  batch_size: 64\n  epochs: 3\n")
    assert out.total_steps == 3 and cfg["iters"] == 3  # 3 epochs of one micro-batch


def test_chat_template_and_system_prompt(tmp_path, model_dir, toy_data):
    cfg, _, _ = translate(tmp_path, model_dir, toy_data)
    assert cfg["chat_feature"] == "messages" and cfg["mask_prompt"] is True
    assert "jessy_chat_template" not in cfg  # auto: the tokenizer's own
    spec = load_spec(write_spec(tmp_path / "t.yaml", f"""\
model:
  name_or_path: {model_dir}
  chat_template: chatml
data:
  train: {toy_data}
  validation_split: 0.25
  system_prompt: You are Jessy.
"""))
    data = prepare(spec, tmp_path / "d2")
    first = json.loads(data.train.read_text().splitlines()[0])
    assert first["messages"][0] == {"role": "system", "content": "You are Jessy."}
    out = MLXBackend().translate(spec, RunInputs(str(model_dir), data), tmp_path / "a2",
                                 BackendEnv("mlx", tmp_path / "env"))
    assert "<|im_start|>" in yaml.safe_load(out.files["mlx_lora.yaml"])["jessy_chat_template"]


@pytest.mark.parametrize("example", sorted(SPEC_EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_mlx_lm_knows_every_native_key(example, tmp_path, model_dir, mlx_env):
    """mlx-lm silently ignores unknown keys, so check ours against its own defaults/parser."""
    spec = load_spec(example)
    data = prepare(spec, tmp_path / "data")
    try:
        out = MLXBackend().translate(spec, RunInputs(str(model_dir), data), tmp_path, mlx_env)
    except TranslationRefused as exc:
        pytest.skip(f"refused by design: {exc}")
    cfg = yaml.safe_load(out.files["mlx_lora.yaml"])
    native = sorted(k for k in cfg if not k.startswith("jessy_"))
    code = (
        "import json,sys\nfrom mlx_lm import lora\n"
        "known=set(lora.CONFIG_DEFAULTS)|{a.dest for a in lora.build_parser()._actions}\n"
        "known|={'chat_feature','text_feature','prompt_feature','completion_feature'}\n"
        "print(json.dumps(sorted(set(json.loads(sys.argv[1]))-known)))")
    unknown = json.loads(subprocess.check_output([str(mlx_env.python), "-c", code,
                                                  json.dumps(native)], text=True))
    assert unknown == []
