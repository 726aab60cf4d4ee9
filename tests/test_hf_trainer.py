"""The plugin toolkit for backends built on transformers' Trainer (toolkit.hf_trainer,
toolkit.checkpoints): one normalise of the Trainer's output folder, one block of
Trainer arguments, checkpoints found where the plugin says. Fake folders, no backend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jessy_adapters import RunInputs
from jessy_adapters.plugins import load_registry
from jessy_adapters.toolkit.adapters import write_safetensors
from jessy_adapters.toolkit.checkpoints import hf_checkpoint_as_peft, hf_resume
from jessy_adapters.toolkit.hf_trainer import SCHEDULERS, HFTrainerBackend, training_arguments

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "jessy-backend-peft"


def example_backend(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from jessy_peft_example.backend import PeftExampleBackend

    return PeftExampleBackend


def trainer_output(attempt: Path, adapter: str, model: str) -> None:
    """What a Trainer script leaves: a PEFT adapter and a whole model, where it saves them."""
    (attempt / adapter).mkdir(parents=True, exist_ok=True)
    write_safetensors({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight":
                       np.zeros((2, 4), "f4")}, attempt / adapter / "adapter_model.safetensors")
    (attempt / adapter / "adapter_config.json").write_text(json.dumps(
        {"r": 2, "lora_alpha": 4, "target_modules": ["v_proj", "q_proj"],
         "base_model_name_or_path": "where the backend trained"}))
    (attempt / model).mkdir(parents=True, exist_ok=True)
    write_safetensors({"model.norm.weight": np.ones(4, "f4")},
                      attempt / model / "model.safetensors")
    (attempt / model / "config.json").write_text('{"model_type": "llama"}')


@pytest.mark.parametrize("name, adapter, model", [
    ("unsloth", "output/adapter", "output/model"),
    ("llamafactory", "output", "output"),
    ("axolotl", "output", "output"),
    ("peft-example", "output/adapter", "output/model"),
])
def test_each_hf_backend_normalises_its_trainer_output(tmp_path, monkeypatch, name, adapter,
                                                       model):
    impl = (example_backend(monkeypatch)() if name == "peft-example"
            else load_registry().get(name))
    assert isinstance(impl, HFTrainerBackend)
    base = tmp_path / "base"
    base.mkdir()
    (base / "tokenizer.json").write_text("{}")
    trainer_output(tmp_path / "attempt", adapter, model)
    inputs = RunInputs(str(base), data=None)

    info = impl.normalise(tmp_path / "attempt", {"method": "lora"}, inputs, tmp_path / "adapter")
    assert info == {"format": "peft", "r": 2, "lora_alpha": 4,
                    "target_modules": ["q_proj", "v_proj"]}
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base)

    info = impl.normalise(tmp_path / "attempt", {"method": "full"}, inputs, tmp_path / "model")
    assert info["format"] == "hf" and info["parameters"] == 4
    assert info["files"] == ["config.json", "model.safetensors", "tokenizer.json"]


def test_a_trainer_that_writes_elsewhere_says_so_and_the_toolkit_looks_there(tmp_path):
    class Elsewhere(HFTrainerBackend):
        name = "elsewhere"
        output_dir = "trainer/out"
        saved_adapter = "final"

        def translate(self, spec, inputs, attempt_dir, env): ...

    attempt = tmp_path / "attempt"
    checkpoint = attempt / "trainer" / "out" / "checkpoint-6"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    (checkpoint / "adapter_model.safetensors").write_bytes(b"")
    trainer_output(attempt, "trainer/out/final", "trainer/out")

    assert Elsewhere().checkpoint_as_peft(attempt, tmp_path / "peft") == checkpoint
    assert hf_checkpoint_as_peft(attempt) is None  # not in the built-ins' output/
    refusals, notes = [], []
    assert hf_resume(attempt, refusals, notes, "trainer/out") == str(checkpoint)
    assert refusals == [] and notes[0].startswith("resuming from checkpoint-6")
    assert hf_resume(attempt, refusals, notes) is None
    assert refusals[0].spec_path == "/training/save_steps"
    info = Elsewhere().normalise(attempt, {"method": "lora"}, RunInputs(str(tmp_path), None),
                                 tmp_path / "adapter")
    assert info["format"] == "peft"


def test_training_arguments_in_the_trainer_s_names_or_the_backend_s():
    t = {"batch_size": 2, "gradient_accumulation_steps": 4, "learning_rate": 1e-4,
         "lr_scheduler": "constant", "weight_decay": 0.0, "max_grad_norm": None, "seed": 7,
         "logging_steps": 5}
    assert training_arguments(t) == {
        "per_device_train_batch_size": 2, "gradient_accumulation_steps": 4,
        "learning_rate": 1e-4, "lr_scheduler_type": "constant_with_warmup",
        "weight_decay": 0.0, "max_grad_norm": 0.0, "seed": 7, "data_seed": 7,
        "logging_steps": 5}
    from jessy_axolotl.translate import NAMES

    axolotl = training_arguments({**t, "max_grad_norm": 1.0, "lr_scheduler": "cosine"}, NAMES)
    assert axolotl == {"micro_batch_size": 2, "gradient_accumulation_steps": 4,
                       "learning_rate": 1e-4, "lr_scheduler": "cosine", "weight_decay": 0.0,
                       "max_grad_norm": 1.0, "seed": 7, "logging_steps": 5}
    assert set(SCHEDULERS) == {"constant", "linear", "cosine"}


@pytest.mark.parametrize("backend", ["unsloth", "llamafactory", "axolotl"])
def test_flash_attention_on_a_cpu_is_refused_by_path(tmp_path, toy_data, backend):
    """FlashAttention-2 is a CUDA kernel: the HF Trainer backends would start and crash."""
    from jessy_adapters.backend import RunInputs, TranslationRefused
    from jessy_adapters.data import prepare
    from jessy_adapters.envs import BackendEnv
    from jessy_adapters.plugins import load_registry
    from jessy_adapters.spec import spec_from_dict

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"num_hidden_layers": 2, "model_type": "llama"}')
    spec = spec_from_dict({"model": {"name_or_path": str(model),
                                     "attn_implementation": "flash_attention_2"},
                           "data": {"train": str(toy_data)}}, tmp_path)
    inputs = RunInputs(str(model), prepare(spec, tmp_path / "prepared"))
    with pytest.raises(TranslationRefused) as err:
        load_registry().get(backend).translate(spec, inputs, tmp_path / backend,
                                               BackendEnv(backend))
    assert "/model/attn_implementation" in [r.spec_path for r in err.value.refusals]
