"""Spec -> LLaMA-Factory's YAML (the keys `llamafactory-cli train` reads) + dataset_info.json.

Meaning, not names: LLaMA-Factory turns gradient checkpointing OFF with
`disable_gradient_checkpointing` (its `gradient_checkpointing: false` is ignored); its
`lora_alpha` is PEFT's alpha; rows with a system turn need the sharegpt format with tags;
`train_on_prompt` is the inverse of masking the prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

from jessy_adapters.backend import Refusal, RunInputs
from jessy_adapters.schedule import run_schedule
from jessy_adapters.templates import (
    ALPACA,
    ALPACA_SYSTEM,
    chat_family,
    default_system_prompt,
    family_refusal,
    plain_text_bos,
    renders_dates,
    turn_format,
)
from jessy_adapters.toolkit import hf_trainer
from jessy_adapters.toolkit.checkpoints import check_init_adapter, hf_resume
from jessy_adapters.toolkit.layers import adapted_layers
from jessy_adapters.toolkit.scaleout import single_process_only

OPTIMIZERS = {"adamw": "adamw_torch", "adamw_8bit": "adamw_8bit", "adam": "adamw_torch",
              "sgd": "sgd"}
SHAREGPT_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "system_tag": "system"}


FAMILY_TEMPLATES = {
    "chatml": ("chatml", {}),
    "qwen2": ("qwen", {}),
    "qwen3": ("qwen3", {"enable_thinking": False}),
    "llama3": ("llama3", {}),
    "gemma": ("gemma2", {}),
    "gemma3": ("gemma", {}),
    "mistral": ("mistral", {}),
    "phi3": ("phi", {}),
    ALPACA: ("jessy_alpaca", {}),
}
"""Chat family -> LLaMA-Factory's template (its data/template.py registry) and the keys it
needs. Qwen3 is `qwen3` with thinking off: the empty think block joins the prompt, as Qwen3's
own template renders it (`qwen3_nothink` writes no think block: Qwen3-2507's format). Gemma-3
is `gemma`, the same text: `gemma3` reads Gemma-3's image processor, which text models lack."""
REGISTERED = {"jessy_alpaca"}
"""Templates jessy's train entry registers in LLaMA-Factory's registry (from the config's
`jessy_template`) before the run: LLaMA-Factory's own `alpaca` writes the preamble without the
blank line after a row's own system text, never writes BOS, and trains a blank line after
EOS, so it cannot write the Alpaca prompt the others train on."""
ON_PROMPT = {"gemma2": "gemma"}
"""Templates that refuse train_on_prompt (efficient_eos) -> the same text without that."""
OWN_DEFAULT_SYSTEM = {"qwen"}
"""Templates that add a system prompt of their own to rows without one."""


def template_name(model_path: str, choice: str) -> tuple[str | None, dict]:
    """LLaMA-Factory template for the run's chat family, and its extra keys (None: LLaMA-Factory
    parses the tokenizer's own template: unknown families, Llama-3.1+ dates)."""
    family = chat_family(model_path, choice)
    if family is None or (family == "llama3" and renders_dates(model_path, choice)):
        return None, {}
    return FAMILY_TEMPLATES[family]


def alpaca_registration(model_path: str) -> dict:
    """The Alpaca prompt as LLaMA-Factory template slots (train_entry.register_template turns
    {"special": name} into LLaMA-Factory's token slot), from jessy's one Alpaca turn format."""
    fmt = turn_format(ALPACA, model_path)
    return {"name": "jessy_alpaca",
            "format_prefix": [{"special": "bos_token"}] if plain_text_bos(model_path) else [],
            "format_system": [fmt["system"].replace("{system}", "{{content}}")],
            "format_user": [fmt["prompt"].replace("{instruction}", "{{content}}")],
            "format_assistant": ["{{content}}", {"special": "eos_token"}],
            "default_system": ALPACA_SYSTEM}


def dataset_info(data_format: str, train: Path, validation: Path | None) -> dict:
    """Absolute file names: LLaMA-Factory joins them to dataset_dir, which keeps them."""
    if data_format == "text":
        entry = {"formatting": "alpaca", "columns": {"prompt": "text"}}
    else:
        entry = {"formatting": "sharegpt", "columns": {"messages": "messages"},
                 "tags": SHAREGPT_TAGS}
    info = {"jessy_train": {"file_name": str(train), **entry}}
    if validation is not None:
        info["jessy_valid"] = {"file_name": str(validation), **entry}
    return info


def translate_config(spec, inputs: RunInputs, attempt_dir: Path, output_dir: str, data_dir: str,
                     on_gpu: bool) -> tuple[dict, list[Refusal], list[str], dict, int]:
    """`output_dir`: the Trainer's, relative to attempt_dir (where checkpoints are)."""
    m, t, lora, d = spec["model"], spec["training"], spec["lora"], spec["data"]
    refusals: list[Refusal] = []
    notes: list[str] = []
    carried: dict[str, str] = {}
    single_process_only(spec, "llamafactory", refusals, carried)
    method = spec["method"]
    if inputs.data.format == "text":
        refusals.append(Refusal("/data/format", "text rows: LLaMA-Factory's sft stage needs "
                                                "prompt/response or messages"))
    cfg: dict = {
        "stage": "sft",
        "do_train": True,
        "model_name_or_path": inputs.model_path,
        "trust_remote_code": m["trust_remote_code"],
        "dataset": "jessy_train",
        "dataset_dir": data_dir,
        "cutoff_len": m["max_seq_length"],
        "overwrite_cache": True,
        "preprocessing_num_workers": 1,
        "output_dir": str(attempt_dir / output_dir),
        "overwrite_output_dir": False,  # True would silently restart instead of resuming
        "plot_loss": True,
        **hf_trainer.reporting_arguments(spec, carried),
        **hf_trainer.training_arguments(t),
        "include_num_input_tokens_seen": True,
        "train_on_prompt": not d["train_on_responses_only"],
        "disable_gradient_checkpointing": not t["gradient_checkpointing"],
    }
    schedule = run_schedule(spec, inputs)
    refusal = family_refusal(inputs.model_path, m["chat_template"])
    if refusal:
        refusals.append(refusal)
    template, template_keys = template_name(inputs.model_path, m["chat_template"])
    if template and cfg["train_on_prompt"] and template in ON_PROMPT:
        notes.append(f"template {ON_PROMPT[template]}, not {template}: the same text, and "
                     f"{template} refuses train_on_prompt")
        template = ON_PROMPT[template]
    if template and t["packing"] and template in ON_PROMPT:
        notes.append(f"template {ON_PROMPT[template]}, not {template}: the same text without "
                     f"the untrained EOS {template} adds after each row (efficient_eos), so "
                     "the packed rows are as long as jessy's schedule counts them")
        template = ON_PROMPT[template]
    native_template = "the tokenizer's own template, parsed by LLaMA-Factory"
    if template in REGISTERED:
        cfg["jessy_template"] = alpaca_registration(inputs.model_path)
        notes.append(f"template {template}: registered by jessy's train entry from "
                     "jessy_template (LLaMA-Factory's own alpaca template writes other text); "
                     "`llamafactory-cli train` on this file alone does not know it")
    if template:
        cfg["template"] = template
        cfg.update(template_keys)
        native_template = ", ".join(f"{k}: {json.dumps(v)}" for k, v in
                                    {"template": template, **template_keys}.items())
    default_system = default_system_prompt(inputs.model_path, m["chat_template"])
    if default_system is None and template in OWN_DEFAULT_SYSTEM:
        default_system = ""  # the tokenizer's template adds none: neither does LLaMA-Factory
    if default_system is not None:
        # what the template adds to rows without a system turn (SmolLM2, Qwen2.5), so
        # LLaMA-Factory trains on the same text as MLX, Unsloth and `jessy eval`
        cfg["default_system"] = default_system
    if inputs.data.validation:
        cfg["eval_dataset"] = "jessy_valid"
        cfg["per_device_eval_batch_size"] = t["batch_size"]
    cfg.update(hf_trainer.schedule_arguments(schedule))
    cfg["optim"] = hf_trainer.optimizer(t, OPTIMIZERS, on_gpu, refusals, notes)
    precision = hf_trainer.precision(m, t, on_gpu, refusals, "LLaMA-Factory refuses bf16 there "
                                     "and fp16 needs a GPU (bf16 ran 170 s/step on this CPU)")
    cfg["bf16"] = precision == "bf16"
    cfg["fp16"] = precision == "fp16"
    hf_trainer.attention_refusal(m["attn_implementation"], on_gpu, refusals)
    if m["attn_implementation"] != "auto":
        cfg["flash_attn"] = {"eager": "disabled", "sdpa": "sdpa",
                             "flash_attention_2": "fa2"}[m["attn_implementation"]]
    if t["packing"]:
        cfg.update(packing_keys(spec, inputs, schedule.packed_sequences, template, refusals,
                                notes))

    cfg["finetuning_type"] = "full" if method == "full" else "lora"
    if method == "qlora":
        cfg["quantization_bit"] = 4
        cfg["quantization_method"] = "bnb"
    if method != "full":
        cfg["lora_rank"] = lora["r"]
        cfg["lora_alpha"] = lora["alpha"]
        cfg["lora_dropout"] = lora["dropout"]
        cfg["use_rslora"] = lora["use_rslora"]
        cfg["lora_target"] = ("all" if lora["target_modules"] == "all-linear"
                              else ",".join(lora["target_modules"]))
    if method != "full" and adapted_layers(lora["layers"], inputs.model_path,
                                           refusals) not in ("all", None):
        refusals.append(Refusal("/lora/layers", "LLaMA-Factory's LoRA has no per-layer "
                                                "selection (lora_target names modules only)"))

    carried.update({
        "/model/name_or_path": "model_name_or_path",
        "/model/chat_template": native_template,
        "/model/max_seq_length": "cutoff_len", "/model/dtype": "bf16/fp16",
        "/model/trust_remote_code": "trust_remote_code",
        "/model/attn_implementation": "flash_attn (disabled/sdpa/fa2)",
        "/data/train_on_responses_only": "train_on_prompt (inverted)",
        "/method": "finetuning_type: lora (+ quantization_bit: 4 for qlora) / full",
        "/lora/r": "lora_rank", "/lora/alpha": "lora_alpha (same meaning)",
        "/lora/dropout": "lora_dropout", "/lora/target_modules": "lora_target (all = all-linear)",
        "/lora/layers": "refused unless all", "/lora/use_rslora": "use_rslora",
        "/training/epochs": "max_steps (the core's schedule)", "/training/max_steps": "max_steps",
        "/training/batch_size": "per_device_train_batch_size",
        "/training/gradient_accumulation_steps": "gradient_accumulation_steps",
        "/training/learning_rate": "learning_rate", "/training/lr_scheduler": "lr_scheduler_type",
        "/training/warmup_steps": "warmup_steps",
        "/training/warmup_ratio": "warmup_steps (the core's schedule)",
        "/training/weight_decay": "weight_decay",
        "/training/max_grad_norm": "max_grad_norm (0 = off)", "/training/optimizer": "optim",
        "/training/seed": "seed, data_seed",
        "/training/gradient_checkpointing": "disable_gradient_checkpointing (inverted)",
        "/training/precision": "bf16/fp16", "/training/logging_steps": "logging_steps",
        "/training/eval_steps": "eval_strategy/eval_steps",
        "/training/save_steps": "save_strategy/save_steps",
        "/training/packing": "packing + neat_packing (rows kept apart: a block-diagonal "
                             "attention mask, positions restarting at each row)"})
    init = check_init_adapter(inputs.init_adapter, spec, refusals, notes)
    if init is not None:
        cfg["adapter_name_or_path"] = str(init)  # LLaMA-Factory trains the loaded adapter on
    checkpoint = hf_resume(inputs.resume_from, refusals, notes, output_dir)
    if checkpoint:
        cfg["resume_from_checkpoint"] = checkpoint
    return cfg, refusals, notes, carried, schedule.optimizer_steps


def packing_keys(spec, inputs: RunInputs, packed: int | None, template: str | None,
                 refusals: list[Refusal], notes: list[str]) -> dict:
    """training.packing as LLaMA-Factory's `neat_packing` (which sets `packing`): rows packed by
    its greedy knapsack into sequences of max_seq_length tokens, kept apart by a block-diagonal
    4D attention mask under eager or SDPA attention, on a CPU as on a GPU (data/collator.py
    `prepare_4d_attention_mask`), positions restarting at each row (processor/supervised.py).
    Its plain `packing` lets the rows attend to each other: never used."""
    m, t = spec["model"], spec["training"]
    limit = m["max_seq_length"]
    if packed is None:
        refusals.append(Refusal("/training/packing", "jessy counts the packed sequences (the "
                                "run's updates) from single-turn chat rows with the model's "
                                "tokenizer.json, and cannot count these rows that way"))
    if template is None:
        refusals.append(Refusal("/training/packing", "LLaMA-Factory renders these rows with "
                                "the tokenizer's own template (an unknown family, or "
                                "Llama-3.1+ dates), whose packed lengths jessy cannot count"))
    if limit % 8:
        refusals.append(Refusal("/model/max_seq_length", f"{limit} with packing: LLaMA-Factory "
                                "packs into sequences of max_seq_length tokens and pads each "
                                "batch to a multiple of 8 without padding the position ids "
                                "(data/collator.py); use a multiple of 8"))
    if m["attn_implementation"] == "flash_attention_2" and t["batch_size"] != 1:
        refusals.append(Refusal("/training/batch_size", "LLaMA-Factory's packing under "
                                "flash_attention_2 takes one packed sequence per batch "
                                "(data/collator.py asserts it); use batch_size 1 with "
                                "gradient accumulation, or sdpa"))
    if packed is not None:
        notes.append(f"packing: {inputs.data.n_train} rows in {packed} sequences of {limit} "
                     "tokens (LLaMA-Factory's neat_packing: each row attends to itself only); "
                     f"it keeps one position back, so a row is cut at {limit - 1} tokens")
    return {"packing": True, "neat_packing": True}


def dataset_info_json(inputs: RunInputs) -> str:
    return json.dumps(dataset_info(inputs.data.format, inputs.data.train, inputs.data.validation),
                      indent=2)
