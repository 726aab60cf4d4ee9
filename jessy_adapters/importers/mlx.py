"""mlx-lm's LoRA YAML (`mlx_lm.lora --config`) -> a spec, meaning converted.

mlx-lm counts iters, steps_per_report, steps_per_eval and save_every in micro-batches and
updates every grad_accumulation_steps; `scale` is alpha / r; num_layers is "the last N
blocks" (16 when absent); without lr_schedule the LR is constant; there is no gradient
clipping; its defaults (CONFIG_DEFAULTS in mlx_lm/lora.py) are Adam, seed 0, LR 1e-5 and an
unmasked prompt. Keys prefixed jessy_ are the ones jessy's own MLX translation adds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..schedule import Schedule
from .common import (
    Context,
    Converter,
    choice,
    full_has_no_lora,
    last_layers,
    model_reference,
    number,
    only,
    set_data,
    to_path,
)

LABEL = "mlx-lm"


def recognise(data: dict) -> bool:
    return "model" in data and any(k in data for k in ("iters", "fine_tune_type",
                                                       "lora_parameters"))


DEFAULTS = {
    "/model/max_seq_length": (2048, "max_seq_length's default"),
    "/method": ("lora", "fine_tune_type's default"),
    "/lora/r": (8, "lora_parameters.rank's default"),
    "/lora/alpha": (160.0, "lora_parameters.scale's default 20 x rank 8"),
    "/lora/dropout": (0.0, "lora_parameters.dropout's default"),
    "/lora/target_modules": ("all-linear", "mlx-lm's default keys: every linear layer"),
    "/training/batch_size": (4, "batch_size's default"),
    "/training/gradient_accumulation_steps": (1, "grad_accumulation_steps' default"),
    "/training/learning_rate": (1e-5, "learning_rate's default"),
    "/training/lr_scheduler": ("constant", "no lr_schedule: a constant LR"),
    "/training/warmup_steps": (0, "no lr_schedule: no warmup"),
    "/training/max_grad_norm": (None, "mlx-lm does not clip gradients"),
    "/training/optimizer": ("adam", "optimizer's default"),
    "/training/weight_decay": (0.0, "Adam has none"),
    "/training/seed": (0, "seed's default"),
    "/training/gradient_checkpointing": (False, "grad_checkpoint's default"),
    "/data/validation_split": (0.0, "mlx-lm validates on valid.jsonl"),
    "/data/train_on_responses_only": (False, "mask_prompt's default"),
}
COUNTED_IN_ITERATIONS = {"iters": ("/training/max_steps", 1000),
                         "steps_per_report": ("/training/logging_steps", 10),
                         "steps_per_eval": ("/training/eval_steps", 200),
                         "save_every": ("/training/save_steps", 100)}
"""Keys counted in micro-batches -> spec paths counted in updates (and mlx-lm's defaults)."""
ADAMW_WEIGHT_DECAY = 0.01  # mlx.optimizers.AdamW's default
ADAM_BETAS, ADAM_EPS = [0.9, 0.999], 1e-8  # what the spec's optimizers mean (PyTorch's)
DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
MODULES = {f"self_attn.{p}": p for p in ("q_proj", "k_proj", "v_proj", "o_proj")} | {
    f"mlp.{p}": p for p in ("gate_proj", "up_proj", "down_proj")}

DROPPED = {
    "adapter_path": "where the adapter goes; jessy writes runs/<id>/adapter",
    "val_batches": "how much of the validation set is measured (jessy measures all of it)",
    "test": "a test-set evaluation after training", "test_batches": "test-set evaluation",
    "report_to": "experiment tracking", "project_name": "experiment tracking",
    "wandb": "experiment tracking", "clear_cache_threshold": "memory cache housekeeping",
    "config": "the config file's own path",
    "jessy_updates_per_epoch": "jessy's progress bookkeeping",
    "jessy_turn_end": "the end-of-turn token jessy trains on every backend",
    "jessy_chat_template": "jessy's rendering of the model's template (chat_template stays "
                           "auto; set it by name if the template was not the tokenizer's)",
}

REFUSED = {
    "resume_adapter_file": "resuming: use jessy run --resume",
    "hf_dataset": "a hub dataset: give a local JSONL copy with --data",
    "jessy_init_peft_adapter": "training on from an adapter: jessy's continue_on_fallback only",
    "prompt_feature": "a prompt column name: set data.fields.prompt",
    "completion_feature": "a completion column name: set data.fields.response",
}


def fine_tune_type(ctx: Context, key: str, value: Any) -> None:
    if value in ("lora", "full"):
        ctx.map(key, "/method", "qlora" if value == "lora" and "jessy_quantize" in ctx.source
                else value)
    else:
        ctx.refuse(key, f"{value!r}: the spec has lora, qlora and full")


def lora_parameters(ctx: Context, key: str, value: Any) -> None:
    if not isinstance(value, dict) or set(value) - {"rank", "scale", "dropout", "keys"}:
        ctx.refuse(key, "expected rank, scale, dropout and keys")
        return
    keys = value.get("keys")
    if keys is not None and not (isinstance(keys, list) and keys and set(keys) <= set(MODULES)):
        ctx.refuse(f"{key}.keys", f"{keys!r}: the spec names projections among "
                                  f"{', '.join(MODULES)}")
        return
    rank = value.get("rank", DEFAULTS["/lora/r"][0])
    ctx.map(f"{key}.rank", "/lora/r", rank)
    if "scale" in value:  # scale = alpha / r (an rsLoRA scale is the same scale)
        ctx.map(f"{key}.scale", "/lora/alpha", number(value["scale"]) * rank)
    else:
        ctx.default("/lora/alpha", 20.0 * rank, "lora_parameters.scale's default 20 x rank")
    if "dropout" in value:
        ctx.map(f"{key}.dropout", "/lora/dropout", number(value["dropout"]))
    if keys is not None:
        named = [MODULES[k] for k in keys]
        ctx.map(f"{key}.keys", "/lora/target_modules",
                "all-linear" if set(named) == set(MODULES.values()) else named)


def optimizer_config(ctx: Context, key: str, value: Any) -> None:
    chosen = ctx.source.get("optimizer", "adam")
    options = value.get(chosen, {}) if isinstance(value, dict) else None
    if not isinstance(options, dict) or set(options) - {"betas", "eps", "weight_decay",
                                                         "bias_correction"}:
        ctx.refuse(key, f"options for {chosen}: the spec has weight_decay only")
        return
    if (list(options.get("betas", ADAM_BETAS)) != ADAM_BETAS
            or number(options.get("eps", ADAM_EPS)) != ADAM_EPS):
        ctx.refuse(key, f"betas/eps other than {ADAM_BETAS}/{ADAM_EPS}: not in the spec")
    elif options.get("bias_correction") is False:
        ctx.refuse(key, "bias_correction: false: jessy's MLX Adam corrects the bias, as PyTorch")
    elif "weight_decay" in options:
        ctx.map(key, "/training/weight_decay", number(options["weight_decay"]))
    else:
        ctx.drop(key, f"{chosen}'s own defaults")


def counted_in_iterations(ctx: Context, key: str, value: Any) -> None:
    """Converted in finish(), which knows grad_accumulation_steps."""


def lr_table(ctx: Context, key: str, value: Any) -> None:
    """jessy's per-update LR table -> the scheduler and warmup that produce it."""
    found = schedule_of(value, number(ctx.source.get("learning_rate", 1e-5)))
    if found is None:
        ctx.refuse(key, "an LR table no constant/linear/cosine schedule with warmup produces")
    else:
        ctx.map(key, "/training/lr_scheduler", found[0])
        ctx.map(key, "/training/warmup_steps", found[1])


def schedule_of(table: list, lr: float) -> tuple[str, int] | None:
    if not isinstance(table, list) or not table:
        return None
    # the first update at the full LR ends the warmup; none: every update warms up, and the
    # scheduler never acts (constant is as good as any)
    warmup = next((i for i, x in enumerate(table) if math.isclose(x, lr, rel_tol=1e-9)),
                  len(table))
    for name in ("constant", "linear", "cosine"):
        expected = Schedule(len(table), warmup, 0, 0, 0.0, lr, name, None, None).learning_rates()
        if all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)
               for a, b in zip(expected, table, strict=True)):
            return name, warmup
    return None


DECAYS = {"cosine_decay": "cosine", "linear_schedule": "linear"}
"""mlx.optimizers schedules the spec's schedulers equal: (name, arguments) -> scheduler."""


def lr_schedule(ctx: Context, key: str, value: Any) -> None:
    """mlx-lm's {name, arguments, warmup} -> lr_scheduler, when it is the spec's: from
    learning_rate to 0 over exactly the run's updates (cosine_decay(lr, steps, 0),
    linear_schedule(lr, 0, steps)), without warmup: mlx-lm joins the decay to its warmup one
    update late (join_schedules at warmup + 1), which no spec warmup reproduces."""
    if value is None:
        ctx.drop(key, "empty or off: not used")
        return
    name = value.get("name") if isinstance(value, dict) else None
    args = [number(a) for a in value.get("arguments", [])] if name else []
    if name == "cosine_decay":
        args += [0.0] * (3 - len(args))
        lr, steps, end = args[:3]
    elif name == "linear_schedule" and len(args) == 3:
        lr, end, steps = args
    else:
        ctx.refuse(key, f"{name!r}: the spec's schedulers are mlx's {', '.join(DECAYS)}")
        return
    accum = int(ctx.source.get("grad_accumulation_steps", 1))
    updates = int(ctx.source.get("iters", COUNTED_IN_ITERATIONS["iters"][1])) // accum
    learning_rate = number(ctx.source.get("learning_rate", DEFAULTS["/training/learning_rate"][0]))
    problems = [why for bad, why in (
        (value.get("warmup", 0), "a warmup (mlx-lm starts the decay one update after it)"),
        (end, f"an end LR of {end} (the spec decays to 0)"),
        (steps != updates, f"{steps} decay steps for {updates} updates"),
        (lr != learning_rate, f"an initial LR {lr} apart from learning_rate {learning_rate}"))
        if bad]
    if problems:
        ctx.refuse(key, "the spec's scheduler cannot say " + "; ".join(problems))
    else:
        ctx.map(key, "/training/lr_scheduler", DECAYS[name])


def eval_updates(ctx: Context, key: str, value: Any) -> None:
    per_epoch = ctx.source.get("jessy_updates_per_epoch")
    every = value[1] - value[0] if isinstance(value, list) and len(value) > 1 else None
    ctx.map(key, "/training/eval_steps", None if every in (None, per_epoch) else every)


def quantize(ctx: Context, key: str, value: Any) -> None:
    if value == {"bits": 4, "group_size": 64}:
        ctx.map(key, "/method", "qlora")
    else:
        ctx.refuse(key, f"{value!r}: the spec's qlora is 4-bit, group 64 on MLX")


def data_folder(ctx: Context, key: str, value: Any) -> None:
    """mlx-lm reads train.jsonl and valid.jsonl from a folder."""
    folder = Path(str(value))
    if not folder.is_absolute():
        folder = ctx.native_path.parent / folder
    train = folder / "train.jsonl"
    fmt = "text" if "text_feature" in ctx.source else None
    set_data(ctx, key, str(train) if train.is_file() else str(value), fmt, {})
    if not ctx.data_path and (folder / "valid.jsonl").is_file():
        ctx.map(key, "/data/validation", str(folder / "valid.jsonl"))


def feature(field_name: str) -> Converter:
    """chat_feature/text_feature: the column mlx-lm reads -> data.fields."""

    def apply(ctx: Context, key: str, value: Any) -> None:
        if value == field_name:
            ctx.drop(key, f"the column name the spec reads anyway ({field_name})")
        else:
            ctx.map(key, f"/data/fields/{field_name}", value)

    return apply


def num_layers(ctx: Context, key: str, value: Any) -> None:
    last_layers(ctx, key, int(value))


MAPPED = {
    "model": model_reference,
    "train": only(True, "training: what jessy does", "this config does not train"),
    "training_mode": only("normal", "supervised training: what jessy does",
                          "jessy trains supervised fine-tuning only"),
    "fine_tune_type": fine_tune_type,
    "optimizer": choice("/training/optimizer", {n: n for n in ("adam", "adamw", "sgd")},
                        "optimizer"),
    "optimizer_config": optimizer_config,
    "data": data_folder,
    "chat_feature": feature("messages"),
    "text_feature": feature("text"),
    "seed": to_path("/training/seed", int),
    "num_layers": num_layers,
    "batch_size": to_path("/training/batch_size", int),
    "grad_accumulation_steps": to_path("/training/gradient_accumulation_steps", int),
    "learning_rate": to_path("/training/learning_rate"),
    "max_seq_length": to_path("/model/max_seq_length", int),
    "grad_checkpoint": to_path("/training/gradient_checkpointing", bool),
    "mask_prompt": to_path("/data/train_on_responses_only", bool),
    "trust_remote_code": to_path("/model/trust_remote_code", bool),
    "lora_parameters": lora_parameters,
    **{key: counted_in_iterations for key in COUNTED_IN_ITERATIONS},
    "lr_schedule": lr_schedule,
    "jessy_lr_table": lr_table,
    "jessy_eval_updates": eval_updates,
    "jessy_max_grad_norm": to_path("/training/max_grad_norm"),
    "jessy_dtype": choice("/training/precision", DTYPES, "jessy_dtype"),
    "jessy_quantize": quantize,
}


def finish(ctx: Context) -> None:
    accum = ctx.get("/training/gradient_accumulation_steps")
    iters = int(ctx.source.get("iters", COUNTED_IN_ITERATIONS["iters"][1]))
    for key, (path, default) in COUNTED_IN_ITERATIONS.items():
        if key == "steps_per_eval" and "jessy_eval_updates" in ctx.source:
            ctx.drop(key, "mlx-lm's own validation, off: jessy_eval_updates says when jessy "
                          "validates")
            continue
        micro = int(ctx.source.get(key, default))
        updates = max(1, micro // accum)
        if key == "save_every" and micro >= iters:
            updates = None  # saved at the end only
        if key in ctx.source:
            ctx.map(key, path, updates)
        else:
            ctx.default(path, updates, f"{key}'s default {default} micro-batches / {accum}")
    if "num_layers" not in ctx.source:
        last_layers(ctx, "num_layers (absent: mlx-lm's default, the last 16)", 16)
    if ctx.get("/method") == "full" and ctx.get("/lora/layers", "all") != "all":
        ctx.mapped = [m for m in ctx.mapped if m[0] != "num_layers"]
        ctx.refuse("num_layers", "a full fine-tune of the last blocks only: the spec's full "
                                 "trains every block (use -1)")
    if ctx.get("/training/optimizer") == "adamw" and "optimizer_config" not in ctx.source:
        ctx.default("/training/weight_decay", ADAMW_WEIGHT_DECAY, "mlx's AdamW default")
    if "bias_correction" not in str(ctx.source.get("optimizer_config")):
        ctx.notes.append("mlx-lm's Adam/AdamW default to bias_correction false; the spec's "
                         "optimizers correct the bias (PyTorch's rule), so early updates are "
                         "smaller than this file's would be")
    if "data" not in ctx.source and ctx.data_path:
        set_data(ctx, "--data", ctx.data_path, None, {})
    full_has_no_lora(ctx)
