"""LLaMA-Factory's training YAML (what `llamafactory-cli train` reads) -> a spec.

Its defaults are not jessy's: lora_alpha is 2 x lora_rank when absent, gradient checkpointing
is on unless disable_gradient_checkpointing, the HF Trainer saves every 500 steps; datasets are
names resolved through dataset_info.json in dataset_dir.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .common import (
    Context,
    choice,
    full_has_no_lora,
    inverted,
    model_reference,
    only,
    resolve_warmup,
    set_data,
    to_path,
    zero_is_none,
)

LABEL = "LLaMA-Factory"


def recognise(data: dict) -> bool:
    return "model_name_or_path" in data and ("stage" in data or "finetuning_type" in data)


DEFAULTS = {
    "/model/max_seq_length": (2048, "cutoff_len's default"),
    "/method": ("lora", "finetuning_type's default"),
    "/lora/r": (8, "lora_rank's default"),
    "/lora/dropout": (0.0, "lora_dropout's default"),
    "/lora/target_modules": ("all-linear", "lora_target's default all"),
    "/training/epochs": (3.0, "num_train_epochs' default (the HF Trainer's)"),
    "/training/batch_size": (8, "per_device_train_batch_size's default (the HF Trainer's)"),
    "/training/gradient_accumulation_steps": (1, "the HF Trainer's default"),
    "/training/learning_rate": (5e-5, "the HF Trainer's default"),
    "/training/lr_scheduler": ("linear", "lr_scheduler_type's default"),
    "/training/weight_decay": (0.0, "the HF Trainer's default"),
    "/training/max_grad_norm": (1.0, "the HF Trainer's default"),
    "/training/optimizer": ("adamw", "optim's default adamw_torch"),
    "/training/seed": (42, "the HF Trainer's default"),
    "/training/gradient_checkpointing": (True, "on unless disable_gradient_checkpointing"),
    "/training/logging_steps": (500, "the HF Trainer's default"),
    "/training/save_steps": (500, "the HF Trainer's default (save_strategy steps)"),
    "/data/validation_split": (0.0, "val_size's default"),
    "/data/train_on_responses_only": (True, "train_on_prompt's default false"),
}

SCHEDULERS = {"linear": "linear", "cosine": "cosine", "constant": "constant",
              "constant_with_warmup": "constant"}
OPTIMIZERS = {"adamw_torch": "adamw", "adamw_torch_fused": "adamw", "adamw_hf": "adamw",
              "adamw_8bit": "adamw_8bit", "adamw_bnb_8bit": "adamw_8bit",
              "paged_adamw_8bit": "adamw_8bit", "sgd": "sgd"}
TEMPLATES = {"llama3": "llama3", "chatml": "chatml", "qwen": "qwen2", "qwen3": "qwen3",
             "qwen3_nothink": "qwen3", "gemma2": "gemma", "gemma": "gemma3", "gemma3": "gemma3",
             "mistral": "mistral", "phi": "phi3", "jessy_alpaca": "alpaca"}
"""LLaMA-Factory template -> chat_template. `default` ("Human: ... Assistant:") and `empty` (the
bare text) are no rendering the spec can name: refused; so is `alpaca` (template_choice).
`jessy_alpaca` is what jessy's translation writes for chat_template alpaca."""
ATTENTION = {"auto": "auto", "disabled": "eager", "sdpa": "sdpa", "fa2": "flash_attention_2"}
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

DROPPED = {
    "output_dir": "where outputs go; jessy writes runs/<id>/",
    "dataset_dir": "where dataset_info.json is (read to resolve dataset)",
    "overwrite_output_dir": "output handling", "overwrite_cache": "preprocessing cache",
    "preprocessing_num_workers": "worker count", "dataloader_num_workers": "worker count",
    "plot_loss": "jessy plots the loss itself", "report_to": "experiment tracking",
    "run_name": "experiment tracking", "logging_dir": "where logs go",
    "ddp_timeout": "a process-group timeout", "save_total_limit": "how many checkpoints stay",
    "save_only_model": "what a checkpoint holds", "per_device_eval_batch_size":
        "evaluation batching (jessy uses training.batch_size)",
    "eval_strategy": "when validation runs (eval_steps carries the interval)",
    "evaluation_strategy": "when validation runs (eval_steps carries the interval)",
    "do_eval": "whether validation runs", "include_num_input_tokens_seen": "a logged counter",
    "logging_first_step": "logging", "eval_on_start": "when validation runs",
    "logging_nan_inf_filter": "logging (jessy's own NaN guard stops a run)",
    "push_to_hub": "upload", "hub_model_id": "upload", "enable_liger_kernel":
        "fused kernels: the same loss, faster", "quantization_method":
        "bitsandbytes (bnb) is the 4-bit method jessy's qlora uses",
}

REFUSED = {
    "deepspeed": "DeepSpeed configs: jessy writes its own (resources.strategy) for Axolotl only",
    "rope_scaling": "RoPE scaling: not in the spec", "use_dora": "DoRA: not in the spec",
    "pissa_init": "PiSSA initialisation: not in the spec",
    "loraplus_lr_ratio": "LoRA+: not in the spec", "use_unsloth": "Unsloth is its own backend",
    "adapter_name_or_path": "training on from an adapter: jessy's continue_on_fallback only",
    "resume_from_checkpoint": "resuming: use jessy run --resume",
    "neftune_noise_alpha": "NEFTune noise: not in the spec",
    "additional_target": "extra trained modules: not in the spec",
    "mask_history": "masking earlier turns: not in the spec", "streaming": "streamed datasets",
    "mix_strategy": "dataset mixing strategies: jessy concatenates", "pure_bf16":
        "pure bf16 (no fp32 master weights): not in the spec", "upcast_layernorm":
        "upcast layer norms: not in the spec", "freeze_trainable_layers":
        "freeze tuning: not in the spec", "pref_beta": "preference training: not in the spec",
    "tokenized_path": "pre-tokenized data", "lora_layers": "not in the spec",
    "enable_thinking": "thinking mode: jessy trains Qwen3 in its non-thinking form",
}


def _lora_target(value: Any) -> str | list[str] | None:
    names = [n.strip() for n in str(value).split(",") if n.strip()]
    if names == ["all"]:
        return "all-linear"
    return names if names and all(n in PROJECTIONS for n in names) else None


def lora_target(ctx: Context, key: str, value: Any) -> None:
    target = _lora_target(value)
    if target is None:
        ctx.refuse(key, f"{value!r}: the spec names all or projections among "
                        f"{', '.join(PROJECTIONS)}")
    else:
        ctx.map(key, "/lora/target_modules", target)


def neat_packing(ctx: Context, key: str, value: Any) -> None:
    if value:
        ctx.map(key, "/training/packing", True)
    elif ctx.source.get("packing"):
        ctx.drop(key, "off: `packing` decides (refused below: its rows attend to each other)")
    else:
        ctx.drop(key, "off: rows are not packed")


def packing(ctx: Context, key: str, value: Any) -> None:
    """LLaMA-Factory's plain `packing` concatenates rows that then attend to each other (its
    attention mask is all ones): a row's loss depends on the rows packed before it, which
    the spec's packing (neat_packing's block-diagonal mask) never does."""
    if ctx.source.get("neat_packing"):
        ctx.drop(key, "neat_packing packs the rows (it turns packing on)")
    elif value:
        ctx.refuse(key, "packing without neat_packing: the packed rows attend to each other, "
                        "so each row's loss depends on the rows packed before it; "
                        "training.packing keeps rows apart (neat_packing: true)")
    else:
        ctx.map(key, "/training/packing", False)


def quantization_bit(ctx: Context, key: str, value: Any) -> None:
    if value == 4:
        ctx.map(key, "/method", "qlora")
    else:
        ctx.refuse(key, f"{value}-bit: the spec's qlora is 4-bit")


def finetuning_type(ctx: Context, key: str, value: Any) -> None:
    if value == "full":
        ctx.map(key, "/method", "full")
    elif value == "lora":
        ctx.map(key, "/method", "qlora" if ctx.source.get("quantization_bit") == 4 else "lora")
    else:
        ctx.refuse(key, f"{value!r}: the spec has lora, qlora and full")


def precision(flag: str) -> Any:
    def apply(ctx: Context, key: str, value: Any) -> None:
        if value:
            ctx.map(key, "/training/precision", flag)
        else:
            ctx.drop(key, f"{flag} off: jessy's precision auto writes it off too")

    return apply


def save_strategy(ctx: Context, key: str, value: Any) -> None:
    if value == "no":
        ctx.map(key, "/training/save_steps", None)
    elif value == "steps":
        ctx.drop(key, "save every save_steps: what save_steps says")
    else:
        ctx.drop(key, f"{value!r}: when checkpoints are saved (not the trained weights); "
                      "jessy saves every save_steps")


def data_seed(ctx: Context, key: str, value: Any) -> None:
    if value == ctx.source.get("seed", DEFAULTS["/training/seed"][0]):
        ctx.drop(key, "the same as seed, as jessy writes it")
    else:
        ctx.refuse(key, "a data order seed apart from seed: not in the spec")


def _dataset_info(ctx: Context) -> tuple[dict, Path] | None:
    """dataset_info.json in dataset_dir (relative to the file), or beside the file."""
    base = ctx.native_path.parent
    for folder in (base / str(ctx.source.get("dataset_dir", "data")), base):
        info = folder / "dataset_info.json"
        if info.is_file():
            try:
                return json.loads(info.read_text(encoding="utf-8")), folder
            except (OSError, ValueError):
                return None
    return None


def _entry(name: str, entry: dict, folder: Path) -> tuple[str, str, dict] | str:
    """(file, format, fields) for one dataset_info entry (a hub id stays a reference), or
    why it cannot be used."""
    hub = entry.get("hf_hub_url") or entry.get("ms_hub_url")
    if "file_name" not in entry and not hub:
        return f"{name} is neither a file nor a hub dataset in dataset_info.json"
    columns, tags = entry.get("columns", {}), entry.get("tags", {})
    file = str(folder / entry["file_name"]) if "file_name" in entry else hub
    if entry.get("formatting", "alpaca") == "alpaca":
        if set(columns) == {"prompt"}:
            return file, "text", {"text": columns["prompt"]}
        fields = {"instruction": columns.get("prompt", "instruction"),
                  "input": columns.get("query", "input"),
                  "output": columns.get("response", "output")}
        return file, "alpaca", fields
    messages = columns.get("messages", "conversations")
    if tags.get("role_tag") == "role" and tags.get("content_tag") == "content":
        return file, "messages", {"messages": messages}
    if tags.get("role_tag", "from") == "from" and tags.get("content_tag", "value") == "value":
        return file, "sharegpt", {"conversations": messages}
    return f"{name}: sharegpt tags {tags} the spec's formats do not read"


def _resolve(ctx: Context, key: str, value: Any) -> tuple[Any, str | None, dict] | None:
    names = [n.strip() for n in str(value).split(",") if n.strip()]
    if ctx.data_path:
        return names, None, {}
    found = _dataset_info(ctx)
    if found is None:
        ctx.notes.append(f"{key}: no dataset_info.json beside the file to resolve {names}")
        return (names[0] if len(names) == 1 else names), None, {}
    info, folder = found
    resolved = [_entry(n, info.get(n, {}), folder) if n in info else
                f"{n} is not in {folder / 'dataset_info.json'}" for n in names]
    problems = [r for r in resolved if isinstance(r, str)]
    shapes = {(fmt, json.dumps(fields)) for _, fmt, fields in
              (r for r in resolved if not isinstance(r, str))}
    if problems or len(shapes) > 1:
        ctx.refuse(key, "; ".join(problems) or "the datasets have different row shapes; the "
                                                "spec mixes files of one format")
        return None
    files = [r[0] for r in resolved]
    return (files[0] if len(files) == 1 else files), resolved[0][1], resolved[0][2]


def dataset(ctx: Context, key: str, value: Any) -> None:
    resolved = _resolve(ctx, key, value)
    if resolved is not None:
        set_data(ctx, key, *resolved)


def eval_dataset(ctx: Context, key: str, value: Any) -> None:
    resolved = _resolve(ctx, key, value)
    if resolved is None:
        return
    files = resolved[0]
    if isinstance(files, list):
        ctx.refuse(key, "several validation datasets: the spec has one validation file")
    else:
        ctx.map(key, "/data/validation", files)
        ctx.map(key, "/data/validation_split", 0.0)


def template_choice(ctx: Context, key: str, value: Any) -> None:
    """LLaMA-Factory's own `alpaca` template is not the Alpaca prompt jessy's alpaca writes
    (Axolotl's): refused, with what differs."""
    if value == "alpaca":
        ctx.refuse(key, "LLaMA-Factory's alpaca template is not the classic Alpaca prompt: it "
                        "joins an input to the instruction on the next line (no '### Input:' "
                        "heading or input preamble), writes no BOS and no blank line after a "
                        "row's own system text; jessy's chat_template alpaca writes the classic "
                        "prompt (Axolotl's type: alpaca)")
    else:
        choice("/model/chat_template", TEMPLATES, "template")(ctx, key, value)


MAPPED = {
    "model_name_or_path": model_reference,
    "stage": only("sft", "supervised fine-tuning: what jessy trains",
                  "jessy trains supervised fine-tuning (sft) only"),
    "do_train": only(True, "training: what jessy does", "this file does not train"),
    "finetuning_type": finetuning_type,
    "quantization_bit": quantization_bit,
    "lora_rank": to_path("/lora/r"),
    "lora_alpha": to_path("/lora/alpha"),
    "lora_dropout": to_path("/lora/dropout"),
    "lora_target": lora_target,
    "use_rslora": to_path("/lora/use_rslora", bool),
    "dataset": dataset,
    "eval_dataset": eval_dataset,
    "template": template_choice,
    "cutoff_len": to_path("/model/max_seq_length", int),
    "max_samples": to_path("/data/max_samples", int),
    "per_device_train_batch_size": to_path("/training/batch_size", int),
    "gradient_accumulation_steps": to_path("/training/gradient_accumulation_steps", int),
    "learning_rate": to_path("/training/learning_rate"),
    "num_train_epochs": to_path("/training/epochs"),
    "max_steps": to_path("/training/max_steps", lambda v: int(v) if v and v > 0 else None),
    "lr_scheduler_type": choice("/training/lr_scheduler", SCHEDULERS, "lr_scheduler_type"),
    "warmup_ratio": to_path("/training/warmup_ratio", zero_is_none),
    "warmup_steps": to_path("/training/warmup_steps", int),
    "weight_decay": to_path("/training/weight_decay"),
    "max_grad_norm": to_path("/training/max_grad_norm", zero_is_none),
    "optim": choice("/training/optimizer", OPTIMIZERS, "optim"),
    "seed": to_path("/training/seed", int),
    "data_seed": data_seed,
    "bf16": precision("bf16"),
    "fp16": precision("fp16"),
    "disable_gradient_checkpointing": to_path("/training/gradient_checkpointing",
                                              inverted),
    "train_on_prompt": to_path("/data/train_on_responses_only", inverted),
    "val_size": to_path("/data/validation_split"),
    "logging_steps": to_path("/training/logging_steps", int),
    "eval_steps": to_path("/training/eval_steps", int),
    "save_steps": to_path("/training/save_steps", int),
    "save_strategy": save_strategy,
    "trust_remote_code": to_path("/model/trust_remote_code", bool),
    "flash_attn": choice("/model/attn_implementation", ATTENTION, "flash_attn"),
    "default_system": to_path("/data/system_prompt", zero_is_none),
    "neat_packing": neat_packing,
    "packing": packing,
}


def finish(ctx: Context) -> None:
    if "lora_alpha" not in ctx.source:
        ctx.default("/lora/alpha", 2 * ctx.get("/lora/r"), "lora_alpha's default 2 x lora_rank")
    resolve_warmup(ctx)
    if "dataset" not in ctx.source and ctx.data_path:
        set_data(ctx, "--data", ctx.data_path, None, {})
    full_has_no_lora(ctx)
