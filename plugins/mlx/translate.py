"""Spec -> mlx-lm LoRA config, converting meaning rather than renaming keys.

mlx-lm counts `iters` in micro-batches and updates every `grad_accumulation_steps`; its LoRA
uses `scale` where PEFT uses alpha/r; `num_layers` defaults to the *last 16* blocks; it has
no gradient clipping and no epochs. Keys prefixed `jessy_` are read by train_entry.py (our
runner inside the MLX environment), never by mlx-lm itself.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from jessy_adapters.backend import Refusal, RunInputs
from jessy_adapters.schedule import run_schedule
from jessy_adapters.templates import (
    family_refusal,
    template_summary,
    trained_turn_end,
    training_template,
)
from jessy_adapters.toolkit.checkpoints import check_init_adapter
from jessy_adapters.toolkit.layers import adapted_layers, model_layer_count
from jessy_adapters.toolkit.scaleout import single_process_only
from jessy_adapters.toolkit.tracking import project, settings

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.AdamW's defaults, as the HF Trainer's
REPORTERS = ("wandb",)
"""tracking.report_to entries mlx-lm reports to itself (mlx_lm.tuner.callbacks: wandb and
swanlab), wrapped by train_entry.py around jessy's events callback."""


def module_key(short: str) -> str:
    return f"self_attn.{short}" if short in ATTENTION else f"mlp.{short}"


def latest_checkpoint(adapter_dir: Path) -> tuple[int, Path | None]:
    """The newest `NNNNNNN_adapters.safetensors` mlx-lm saved, with its iteration."""
    best: tuple[int, Path | None] = (0, None)
    for path in adapter_dir.glob("*_adapters.safetensors"):
        head = path.name.split("_", 1)[0]
        if head.isdigit() and int(head) > best[0]:
            best = (int(head), path)
    return best


def translate_config(spec, inputs: RunInputs, adapter_dir: str) -> tuple[dict, list[Refusal],
                                                                          list[str], dict]:
    """Return (native config, refusals, notes, carried) without touching the disk."""
    m, t, lora = spec["model"], spec["training"], spec["lora"]
    refusals: list[Refusal] = []
    notes: list[str] = []
    carried: dict[str, str] = {}
    single_process_only(spec, "mlx", refusals, carried)
    accum = t["gradient_accumulation_steps"]

    cfg: dict = {
        "model": inputs.model_path,
        "train": True,
        "data": str(inputs.data.train.parent),
        "adapter_path": adapter_dir,
        "seed": t["seed"],
        "batch_size": t["batch_size"],
        "grad_accumulation_steps": accum,
        "max_seq_length": m["max_seq_length"],
        "grad_checkpoint": t["gradient_checkpointing"],
        "mask_prompt": spec["data"]["train_on_responses_only"],
        "learning_rate": t["learning_rate"],
        "val_batches": -1,
        "trust_remote_code": m["trust_remote_code"],
    }
    carried.update({"/model/name_or_path": "model", "/training/seed": "seed",
                    "/training/batch_size": "batch_size",
                    "/training/gradient_accumulation_steps": "grad_accumulation_steps",
                    "/model/max_seq_length": "max_seq_length",
                    "/training/gradient_checkpointing": "grad_checkpoint",
                    "/data/train_on_responses_only": "mask_prompt",
                    "/model/trust_remote_code": "trust_remote_code"})
    if inputs.data.format == "text":
        cfg["text_feature"] = "text"
        if spec["data"]["train_on_responses_only"]:
            cfg["mask_prompt"] = False
            notes.append("text rows have no prompt to mask: train_on_responses_only ignored")
    else:
        cfg["chat_feature"] = "messages"

    schedule = run_schedule(spec, inputs)
    total, done = schedule.optimizer_steps, 0
    cfg["iters"] = total * accum
    if inputs.resume_from is not None:
        checkpoint_iteration, checkpoint = latest_checkpoint(inputs.resume_from / "adapters")
        if checkpoint is None:
            refusals.append(Refusal("/training/save_steps",
                                    f"no MLX checkpoint in {inputs.resume_from} to resume "
                                    "from; set training.save_steps so runs leave some"))
        else:
            cfg["resume_adapter_file"] = str(checkpoint)
            done = min(total - 1, checkpoint_iteration // accum)
            cfg["iters"] = (total - done) * accum
            notes.append(f"resuming from {checkpoint.name} (update {done}): mlx-lm restores "
                         "the adapter weights only; the optimizer state restarts, the LR "
                         f"schedule continues at update {done + 1}")
    if t["packing"]:
        refusals.append(Refusal("/training/packing", "mlx-lm has no packing: its trainer pads "
                                "each row of a batch to the longest (mlx_lm/tuner/trainer.py "
                                "iterate_batches), and its models' forward takes no attention "
                                "mask or positions that would keep packed rows apart "
                                "(models/llama.py: Model(inputs, cache, input_embeddings))"))
    carried["/training/packing"] = "refused when true (mlx-lm pads rows, never packs them)"
    carried["/training/epochs"] = "iters (= the core's optimizer steps * accumulation)"
    carried["/training/max_steps"] = "iters (= max_steps * grad_accumulation_steps)"
    cfg["jessy_lr_table"] = schedule.learning_rates()[done:]
    cfg["jessy_eval_updates"] = [u - done for u in schedule.eval_updates() if u >= done]
    cfg["jessy_updates_per_epoch"] = schedule.updates_per_epoch
    cfg["steps_per_report"] = t["logging_steps"] * accum
    cfg["steps_per_eval"] = cfg["iters"] + 1  # jessy measures validation loss (train_entry)
    cfg["save_every"] = (t["save_steps"] * accum) if t["save_steps"] else cfg["iters"]
    carried.update({"/training/logging_steps": "steps_per_report (x accumulation)",
                    "/training/eval_steps": "jessy_eval_updates (the core's eval points)",
                    "/training/save_steps": "save_every (x accumulation)"})

    carried["/training/lr_scheduler"] = "jessy_lr_table (the core's LR of every update)"
    carried["/training/warmup_steps"] = "jessy_lr_table"
    carried["/training/warmup_ratio"] = "jessy_lr_table (the core's schedule)"
    carried["/training/learning_rate"] = "jessy_lr_table"

    opt = t["optimizer"]
    if opt == "adamw_8bit":
        notes.append("adamw_8bit: MLX has no 8-bit optimizer states; using adamw (same update "
                     "rule, more optimizer memory), as Unsloth does on CPU")
        opt = "adamw"
    if opt == "adam" and t["weight_decay"]:
        refusals.append(Refusal("/training/weight_decay",
                                "optimizer adam has no weight decay; use adamw"))
    cfg["optimizer"] = opt
    # PyTorch's Adam/AdamW (what the HF Trainer runs) always correct the moment estimates;
    # MLX's default to bias_correction=False, which makes early updates 3-6x larger.
    adam = {"betas": list(ADAM_BETAS), "eps": ADAM_EPS, "bias_correction": True}
    cfg["optimizer_config"] = {"adamw": {**adam, "weight_decay": t["weight_decay"]},
                               "adam": adam, "sgd": {}}[opt]
    cfg["optimizer_config"] = {opt: cfg["optimizer_config"]}
    carried["/training/optimizer"] = "optimizer"
    carried["/training/weight_decay"] = "optimizer_config.<opt>.weight_decay"
    if t["max_grad_norm"] is not None:
        cfg["jessy_max_grad_norm"] = t["max_grad_norm"]
    carried["/training/max_grad_norm"] = "jessy_max_grad_norm (clip_grad_norm before update)"

    dtype = DTYPES.get(t["precision"]) or (m["dtype"] if m["dtype"] != "auto" else None)
    if (t["precision"] != "auto" and m["dtype"] != "auto"
            and DTYPES[t["precision"]] != m["dtype"]):
        refusals.append(Refusal("/training/precision",
                                f"MLX trains in one dtype: precision {t['precision']} conflicts "
                                f"with model.dtype {m['dtype']}"))
    if dtype:
        cfg["jessy_dtype"] = dtype
    carried["/training/precision"] = "jessy_dtype (model.set_dtype)"
    carried["/model/dtype"] = "jessy_dtype (model.set_dtype)"

    template = training_template(inputs.model_path, m["chat_template"])
    if template:
        cfg["jessy_chat_template"] = template
    refusal = family_refusal(inputs.model_path, m["chat_template"])
    if refusal:
        refusals.append(refusal)
    turn_end = trained_turn_end(spec, inputs)
    if turn_end:
        cfg["jessy_turn_end"] = turn_end
    carried["/model/chat_template"] = ("jessy_chat_template: " if template else "") + \
        template_summary(inputs.model_path, m["chat_template"])
    if m["attn_implementation"] not in ("auto", "eager", "sdpa"):
        refusals.append(Refusal("/model/attn_implementation",
                                f"{m['attn_implementation']} is a CUDA kernel; MLX uses its own "
                                "attention"))
    elif m["attn_implementation"] != "auto":
        notes.append(f"attn_implementation {m['attn_implementation']}: MLX computes exact "
                     "attention with its own kernel (Gemma-2 soft-capping included)")
    carried["/model/attn_implementation"] = "n/a (MLX's own exact attention)"

    method = spec["method"]
    if method == "full":
        cfg["fine_tune_type"] = "full"
        notes.append("full on MLX: mlx-lm trains every transformer block; the token "
                     "embeddings, the final norm and an untied LM head stay frozen (mlx-lm's "
                     "choice); the HF backends train those too")
    else:
        cfg["fine_tune_type"] = "lora"
        if method == "qlora":
            cfg["jessy_quantize"] = {"bits": 4, "group_size": 64}
            notes.append("qlora: base weights quantised to 4-bit (MLX affine, group 64) in "
                         "process; NF4 is a bitsandbytes format MLX does not have")
            if sys.platform != "darwin":
                notes.append("qlora on MLX's CPU backend is slow: SmolLM2-135M took 47 s/step "
                             "vs 3.6 s/step for LoRA here (benchmarks/throughput.py); on a "
                             "CPU, method: lora is faster if the model fits")
    carried["/method"] = "fine_tune_type lora | full (+ jessy_quantize for qlora)"

    r = lora["r"]
    scale = lora["alpha"] / (math.sqrt(r) if lora["use_rslora"] else r)
    cfg["lora_parameters"] = {"rank": r, "scale": scale, "dropout": lora["dropout"]}
    carried["/lora/r"] = "lora_parameters.rank"
    carried["/lora/alpha"] = "lora_parameters.scale = alpha / r"
    carried["/lora/use_rslora"] = "lora_parameters.scale = alpha / sqrt(r)"
    carried["/lora/dropout"] = "lora_parameters.dropout"
    if lora["target_modules"] != "all-linear":
        cfg["lora_parameters"]["keys"] = [module_key(x) for x in lora["target_modules"]]
    carried["/lora/target_modules"] = "lora_parameters.keys (self_attn.* / mlp.*)"

    init = check_init_adapter(inputs.init_adapter, spec, refusals, notes)
    if init is not None:
        cfg["jessy_init_peft_adapter"] = str(init)

    n_layers = model_layer_count(inputs.model_path)
    wanted = adapted_layers(lora["layers"], inputs.model_path, refusals)
    if wanted == "all":
        cfg["num_layers"] = -1
    elif wanted is not None:
        if n_layers is None:
            refusals.append(Refusal("/lora/layers", "cannot read the model's layer count"))
        elif wanted != list(range(n_layers - len(wanted), n_layers)):
            refusals.append(Refusal("/lora/layers",
                                    f"MLX adapts only the last N of the {n_layers} blocks; "
                                    f"{wanted} is not such a tail"))
        else:
            cfg["num_layers"] = len(wanted)
    carried["/lora/layers"] = "num_layers (-1 = all; a tail of N blocks = N)"
    _reporting(spec, cfg, refusals, carried)
    return cfg, refusals, notes, carried


def _reporting(spec, cfg: dict, refusals: list[Refusal], carried: dict[str, str]) -> None:
    """tracking.report_to as mlx-lm's own `report_to` and `project_name`."""
    asked = settings(spec)["report_to"]
    other = [r for r in asked if r not in REPORTERS]
    if other:
        refusals.append(Refusal("/tracking/report_to",
                                f"mlx-lm reports to wandb and swanlab only, not "
                                f"{', '.join(other)}; tracking.tensorboard gives MLX runs "
                                "TensorBoard files written by jessy"))
    if asked:
        cfg["report_to"] = ",".join(r for r in asked if r in REPORTERS)
        cfg["project_name"] = project(spec)
    carried["/tracking/report_to"] = ("report_to (mlx-lm's wandb reporter, offline, files in "
                                      "the attempt folder); mlflow, trackio refused")
    carried["/tracking/project"] = "project_name"
