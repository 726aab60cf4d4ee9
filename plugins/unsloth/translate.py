"""Spec -> the keyword arguments of Unsloth's Python API (the stable surface to drive).

The native config is JSON with one section per API call: `from_pretrained`
(FastLanguageModel.from_pretrained), `peft` (FastLanguageModel.get_peft_model), `sft`
(trl.SFTConfig) and `data`; train_entry.py passes each section through unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

from jessy_adapters.backend import Refusal, RunInputs
from jessy_adapters.schedule import run_schedule
from jessy_adapters.templates import (
    chat_family,
    family_refusal,
    template_summary,
    training_template,
)
from jessy_adapters.toolkit import hf_trainer
from jessy_adapters.toolkit.checkpoints import check_init_adapter, hf_resume
from jessy_adapters.toolkit.layers import adapted_layers
from jessy_adapters.toolkit.scaleout import single_process_only

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
FUSED_LINEAR = {"phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]}
"""Architectures whose projections are fused: "all-linear" names their own modules."""
MARKERS = {
    "chatml": ("<|im_start|>user\n", "<|im_start|>assistant\n"),
    "qwen2": ("<|im_start|>user\n", "<|im_start|>assistant\n"),
    "qwen3": ("<|im_start|>user\n", "<|im_start|>assistant\n<think>\n\n</think>\n\n"),
    "gemma": ("<start_of_turn>user\n", "<start_of_turn>model\n"),
    "gemma3": ("<start_of_turn>user\n", "<start_of_turn>model\n"),
    "llama3": ("<|start_header_id|>user<|end_header_id|>\n\n",
               "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "mistral": ("[INST]", "[/INST]"),
    "phi3": ("<|user|>\n", "<|assistant|>\n"),
    "alpaca": ("### Instruction:\n", "### Response:\n"),
}
"""Chat family -> (instruction_part, response_part) for Unsloth's train_on_responses_only:
what opens a user turn and what precedes the trained response (Qwen3's empty think block
included, as its non-thinking form renders it)."""


def model_type(model_path: str) -> str | None:
    cfg = Path(model_path) / "config.json"
    if not cfg.is_file():
        return None
    return json.loads(cfg.read_text()).get("model_type")


def packing_keys(t: dict, on_gpu: bool, refusals: list[Refusal], notes: list[str]) -> dict:
    """training.packing as TRL's SFTConfig packing (best-fit decreasing, padding-free batches)
    with Unsloth's packed attention: on a CUDA GPU only. TRL keeps packed rows apart only in
    flash-attention kernels (trl/trainer/sft_trainer.py warns of cross-contamination under
    any other attention); Unsloth's own packed attention (unsloth/utils/packing.py) is not
    verified on its CPU path. TRL's packer forms its own number of sequences, which jessy's
    schedule (LLaMA-Factory's count) cannot know before the run: the updates must be given."""
    hf_trainer.uncounted_packing(
        t, on_gpu, "TRL's best-fit-decreasing packer (padding-free batches, Unsloth's packed "
        "attention)", "TRL's packing keeps packed rows apart only in flash-attention kernels "
        "on a CUDA GPU (its SFTTrainer warns of cross-contamination otherwise); no GPU here",
        refusals, notes)
    return {"packing": True, "packing_strategy": "bfd", "padding_free": True}


def translate_config(spec, inputs: RunInputs, attempt_dir: Path, output_dir: str, on_gpu: bool
                     ) -> tuple[dict, list[Refusal], list[str], dict]:
    """`output_dir`: the Trainer's, relative to attempt_dir (where checkpoints are)."""
    m, t, lora, d = spec["model"], spec["training"], spec["lora"], spec["data"]
    refusals: list[Refusal] = []
    notes: list[str] = []
    carried: dict[str, str] = {}
    single_process_only(spec, "unsloth", refusals, carried)
    method = spec["method"]

    dtype = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}.get(m["dtype"])
    precision = t["precision"]
    if precision in ("bf16", "fp16"):
        dtype = dtype or {"bf16": "bfloat16", "fp16": "float16"}[precision]
    if not on_gpu and precision == "auto" and dtype is None:
        dtype = "float32"  # bf16 on a CPU without avx512_bf16 ran ~40x slower here
        notes.append("CPU: training in float32 (precision auto)")
    load = {
        "model_name": inputs.model_path,
        "max_seq_length": m["max_seq_length"],
        "dtype": dtype,
        "load_in_4bit": method == "qlora",
        "full_finetuning": method == "full",
        "trust_remote_code": m["trust_remote_code"],
    }
    attn = m["attn_implementation"]
    if attn == "auto" and not on_gpu and model_type(inputs.model_path) == "gemma2":
        attn = "eager"  # SDPA ignores Gemma-2's logit soft-capping
        notes.append("Gemma-2 on CPU: attn_implementation eager (SDPA drops soft-capping)")
    hf_trainer.attention_refusal(attn, on_gpu, refusals)
    if attn != "auto":
        load["attn_implementation"] = attn
    carried.update({"/model/name_or_path": "from_pretrained.model_name",
                    "/model/max_seq_length": "from_pretrained.max_seq_length, sft.max_length",
                    "/model/dtype": "from_pretrained.dtype",
                    "/model/trust_remote_code": "from_pretrained.trust_remote_code",
                    "/model/attn_implementation": "from_pretrained.attn_implementation",
                    "/method": "from_pretrained.load_in_4bit / full_finetuning"})

    peft = None
    if method != "full":
        targets = (FUSED_LINEAR.get(model_type(inputs.model_path), ALL_LINEAR)
                   if lora["target_modules"] == "all-linear" else lora["target_modules"])
        peft = {
            "r": lora["r"],
            "lora_alpha": lora["alpha"],
            "lora_dropout": lora["dropout"],
            "target_modules": list(targets),
            "bias": "none",
            "use_gradient_checkpointing": "unsloth" if t["gradient_checkpointing"] else False,
            "random_state": t["seed"],
            "use_rslora": lora["use_rslora"],
        }
        layers = adapted_layers(lora["layers"], inputs.model_path, refusals)
        if layers not in ("all", None):
            peft["layers_to_transform"] = layers
        carried.update({"/lora/r": "peft.r", "/lora/alpha": "peft.lora_alpha (same meaning)",
                        "/lora/dropout": "peft.lora_dropout",
                        "/lora/target_modules": "peft.target_modules (all-linear = 7 projections)",
                        "/lora/layers": "peft.layers_to_transform",
                        "/lora/use_rslora": "peft.use_rslora"})
    else:
        notes.append("full fine-tuning: the run's output is a whole model (model/), not an "
                     "adapter")

    optim = {"adamw": "adamw_torch", "adamw_8bit": "adamw_8bit", "adam": "adamw_torch",
             "sgd": "sgd"}[t["optimizer"]]
    if t["optimizer"] == "adam" and t["weight_decay"]:
        refusals.append(Refusal("/training/weight_decay",
                                "optimizer adam has no weight decay; use adamw"))
    if t["optimizer"] == "adamw_8bit" and not on_gpu:
        notes.append("adamw_8bit on CPU: Unsloth itself swaps it for adamw_torch_fused")
    schedule = run_schedule(spec, inputs)
    sft = {
        "output_dir": str(attempt_dir / output_dir),
        **hf_trainer.training_arguments(t),
        "per_device_eval_batch_size": t["batch_size"],
        "optim": optim,
        **hf_trainer.schedule_arguments(schedule),
        "bf16": dtype == "bfloat16",
        "fp16": dtype == "float16",
        "max_length": m["max_seq_length"],
        "packing": False,
        "dataset_text_field": "text",
        **hf_trainer.reporting_arguments(spec, carried),
        "include_num_input_tokens_seen": True,
        "shuffle_dataset": False,
    }
    if not on_gpu and sft["fp16"]:
        refusals.append(Refusal("/training/precision", "fp16 training needs a GPU"))
    if t["packing"]:
        sft.update(packing_keys(t, on_gpu, refusals, notes))
    carried.update({"/training/batch_size": "sft.per_device_train_batch_size",
                    "/training/gradient_accumulation_steps": "sft.gradient_accumulation_steps",
                    "/training/learning_rate": "sft.learning_rate",
                    "/training/epochs": "sft.max_steps (the core's schedule)",
                    "/training/max_steps": "sft.max_steps",
                    "/training/lr_scheduler": "sft.lr_scheduler_type",
                    "/training/warmup_steps": "sft.warmup_steps",
                    "/training/warmup_ratio": "sft.warmup_steps (the core's schedule)",
                    "/training/weight_decay": "sft.weight_decay",
                    "/training/max_grad_norm": "sft.max_grad_norm (0 = off)",
                    "/training/optimizer": "sft.optim",
                    "/training/seed": "sft.seed, peft.random_state",
                    "/training/gradient_checkpointing": "peft.use_gradient_checkpointing",
                    "/training/precision": "from_pretrained.dtype, sft.bf16/fp16",
                    "/training/logging_steps": "sft.logging_steps",
                    "/training/eval_steps": "sft.eval_strategy/eval_steps",
                    "/training/save_steps": "sft.save_strategy/save_steps",
                    "/training/packing": "sft.packing (TRL's best-fit decreasing) on a CUDA "
                                         "GPU; refused on CPU"})

    total = schedule.optimizer_steps
    responses_only = d["train_on_responses_only"] and inputs.data.format != "text"
    family = chat_family(inputs.model_path, m["chat_template"])
    data = {
        "train": str(inputs.data.train),
        "validation": str(inputs.data.validation) if inputs.data.validation else None,
        "format": inputs.data.format,
        "train_on_responses_only": responses_only,
        "chat_template": training_template(inputs.model_path, m["chat_template"]),
        "markers": MARKERS.get(family) if responses_only else None,
    }
    refusal = family_refusal(inputs.model_path, m["chat_template"])
    if refusal:
        refusals.append(refusal)
    if responses_only and family is None:
        notes.append("unknown chat family: Unsloth finds the response markers in the template")
    markers = (f"; response markers {data['markers'][0]!r} / {data['markers'][1]!r}"
               if data["markers"] else "")
    carried.update({"/data/train_on_responses_only": "unsloth train_on_responses_only",
                    "/model/chat_template": "tokenizer.chat_template: "
                    + template_summary(inputs.model_path, m["chat_template"]) + markers})
    init = check_init_adapter(inputs.init_adapter, spec, refusals, notes)
    if init is not None:
        data["init_adapter"] = str(init)
    checkpoint = hf_resume(inputs.resume_from, refusals, notes, output_dir)
    if checkpoint:
        data["resume_from_checkpoint"] = checkpoint
    cfg = {"from_pretrained": load, "peft": peft, "sft": sft, "data": data,
           "total_steps": total}
    return cfg, refusals, notes, carried
