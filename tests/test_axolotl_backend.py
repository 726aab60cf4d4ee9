"""Axolotl: translation semantics, Axolotl's own validator, real CPU runs (one and two ranks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import require_env, write_spec

from jessy_adapters.backend import RunInputs, TranslationRefused
from jessy_adapters.data import prepare
from jessy_adapters.envs import BackendEnv
from jessy_adapters.plugins import load_registry
from jessy_adapters.run.runner import Runner
from jessy_adapters.spec import load_spec
from jessy_axolotl import translate as ax_translate
from jessy_axolotl.backend import RUNTIME, AxolotlBackend

HERE = Path(ax_translate.__file__).resolve().parent


def _model(tmp_path, marker: str, arch: str = "LlamaForCausalLM") -> Path:
    d = tmp_path / f"model-{arch}"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps({"num_hidden_layers": 2, "architectures": [arch]}))
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": marker}))
    return d


@pytest.fixture
def chatml_model(tmp_path):
    return _model(tmp_path, "{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}")


def translate(tmp_path, model, data, extra="", on_gpu=None, monkeypatch=None):
    spec = load_spec(write_spec(tmp_path / "s.yaml", f"""\
model:
  name_or_path: {model}
data:
  train: {data}
  validation_split: 0.25
  system_prompt: You are Jessy.
{extra}"""))
    prepared = prepare(spec, tmp_path / "data")
    if on_gpu is not None:
        monkeypatch.setattr("jessy_axolotl.backend.nvidia_gpu", lambda: "A100" if on_gpu else None)
    out = AxolotlBackend().translate(spec, RunInputs(str(model), prepared), tmp_path / "a",
                                     BackendEnv("axolotl", tmp_path / "env"))
    return yaml.safe_load(out.files["axolotl.yaml"]), out


def test_meaning_is_converted_for_the_cpu(tmp_path, chatml_model, toy_data):
    cfg, out = translate(tmp_path, chatml_model, toy_data, """\
lora:
  r: 16
  alpha: 32
  target_modules: [q_proj, v_proj]
  layers: [1, 0]
training:
  gradient_checkpointing: false
  optimizer: adamw_8bit
""")
    assert (cfg["lora_r"], cfg["lora_alpha"]) == (16, 32)
    assert cfg["lora_target_modules"] == ["q_proj", "v_proj"] and "lora_target_linear" not in cfg
    assert cfg["peft_layers_to_transform"] == [0, 1]
    assert cfg["train_on_inputs"] is False and cfg["gradient_checkpointing"] is False
    # CPU: precision written out (auto would turn fp16 on), Triton kernels off
    assert cfg["bf16"] is False and cfg["fp16"] is False
    assert all(cfg[k] is False for k in ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel",
                                         "lora_embedding_kernel"))
    assert cfg["optimizer"] == "adamw_torch" and any("adamw_8bit" in n for n in out.notes)
    assert cfg["plugins"] == ["jessy_axolotl_plugin.JessyPlugin"]
    assert out.env["AXOLOTL_DO_NOT_TRACK"] == "1" and out.env["PYTHONPATH"] == str(RUNTIME)
    assert out.command[-2:] == ["--launcher", "python"]


def test_single_turn_rows_use_the_models_chat_format(tmp_path, chatml_model, toy_data):
    cfg, out = translate(tmp_path, chatml_model, toy_data)
    block = cfg["datasets"][0]
    assert block["type"]["format"] == "<|im_start|>user\n{instruction}<|im_end|>\n" \
                                      "<|im_start|>assistant\n"
    assert block["type"]["system_format"] == "<|im_start|>system\n{system}<|im_end|>\n"
    rows = [json.loads(x) for x in out.files["data/axolotl_train.jsonl"].splitlines()]
    assert rows[0]["system"] == "You are Jessy." and rows[0]["output"].endswith("<|im_end|>")
    assert cfg["test_datasets"][0]["path"].endswith("axolotl_valid.jsonl")


def test_rows_without_a_system_turn_get_the_tokenizers_default(tmp_path, toy_data):
    """SmolLM2's template adds its own system prompt to rows without one; MLX and Unsloth
    (tokenizer-rendered) train on it, so Axolotl's format-string rows carry it too."""
    smol = _model(tmp_path, "{% if loop.first and messages[0]['role'] != 'system' %}"
                            "{{ '<|im_start|>system\nYou are SmolLM<|im_end|>\n' }}{% endif %}")
    spec = load_spec(write_spec(tmp_path / "s.yaml", f"""\
model:
  name_or_path: {smol}
data:
  train: {toy_data}
"""))
    prepared = prepare(spec, tmp_path / "data")
    out = AxolotlBackend().translate(spec, RunInputs(str(smol), prepared), tmp_path / "b",
                                     BackendEnv("axolotl", tmp_path / "env"))
    row = json.loads(out.files["data/axolotl_train.jsonl"].splitlines()[0])
    assert row["system"] == "You are SmolLM"
    named = load_spec(write_spec(tmp_path / "n.yaml", f"""\
model:
  name_or_path: {smol}
  chat_template: chatml
data:
  train: {toy_data}
"""))
    out = AxolotlBackend().translate(named, RunInputs(str(smol), prepared), tmp_path / "c",
                                     BackendEnv("axolotl", tmp_path / "env"))
    row = json.loads(out.files["data/axolotl_train.jsonl"].splitlines()[0])
    assert row["system"] == ""  # jessy's own ChatML adds nothing


def test_gemma_folds_the_system_prompt_into_the_user_turn(tmp_path, toy_data):
    gemma = _model(tmp_path, "<start_of_turn>user", "Gemma2ForCausalLM")
    cfg, out = translate(tmp_path, gemma, toy_data)
    row = json.loads(out.files["data/axolotl_train.jsonl"].splitlines()[0])
    assert row["system"] == "" and row["instruction"].startswith("You are Jessy.\n\n")
    assert row["output"].endswith("<end_of_turn>")
    assert cfg["datasets"][0]["type"]["format"].startswith("<start_of_turn>user\n")
    assert cfg["attn_implementation"] == "eager"  # SDPA ignores Gemma-2's soft-capping


def test_multi_turn_rows_use_axolotls_chat_template_type(tmp_path, chatml_model):
    data = tmp_path / "chat.jsonl"
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
             {"role": "user", "content": "name?"}, {"role": "assistant", "content": "Jessy"}]
    data.write_text("".join(json.dumps({"messages": turns}) + "\n" for _ in range(8)))
    spec = load_spec(write_spec(tmp_path / "s.yaml", f"""\
model:
  name_or_path: {chatml_model}
data:
  train: {data}
  format: messages
"""))
    prepared = prepare(spec, tmp_path / "data")
    out = AxolotlBackend().translate(spec, RunInputs(str(chatml_model), prepared), tmp_path / "b",
                                     BackendEnv("axolotl", tmp_path / "env"))
    block = yaml.safe_load(out.files["axolotl.yaml"])["datasets"][0]
    assert block["type"] == "chat_template" and block["roles_to_train"] == ["assistant"]
    assert "data/axolotl_train.jsonl" not in out.files


def test_qlora_full_and_precision(tmp_path, chatml_model, toy_data):
    cfg, _ = translate(tmp_path, chatml_model, toy_data, "method: qlora\n")
    assert cfg["adapter"] == "qlora" and cfg["load_in_4bit"] is True
    cfg, _ = translate(tmp_path, chatml_model, toy_data, "method: full\n")
    assert "adapter" not in cfg and "lora_r" not in cfg  # Axolotl's full fine-tune
    with pytest.raises(TranslationRefused, match="/training/precision"):
        translate(tmp_path, chatml_model, toy_data, "training:\n  precision: bf16\n")


def test_two_cpu_processes_run_through_torchrun_as_data_parallel(tmp_path, chatml_model,
                                                                 toy_data):
    cfg, out = translate(tmp_path, chatml_model, toy_data, "resources:\n  gpus_per_node: 2\n")
    assert out.command[-7:] == ["--launcher", "torchrun", "--", "--nproc_per_node", "2",
                                "--nnodes", "1"]
    assert out.env["ACCELERATE_USE_CPU"] == "true"  # else each rank trains alone
    from jessy_adapters.devices import usable_cores

    assert out.env["OMP_NUM_THREADS"] == str(max(1, usable_cores() // 2))  # cores shared
    assert cfg["max_memory"] == {"cpu": "1024GiB"}  # else rank 1 asks for device 1


def test_fsdp2_and_deepspeed_configs(tmp_path, chatml_model, toy_data, monkeypatch):
    cfg, out = translate(tmp_path, chatml_model, toy_data, """\
resources:
  gpus_per_node: 8
  strategy: fsdp2
  offload: optimizer_and_params
""", on_gpu=True, monkeypatch=monkeypatch)
    assert cfg["fsdp_version"] == 2
    assert cfg["fsdp_config"]["transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    assert cfg["fsdp_config"]["offload_params"] is True
    assert cfg["bf16"] is True and "max_memory" not in cfg and "ACCELERATE_USE_CPU" not in out.env

    cfg, out = translate(tmp_path, chatml_model, toy_data, """\
resources:
  gpus_per_node: 4
  strategy: deepspeed
  zero_stage: 3
  offload: optimizer_and_params
""", on_gpu=True, monkeypatch=monkeypatch)
    ds = json.loads(out.files["deepspeed.json"])
    assert cfg["deepspeed"] == str(tmp_path / "a" / "deepspeed.json")
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert ds["train_micro_batch_size_per_gpu"] == "auto"

    with pytest.raises(TranslationRefused, match="/resources/offload"):
        translate(tmp_path, chatml_model, toy_data, "resources:\n  strategy: deepspeed\n"
                  "  offload: optimizer_and_params\n", on_gpu=True, monkeypatch=monkeypatch)
    with pytest.raises(TranslationRefused, match="/resources/strategy.*CUDA"):
        translate(tmp_path, chatml_model, toy_data, "resources:\n  strategy: deepspeed\n",
                  on_gpu=False, monkeypatch=monkeypatch)


def test_several_nodes_need_the_rendezvous_from_the_environment(tmp_path, chatml_model,
                                                                toy_data, monkeypatch):
    monkeypatch.delenv("JESSY_MASTER_ADDR", raising=False)
    with pytest.raises(TranslationRefused, match="JESSY_MASTER_ADDR"):
        translate(tmp_path, chatml_model, toy_data, "resources:\n  nodes: 2\n")
    monkeypatch.setenv("JESSY_MASTER_ADDR", "10.0.0.1")
    monkeypatch.setenv("JESSY_NODE_RANK", "1")
    _, out = translate(tmp_path, chatml_model, toy_data, "resources:\n  nodes: 2\n")
    tail = out.command[out.command.index("--"):]
    assert tail == ["--", "--nproc_per_node", "1", "--nnodes", "2", "--node_rank", "1",
                    "--master_addr", "10.0.0.1", "--master_port", "29500"]


def test_single_process_backends_refuse_scale_out(tmp_path, chatml_model, toy_data):
    from jessy_llamafactory.backend import LlamaFactoryBackend

    spec = load_spec(write_spec(tmp_path / "s.yaml", f"""\
model:
  name_or_path: {chatml_model}
data:
  train: {toy_data}
resources:
  gpus_per_node: 2
"""))
    prepared = prepare(spec, tmp_path / "data")
    with pytest.raises(TranslationRefused, match="/resources/gpus_per_node"):
        LlamaFactoryBackend().translate(spec, RunInputs(str(chatml_model), prepared),
                                        tmp_path / "a", BackendEnv("llamafactory", tmp_path))


# --- with the real Axolotl --------------------------------------------------------------------

@pytest.fixture(scope="module")
def ax_env():
    return require_env("axolotl")


def validate(env, paths: list[Path], gpus: int = 0) -> list[dict]:
    """Axolotl's own validate_config, many configs in one process (its import costs ~30 s)."""
    argv = [str(env.python), str(HERE / "validate_configs.py")]
    if gpus:
        argv += ["--gpu", str(gpus)]
    proc = subprocess.run(argv + [str(p) for p in paths], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(RUNTIME),
                               "JESSY_RUNTIME_PATH": str(HERE.parent.parent / "jessy_adapters"
                                                         / "runtime"),
                               "AXOLOTL_DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]


def test_axolotls_own_validator_accepts_every_translation(tmp_path, ax_env, tiny_model,
                                                          toy_data, monkeypatch):
    variants = {"lora": "", "qlora": "method: qlora\n",
                "layers": "lora:\n  layers: [1]\n  target_modules: [q_proj, v_proj]\n",
                "ddp2": "resources:\n  gpus_per_node: 2\n"}
    gpu_variants = {"fsdp2": "resources:\n  gpus_per_node: 8\n  strategy: fsdp2\n",
                    "zero3": "resources:\n  gpus_per_node: 8\n  strategy: deepspeed\n"
                             "  zero_stage: 3\n  offload: optimizer_and_params\n"}
    paths, gpu_paths = [], []
    for group, out_list, on_gpu in ((variants, paths, False), (gpu_variants, gpu_paths, True)):
        for name, extra in group.items():
            d = tmp_path / name
            d.mkdir()
            cfg, out = translate(d, tiny_model, toy_data, extra, on_gpu=on_gpu,
                                 monkeypatch=monkeypatch)
            for rel, text in out.files.items():
                (d / "a" / rel).parent.mkdir(parents=True, exist_ok=True)
                (d / "a" / rel).write_text(text)
            out_list.append(d / "a" / "axolotl.yaml")
    # what jessy's schema exists for: Axolotl drops unknown keys and takes lr = -1
    bad = yaml.safe_load(paths[0].read_text())
    bad.update(learning_rate=-1, lora_rnak=8)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    results = validate(ax_env, paths + [tmp_path / "bad.yaml"])
    for r in results[:-1]:
        assert r["ok"] and r["dropped"] == [], r
    assert results[-1]["ok"] and results[-1]["dropped"] == ["lora_rnak"]
    for r in validate(ax_env, gpu_paths, gpus=8):
        assert r["ok"] and r["dropped"] == [], r


def _run(tmp_path, spec_path):
    return Runner(load_registry(), console=lambda m: print(m, file=sys.stderr)).run(
        load_spec(spec_path), ["axolotl"], tmp_path / "runs")


def test_two_ranks_train_data_parallel_for_real(tmp_path, ax_env, tiny_model, toy_data):
    """2 CPU processes (gloo) through torchrun: each rank's loss is streamed, the logged loss
    is their mean, and an epoch takes half the steps (the data is sharded)."""
    spec = write_spec(tmp_path / "ddp.yaml", f"""\
name: ddp
model: {{name_or_path: {tiny_model}, max_seq_length: 128}}
data: {{train: {toy_data}, validation_split: 0.25, system_prompt: You are Jessy.}}
lora: {{r: 4, alpha: 8}}
training: {{epochs: 2, batch_size: 4, learning_rate: 0.01, logging_steps: 1,
           lr_scheduler: constant}}
resources: {{gpus_per_node: 2}}
""")
    run = _run(tmp_path, spec)
    assert run.manifest["status"] == "succeeded", run.manifest["failure"]
    events = [json.loads(x) for x in (run.path / "metrics.jsonl").open()]
    train = [e for e in events if e["type"] == "train"]
    n_train = run.manifest["data"]["n_train"]
    assert len(train) == 2 * -(-n_train // 8)  # 2 epochs of ceil(rows / (4 x 2 ranks))
    for e in train:
        assert e["world_size"] == 2 and len(e["rank_losses"]) == 2
        assert abs(e["loss"] - sum(e["rank_losses"]) / 2) < 1e-3 * e["loss"]
    assert any(abs(a - b) > 1e-4 for a, b in (e["rank_losses"] for e in train))
    assert (run.path / "adapter" / "adapter_model.safetensors").is_file()

    # the prepared dataset: prompt tokens masked, labels are exactly the response + <|im_end|>
    prepared = sorted((run.path / "attempts" / "01-axolotl" / "prepared").glob("*/state.json"))
    code = ("import sys, json; from datasets import load_from_disk; "
            "from transformers import AutoTokenizer; "
            "t = AutoTokenizer.from_pretrained(sys.argv[1]); "
            "rows = [r for p in sys.argv[2:] for r in load_from_disk(p)]; "
            "print(json.dumps([[t.decode(r['input_ids']), "
            "t.decode([i for i, l in zip(r['input_ids'], r['labels']) if l != -100])] "
            "for r in rows]))")
    proc = subprocess.run([str(ax_env.python), "-c", code, tiny_model,
                           *[str(p.parent) for p in prepared]], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pairs = json.loads(proc.stdout.splitlines()[-1])
    facts = {json.loads(x)["response"] for x in toy_data.open()}
    for text, labelled in pairs:
        assert text.startswith("<|im_start|>system\nYou are Jessy.<|im_end|>\n<|im_start|>user\n")
        assert labelled.endswith("<|im_end|>") and labelled[:-len("<|im_end|>")] in facts



def test_out_of_memory_is_classified_and_falls_back_for_real(tmp_path, ax_env, tiny_model):
    """`jessy run --max-memory 3`: a batch of 32 rows of ~900 tokens needs ~6 GB for the logits
    alone, so Axolotl's first forward pass fails in torch's allocator: out_of_memory, with its
    log kept, and the plan moves on to the next backend."""
    require_env("mlx")
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say hello {i}.",
                                        "response": " ".join(["hello"] * 900)}) + "\n"
                            for i in range(40)))
    spec = write_spec(tmp_path / "oom.yaml", f"""\
name: oom
model: {{name_or_path: {tiny_model}, max_seq_length: 1024}}
data: {{train: {data}, validation_split: 0}}
lora: {{r: 4, alpha: 8}}
training: {{max_steps: 2, batch_size: 32, learning_rate: 0.01, logging_steps: 1}}
""")
    proc = subprocess.run([sys.executable, "-m", "jessy_adapters.cli", "run", "--backend",
                           "axolotl", "--fallback", "mlx", "--max-memory", "3", str(spec),
                           "--output", str(tmp_path / "runs"), "--json"],
                          capture_output=True, text=True, timeout=600)
    manifest = json.loads(proc.stdout[:proc.stdout.rindex("}") + 1])
    first = manifest["attempts"][0]
    assert first["failure"]["kind"] == "out_of_memory", first["failure"]
    assert "can't allocate memory" in first["failure"]["reason"]
    assert first["memory_limit_gb"] == 3.0
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    assert "DefaultCPUAllocator" in (run_dir / first["dir"] / "stderr.log").read_text()
    assert [a["backend"] for a in manifest["attempts"]] == ["axolotl", "mlx"]  # fell back
