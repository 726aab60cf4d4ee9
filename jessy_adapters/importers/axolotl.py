"""Axolotl's YAML (what `axolotl train` reads) -> a spec.

Axolotl's defaults are its own: no `adapter` means a full fine-tune, sequence_len 512, a cosine
schedule, micro_batch_size 1, warmup min(3% of the steps, 100) when none is given, and a LoRA
without lora_target_linear/lora_target_modules adapts PEFT's per-model default (q_proj, v_proj
on Llama-family models). Empty keys (`wandb_project:`) are unset, as Axolotl reads them.
"""

from __future__ import annotations

from typing import Any

from ..templates import ALPACA, turn_format
from .common import (
    TEMPLATE_FAMILIES,
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

LABEL = "Axolotl"


def recognise(data: dict) -> bool:
    return "base_model" in data and ("datasets" in data or "micro_batch_size" in data)


DEFAULTS = {
    "/model/max_seq_length": (512, "sequence_len's default"),
    "/method": ("full", "no adapter: Axolotl fine-tunes every weight"),
    "/lora/r": (8, "PEFT's default r"),
    "/lora/alpha": (8, "PEFT's default lora_alpha"),
    "/lora/dropout": (0.0, "lora_dropout's default"),
    "/lora/target_modules": (["q_proj", "v_proj"], "PEFT's default for Llama-family models"),
    "/training/epochs": (1.0, "num_epochs' default"),
    "/training/batch_size": (1, "micro_batch_size's default"),
    "/training/gradient_accumulation_steps": (1, "gradient_accumulation_steps' default"),
    "/training/lr_scheduler": ("cosine", "lr_scheduler's default"),
    "/training/warmup_ratio": (0.03, "Axolotl's default warmup: int(3% of the steps), at most "
                                     "100 (jessy rounds up and does not cap)"),
    "/training/weight_decay": (0.0, "the HF Trainer's default"),
    "/training/max_grad_norm": (1.0, "the HF Trainer's default"),
    "/training/optimizer": ("adamw", "optimizer's default adamw_torch_fused"),
    "/training/seed": (42, "the HF Trainer's default"),
    "/training/gradient_checkpointing": (False, "gradient_checkpointing's default"),
    "/data/validation_split": (0.0, "val_set_size's default"),
    "/data/train_on_responses_only": (True, "train_on_inputs' default false"),
}

SCHEDULERS = {"linear": "linear", "cosine": "cosine", "constant": "constant",
              "constant_with_warmup": "constant"}
OPTIMIZERS = {"adamw_torch": "adamw", "adamw_torch_fused": "adamw", "adamw_hf": "adamw",
              "adamw_8bit": "adamw_8bit", "adamw_bnb_8bit": "adamw_8bit",
              "paged_adamw_8bit": "adamw_8bit", "sgd": "sgd"}
TEMPLATES = {**{name: name for name in TEMPLATE_FAMILIES}, "tokenizer_default": "auto",
             "qwen_25": "qwen2", "phi_3": "phi3", "mistral_v1": "mistral"}
ATTENTION = {"eager": "eager", "sdpa": "sdpa", "flash_attention_2": "flash_attention_2"}
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DATASET_TYPES = {"alpaca": "alpaca", "sharegpt": "sharegpt", "chat_template": "messages",
                 "completion": "text"}
DATASET_KEYS = {"path", "type", "ds_type", "field_messages", "message_property_mappings",
                "roles_to_train", "train_on_eos", "train_on_eot", "field", "chat_template",
                "chat_template_jinja", "split", "field_system", "field_instruction",
                "field_output", "format", "no_input_format", "system_format"}
"""Dataset entry keys read here; any other is refused."""

DROPPED = {
    "output_dir": "where outputs go; jessy writes runs/<id>/",
    "dataset_prepared_path": "preprocessing cache", "dataset_num_proc": "worker count",
    "dataloader_num_workers": "worker count", "strict": "config checking",
    "save_safetensors": "checkpoint file format", "save_total_limit": "how many checkpoints "
    "stay", "include_tokens_per_second": "a logged counter", "include_tkps": "a logged counter",
    "loss_watchdog_threshold": "a loss monitor (jessy's own guard stops a NaN or exploding "
    "loss)", "loss_watchdog_patience": "a loss monitor", "pad_to_sequence_len":
        "padding: masked out of the loss", "eval_sample_packing": "how validation is batched",
    "evals_per_epoch": "how often validation runs (jessy validates once per epoch unless "
    "training.eval_steps)", "saves_per_epoch": "how often checkpoints are saved",
    "eval_strategy": "when validation runs", "save_strategy": "when checkpoints are saved",
    "eval_batch_size": "evaluation batching", "save_first_step": "a checkpoint",
    "local_rank": "set by the launcher", "debug": "debug output", "hub_model_id": "upload",
    "hub_strategy": "upload", "ddp_find_unused_parameters": "a DDP bookkeeping flag",
    "eot_tokens": "the end-of-turn token every jessy backend trains",
    "lora_mlp_kernel": "fused kernels: the same maths", "lora_qkv_kernel": "fused kernels",
    "lora_o_kernel": "fused kernels", "lora_embedding_kernel": "fused kernels",
    "plugins": "integrations (jessy adds its own metrics plugin)", "max_memory":
        "device placement", "logging_dir": "where logs go", "gradio_title": "UI",
    **{f"wandb_{k}": "experiment tracking" for k in ("project", "entity", "watch", "name",
                                                      "log_model", "mode", "run_id")},
    **{f"mlflow_{k}": "experiment tracking" for k in ("tracking_uri", "experiment_name",
                                                       "run_name")},
    "use_wandb": "experiment tracking", "use_mlflow": "experiment tracking",
}

REFUSED = {
    "rl": "preference/RL training: jessy trains supervised fine-tuning only",
    "deepspeed": "a DeepSpeed config file: jessy writes its own from resources.strategy",
    "fsdp": "FSDP settings: jessy writes its own from resources.strategy",
    "fsdp_config": "FSDP settings: jessy writes its own from resources.strategy",
    "load_in_8bit": "8-bit base weights: the spec has 4-bit qlora only",
    "lora_model_dir": "training on from an adapter: jessy's continue_on_fallback only",
    "resume_from_checkpoint": "resuming: use jessy run --resume",
    "early_stopping_patience": "early stopping: not in the spec",
    "group_by_length": "length-grouped batches: not in the spec",
    "lora_fan_in_fan_out": "fan-in/fan-out LoRA: not in the spec",
    "lora_modules_to_save": "extra trained modules: not in the spec",
    "neftune_noise_alpha": "NEFTune noise: not in the spec", "peft_use_dora": "DoRA",
    "unfrozen_parameters": "partial full fine-tuning: not in the spec",
    "xformers_attention": "xformers attention: the spec has eager, sdpa, flash_attention_2",
    "s2_attention": "shifted sparse attention", "rope_scaling": "RoPE scaling",
    "chat_template_jinja": "a custom jinja template: the spec names chat families",
    "eval_sequence_len": "a validation length apart from sequence_len",
    "relora_steps": "ReLoRA", "gptq": "GPTQ base weights", "adapter_name": "named adapters",
    "base_model_config": "a config apart from base_model",
}


def adapter(ctx: Context, key: str, value: Any) -> None:
    if value in ("lora", "qlora"):
        ctx.map(key, "/method", value)
    else:
        ctx.refuse(key, f"{value!r}: the spec has lora, qlora and full (no adapter)")


def load_in_4bit(ctx: Context, key: str, value: Any) -> None:
    if not value:
        ctx.drop(key, "off: a 16/32-bit base, as jessy's lora and full")
    elif ctx.source.get("adapter") == "qlora":
        ctx.drop(key, "the 4-bit base adapter: qlora means")
    else:
        ctx.refuse(key, "a 4-bit base without adapter: qlora: the spec's qlora is both")


def lora_target_modules(ctx: Context, key: str, value: Any) -> None:
    if ctx.source.get("lora_target_linear"):
        ctx.drop(key, "lora_target_linear: true adds every linear layer anyway")
    elif isinstance(value, list) and value and all(v in PROJECTIONS for v in value):
        ctx.map(key, "/lora/target_modules",
                "all-linear" if set(value) == set(PROJECTIONS) else list(value))
    else:
        ctx.refuse(key, f"{value!r}: the spec names projections among {', '.join(PROJECTIONS)}")


def lora_target_linear(ctx: Context, key: str, value: Any) -> None:
    if value:
        ctx.map(key, "/lora/target_modules", "all-linear")
    else:
        ctx.drop(key, "off: lora_target_modules decides")


def precision(flag: str) -> Any:
    def apply(ctx: Context, key: str, value: Any) -> None:
        if value is True:
            ctx.map(key, "/training/precision", flag)
        elif value == "auto":
            ctx.map(key, "/training/precision", "auto")
        else:
            ctx.drop(key, f"{flag} off")

    return apply


def flash_attention(ctx: Context, key: str, value: Any) -> None:
    if value:
        ctx.map(key, "/model/attn_implementation", "flash_attention_2")
    else:
        ctx.drop(key, "off")


def sdp_attention(ctx: Context, key: str, value: Any) -> None:
    if value:
        ctx.map(key, "/model/attn_implementation", "sdpa")
    else:
        ctx.drop(key, "off")


def sample_packing(ctx: Context, key: str, value: Any) -> None:
    """Axolotl keeps packed rows apart only under a named attention (flash, SDPA, eager, flex:
    its `attn_decontaminates_packing`); with none it warns of cross-contamination, a training
    the spec's packing (rows never attend to each other) does not describe."""
    src = ctx.source
    named = (src.get("attn_implementation") in ("flash_attention_2", "sdpa", "eager",
                                                 "flex_attention")
             or any(src.get(k) for k in ("flash_attention", "sdp_attention", "flex_attention",
                                         "eager_attention")))
    if not value:
        ctx.map(key, "/training/packing", False)
    elif named:
        ctx.map(key, "/training/packing", True)
    else:
        ctx.refuse(key, "sample_packing with no attention named: Axolotl then lets the packed "
                        "rows attend to each other (it warns of cross-contamination); name one "
                        "(flash_attention: true, sdp_attention: true) or turn packing off")


def special_tokens(ctx: Context, key: str, value: Any) -> None:
    if value is None:
        ctx.drop(key, "empty or off: not used")
    elif isinstance(value, dict) and set(value) <= {"pad_token"}:
        ctx.drop(key, "the pad token: padding is masked out of the loss")
    else:
        ctx.refuse(key, "added or replaced special tokens (other than pad_token): not in "
                        "the spec")


def _dataset_shape(ctx: Context, key: str, block: Any) -> tuple[str, str | None, dict] | None:
    if not isinstance(block, dict) or "path" not in block:
        ctx.refuse(key, "expected a list of entries with a path")
        return None
    unknown = sorted(set(block) - DATASET_KEYS)
    if unknown:
        ctx.refuse(key, f"dataset keys jessy does not read: {', '.join(unknown)}")
        return None
    if block.get("roles_to_train", ["assistant"]) != ["assistant"] or block.get(
            "train_on_eos", "turn") != "turn":
        ctx.refuse(key, "roles_to_train/train_on_eos other than [assistant]/turn: jessy trains "
                        "each assistant turn and its end")
        return None
    if "chat_template" in block and block["chat_template"] != "jinja":
        ctx.notes.append(f"{key}: chat_template {block['chat_template']!r} in the dataset entry: "
                         "the spec's model.chat_template decides (auto: the tokenizer's)")
    kind = block.get("type")
    if isinstance(kind, dict):  # a user-defined format: the local rows say their shape
        return block["path"], None, {}
    if kind not in DATASET_TYPES:
        ctx.refuse(key, f"dataset type {kind!r}: the spec reads {', '.join(DATASET_TYPES)}")
        return None
    fmt, fields = DATASET_TYPES[kind], {}
    if fmt == "messages":
        roles = block.get("message_property_mappings", {"role": "role", "content": "content"})
        messages = block.get("field_messages", "messages")
        if roles == {"role": "from", "content": "value"}:
            fmt, fields = "sharegpt", {"conversations": messages}
        elif roles == {"role": "role", "content": "content"}:
            fields = {"messages": messages}
        else:
            ctx.refuse(key, f"message_property_mappings {roles}: not a shape the spec reads")
            return None
    elif fmt == "text":
        fields = {"text": block.get("field", "text")}
    return block["path"], fmt, fields


def datasets(ctx: Context, key: str, value: Any) -> None:
    shapes = [_dataset_shape(ctx, key, b) for b in (value if isinstance(value, list) else [value])]
    if any(s is None for s in shapes):
        return
    if len({(fmt, str(fields)) for _, fmt, fields in shapes}) > 1:
        ctx.refuse(key, "datasets of different row shapes: the spec mixes files of one format")
        return
    paths = [path for path, _, _ in shapes]
    set_data(ctx, key, paths[0] if len(paths) == 1 else paths, shapes[0][1], shapes[0][2])
    if _alpaca_prompt(value):
        ctx.map(key, "/model/chat_template", ALPACA)
        ctx.notes.append(f"{key}: Axolotl renders these rows as the classic Alpaca prompt (its "
                         "AlpacaPrompter): model.chat_template alpaca, the same text on every "
                         "backend")


def _alpaca_prompt(datasets_value: Any) -> bool:
    """Axolotl's `type: alpaca`, or a user-defined type with the Alpaca prompt's format
    strings (what jessy's translation writes for chat_template alpaca)."""
    blocks = datasets_value if isinstance(datasets_value, list) else [datasets_value]
    fmt = turn_format(ALPACA, "")
    return bool(blocks) and all(
        isinstance(b, dict) and (b.get("type") == "alpaca" or (
            isinstance(b.get("type"), dict) and b["type"].get("format") == fmt["prompt"]
            and b["type"].get("system_format") == fmt["system"])) for b in blocks)


def chat_template(ctx: Context, key: str, value: Any) -> None:
    """Axolotl applies `chat_template` to chat_template datasets only."""
    if _alpaca_prompt(ctx.source.get("datasets")):
        ctx.drop(key, "Axolotl applies it to chat_template datasets; this file's are rendered "
                      "as the Alpaca prompt (model.chat_template alpaca)")
    else:
        choice("/model/chat_template", TEMPLATES, "chat_template")(ctx, key, value)


def test_datasets(ctx: Context, key: str, value: Any) -> None:
    blocks = value if isinstance(value, list) else [value]
    if len(blocks) != 1 or not isinstance(blocks[0], dict) or "path" not in blocks[0]:
        ctx.refuse(key, "the spec has one validation file")
    else:
        ctx.map(key, "/data/validation", blocks[0]["path"])
        ctx.map(key, "/data/validation_split", 0.0)


MAPPED = {
    "base_model": model_reference,
    "adapter": adapter,
    "load_in_4bit": load_in_4bit,
    "sequence_len": to_path("/model/max_seq_length", int),
    "lora_r": to_path("/lora/r", int),
    "lora_alpha": to_path("/lora/alpha"),
    "lora_dropout": to_path("/lora/dropout"),
    "lora_target_modules": lora_target_modules,
    "lora_target_linear": lora_target_linear,
    "peft_layers_to_transform": to_path("/lora/layers", sorted),
    "peft_use_rslora": to_path("/lora/use_rslora", bool),
    "datasets": datasets,
    "test_datasets": test_datasets,
    "val_set_size": to_path("/data/validation_split"),
    "micro_batch_size": to_path("/training/batch_size", int),
    "gradient_accumulation_steps": to_path("/training/gradient_accumulation_steps", int),
    "num_epochs": to_path("/training/epochs"),
    "max_steps": to_path("/training/max_steps", int),
    "learning_rate": to_path("/training/learning_rate"),
    "lr_scheduler": choice("/training/lr_scheduler", SCHEDULERS, "lr_scheduler"),
    "warmup_steps": to_path("/training/warmup_steps", int),
    "warmup_ratio": to_path("/training/warmup_ratio", zero_is_none),
    "weight_decay": to_path("/training/weight_decay"),
    "max_grad_norm": to_path("/training/max_grad_norm", zero_is_none),
    "optimizer": choice("/training/optimizer", OPTIMIZERS, "optimizer"),
    "seed": to_path("/training/seed", int),
    "gradient_checkpointing": to_path("/training/gradient_checkpointing", bool),
    "bf16": precision("bf16"),
    "fp16": precision("fp16"),
    "train_on_inputs": to_path("/data/train_on_responses_only", inverted),
    "logging_steps": to_path("/training/logging_steps", int),
    "eval_steps": to_path("/training/eval_steps", int),
    "save_steps": to_path("/training/save_steps", int),
    "chat_template": chat_template,
    "flash_attention": flash_attention,
    "sdp_attention": sdp_attention,
    "attn_implementation": choice("/model/attn_implementation", ATTENTION,
                                  "attn_implementation"),
    "trust_remote_code": to_path("/model/trust_remote_code", bool),
    "special_tokens": special_tokens,
    "tf32": only(False, "TF32 matmuls off, as jessy writes them",
                 "TF32 matmuls round float32 products to a 10-bit mantissa: not in the spec "
                 "(jessy writes tf32: false)"),
    "gradient_checkpointing_kwargs": only({"use_reentrant": False},
                                          "how checkpointing recomputes: the same gradients",
                                          "checkpointing options other than use_reentrant: "
                                          "false: not in the spec"),
    "sample_packing": sample_packing,
    "train_on_eos": only("turn", "each turn's end is trained, as every jessy backend does",
                         "jessy trains each assistant turn's end"),
}


def finish(ctx: Context) -> None:
    resolve_warmup(ctx)
    if "learning_rate" not in ctx.source:
        ctx.refuse("learning_rate", "absent: Axolotl needs one; the file gives none")
    if "datasets" not in ctx.source and ctx.data_path:
        set_data(ctx, "--data", ctx.data_path, None, {})
    full_has_no_lora(ctx)
