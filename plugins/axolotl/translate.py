"""Spec -> Axolotl's YAML (the file `axolotl train` reads), its dataset, and launcher flags.

Meaning, not names: single-turn rows use a user-defined dataset `type:` block whose format
strings are the model's own chat format (templates.turn_format), with the turn's closing
marker appended to the response (Axolotl adds EOS only when it differs); multi-turn rows, the
families in ROWS marked chat_template, or an unknown format use Axolotl's `chat_template` type
with the template jessy renders (templates.training_template) or the tokenizer's. On CPU Axolotl
needs bf16/fp16 written out as false (`auto` turns fp16 on) and its four Triton LoRA kernels
off (they are hard-coded to CUDA). Axolotl silently drops unknown keys and accepts lr = -1, so
jessy's schema is the strict layer; Axolotl's own validate_config checks the rest (tests).
"""

from __future__ import annotations

import json
from pathlib import Path

from jessy_adapters.backend import Refusal, RunInputs
from jessy_adapters.schedule import run_schedule
from jessy_adapters.templates import (
    ALPACA,
    chat_family,
    default_system_prompt,
    eos_token,
    family_refusal,
    renders_dates,
    single_turn_formats,
    template_summary,
    training_template,
    turn_format,
)
from jessy_adapters.toolkit import hf_trainer
from jessy_adapters.toolkit.checkpoints import check_init_adapter, hf_resume
from jessy_adapters.toolkit.layers import adapted_layers
from jessy_adapters.toolkit.scaleout import (
    RESOURCE_FIELDS,
    deepspeed_config,
    offload_refusals,
    torchrun_args,
    world_size,
)
from jessy_adapters.toolkit.tracking import project, settings

NAMES = {"per_device_train_batch_size": "micro_batch_size", "lr_scheduler_type": "lr_scheduler",
         "data_seed": None}
"""Trainer arguments Axolotl spells its own way; it is given no data_seed (with none, the
Trainer seeds the data order with `seed`)."""
OPTIMIZERS = {"adamw": "adamw_torch", "adamw_8bit": "adamw_bnb_8bit", "adam": "adamw_torch",
              "sgd": "sgd"}
ATTENTION = {"eager": "eager", "sdpa": "sdpa", "flash_attention_2": "flash_attention_2"}
CPU_KERNELS_OFF = ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel",
                   "lora_embedding_kernel")
JESSY_PLUGIN = "jessy_axolotl_plugin.JessyPlugin"
"""An Axolotl plugin (plugins/axolotl/runtime/) that adds jessy's metrics callback."""
ROWS = {"chatml": "format", "qwen2": "format", "qwen3": "format", "llama3": "format",
        "gemma": "format", "gemma3": "format", "mistral": "format", "phi3": "chat_template",
        ALPACA: "format"}
"""Chat family -> how single-turn rows reach Axolotl: jessy's format strings, or Axolotl's
chat_template type, which tokenizes the whole conversation at once. Axolotl tokenizes a format
row's prompt and response apart: exact for byte-level BPE, for Gemma's SentencePiece (no
prefix space) and for Mistral's (its response starts with a space anyway); Phi-3's
SentencePiece tokenizer would put a space before a response tokenized on its own. Alpaca's
prompt is Axolotl's own `type: alpaca` text (its AlpacaPrompter), BOS included where the
tokenizer writes one, as Axolotl tokenizes a format row's prompt."""


def _rows(path: Path):
    with path.open() as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _single_turn(messages: list[dict]) -> tuple[str, str, str] | None:
    """(system, prompt, response) when the row is one exchange, else None."""
    system = ""
    rest = messages
    if rest and rest[0]["role"] == "system":
        system, rest = rest[0]["content"], rest[1:]
    if len(rest) == 2 and rest[0]["role"] == "user" and rest[1]["role"] == "assistant":
        return system, rest[0]["content"], rest[1]["content"]
    return None


def flat_rows(path: Path, fmt: dict, default_system: str | None) -> list[dict] | None:
    """Prepared chat rows as instruction/output rows for the user-defined type; None when a
    row has more than one exchange (those go through chat_template instead). Rows without a
    system turn get the one the tokenizer's template would add, if any."""
    out = []
    for row in _rows(path):
        turn = _single_turn(row["messages"])
        if turn is None:
            return None
        system, prompt, response = turn
        system = system or default_system or ""
        if fmt.get("fold") and system:  # no system role: the system text opens the user turn
            prompt, system = fmt["system"].format(system=system) + prompt, ""
        # ends at the end-of-turn token: what the template writes after it is never trained
        # and, the model being causal, cannot change a trained token's loss (the parity
        # contract compares rows up to their last trained token for that reason)
        out.append({"system": system, "instruction": prompt,
                    "output": fmt.get("lead", "") + response + fmt["end"]})
    return out


def end_of_turn_training(model_path: str, end: str | None) -> dict:
    """How chat_template rows train the end of a turn: each assistant turn's end-of-turn token
    (top-level `eot_tokens`), and the EOS token only when it is that token (Phi-3's template
    writes <|endoftext|> after <|end|>, which no backend trains)."""
    if end is None:
        return {"train_on_eos": "turn"}
    eos = eos_token(model_path)
    return {"train_on_eot": "turn", "train_on_eos": "turn" if eos in (None, end) else "none"}


def dataset_block(file: str, fmt: dict | None, flat: bool, text: bool,
                  template: str | None = None, turn_end: dict | None = None) -> dict:
    """Axolotl's dataset entry; `fmt` the family's turn format, `template` the jinja jessy
    renders chat_template rows with (None: the tokenizer's own), `turn_end` their
    end_of_turn_training."""
    if text:
        return {"path": file, "ds_type": "json", "type": "completion", "field": "text"}
    if flat and fmt:
        return {"path": file, "ds_type": "json", "type": {
            "field_system": "system", "field_instruction": "instruction",
            "field_output": "output", "format": fmt["prompt"], "no_input_format": fmt["prompt"],
            "system_format": "{system}" if fmt.get("fold") else fmt["system"]}}
    block = {"path": file, "ds_type": "json", "type": "chat_template",
             "field_messages": "messages", "message_property_mappings":
                 {"role": "role", "content": "content"},
             "roles_to_train": ["assistant"], **(turn_end or {"train_on_eos": "turn"})}
    if template:
        block.update(chat_template="jinja", chat_template_jinja=template)
    return block


def decoder_layer_class(model_path: str) -> str | None:
    cfg = Path(model_path) / "config.json"
    if not cfg.is_file():
        return None
    arch = (json.loads(cfg.read_text()).get("architectures") or [""])[0]
    return arch.replace("ForCausalLM", "DecoderLayer") if arch.endswith("ForCausalLM") else None


def packing_keys(t: dict, attn: str | None, on_gpu: bool, refusals: list[Refusal],
                 notes: list[str]) -> dict:
    """training.packing as Axolotl's sample_packing (its multipack sampler), on a CUDA GPU only.
    Axolotl keeps packed rows apart under flash attention, or under SDPA/eager by dropping the
    attention mask so transformers builds a block-diagonal one from the restarting position
    ids (utils/schemas/config.py `attn_decontaminates_packing`, core/builders/causal.py); with
    no attention named it warns of cross-contamination, so SDPA is named. jessy's tests have
    not run that path on a CPU. The multipack sampler forms its own bins each epoch, which
    jessy's schedule cannot count before the run: the updates must be given."""
    hf_trainer.uncounted_packing(
        t, on_gpu, "Axolotl's multipack sampler (its own bins each epoch)",
        "jessy translates Axolotl's sample_packing on a CUDA GPU only: on a CPU its packed rows "
        "would be kept apart only by SDPA with the attention mask dropped (transformers' "
        "packed-sequence mask from the position ids), a path jessy's tests have not verified",
        refusals, notes)
    keys = {"sample_packing": True, "eval_sample_packing": True, "pad_to_sequence_len": True}
    if attn is None:
        keys["attn_implementation"] = "sdpa"
        notes.append("packing: attn_implementation sdpa (Axolotl keeps packed rows apart only "
                     "under a named attention: flash, SDPA or eager)")
    return keys


def translate_config(spec, inputs: RunInputs, attempt_dir: Path, output_dir: str, on_gpu: bool):
    """Return (config, data files, launcher flags, refusals, notes, carried, total steps);
    `output_dir` is the Trainer's, relative to attempt_dir (where checkpoints are)."""
    m, t, lora, d, res = (spec["model"], spec["training"], spec["lora"], spec["data"],
                          spec["resources"])
    refusals: list[Refusal] = []
    notes: list[str] = []
    carried: dict[str, str] = {}
    method = spec["method"]
    text = inputs.data.format == "text"
    choice = m["chat_template"]
    family = chat_family(inputs.model_path, choice)
    refusal = family_refusal(inputs.model_path, choice)
    if refusal:
        refusals.append(refusal)
    # The template may add a default system prompt to rows without one (SmolLM2, Qwen2.5 do):
    # the flat rows carry it. Llama-3.1's template adds dates to the system turn, which format
    # strings cannot know: Axolotl's chat_template type renders those rows with the template.
    format_rows = ROWS.get(family) == "format" and not renders_dates(inputs.model_path, choice)
    default_system = default_system_prompt(inputs.model_path, choice)
    template = training_template(inputs.model_path, choice)
    fmt = turn_format(family, inputs.model_path) if family in single_turn_formats() else None
    end = fmt["end"] if fmt else None
    turn_end = end_of_turn_training(inputs.model_path, end)
    files: dict[str, str] = {}

    def dataset(path: Path, name: str) -> dict:
        flat = flat_rows(path, fmt, default_system) if format_rows and not text else None
        if flat is None:
            return dataset_block(str(path), fmt, False, text, template, turn_end)
        files[f"data/{name}.jsonl"] = "".join(json.dumps(r) + "\n" for r in flat)
        return dataset_block(str(attempt_dir / "data" / f"{name}.jsonl"), fmt, True, text)

    train_block = dataset(inputs.data.train, "axolotl_train")
    rows_by_template = train_block["type"] == "chat_template"
    rows_note = f"datasets[].type format strings ({family})"
    if rows_by_template:
        rows_note = "datasets[].type chat_template, " + template_summary(inputs.model_path,
                                                                          choice)
        notes.append(f"Axolotl renders the rows itself ({rows_note}): several exchanges, or a "
                     "format jessy's format strings cannot write exactly")
    elif text:
        rows_note = "n/a: text rows (completion type)"
    cfg: dict = {
        "base_model": inputs.model_path,
        "trust_remote_code": m["trust_remote_code"],
        "sequence_len": m["max_seq_length"],
        "datasets": [train_block],
        "dataset_prepared_path": str(attempt_dir / "prepared"),
        "dataset_num_proc": 1,
        "dataloader_num_workers": 0,
        "output_dir": str(attempt_dir / output_dir),
        "train_on_inputs": not d["train_on_responses_only"],
        **hf_trainer.training_arguments(t, NAMES),
        "gradient_checkpointing": t["gradient_checkpointing"],
        "include_tokens_per_second": True,  # -> include_num_input_tokens_seen: tokens/s
        "include_tkps": False,
        "save_safetensors": True,
        "plugins": [JESSY_PLUGIN],
    }
    if rows_by_template and end:
        cfg["eot_tokens"] = [end]  # trained, like every backend's end of turn
    schedule = run_schedule(spec, inputs)
    if inputs.data.validation:
        cfg["test_datasets"] = [dataset(inputs.data.validation, "axolotl_valid")]
    cfg["val_set_size"] = 0.0  # jessy splits; Axolotl's own split stays off
    # Axolotl sets eval_on_start itself when eval_steps is given, and knows no
    # logging_nan_inf_filter key: jessy's Axolotl plugin turns that filter off
    cfg.update({k: v for k, v in hf_trainer.schedule_arguments(schedule).items()
                if k not in ("eval_on_start", "logging_nan_inf_filter")})
    cfg["optimizer"] = hf_trainer.optimizer(t, OPTIMIZERS, on_gpu, refusals, notes)
    precision = hf_trainer.precision(m, t, on_gpu, refusals, "Axolotl's fp16 needs a GPU "
                                     "and bf16 ran ~40x slower than fp32 here")
    if precision == "auto":
        precision = "bf16" if on_gpu else "fp32"
    cfg["bf16"] = precision == "bf16"  # written out: Axolotl's `auto` turns fp16 on
    cfg["fp16"] = precision == "fp16"
    cfg["tf32"] = False
    if not on_gpu:
        cfg.update({k: False for k in CPU_KERNELS_OFF})
        notes.append("CPU: Axolotl's Triton LoRA kernels off (they are hard-coded to CUDA)")
    hf_trainer.attention_refusal(m["attn_implementation"], on_gpu, refusals)
    if m["attn_implementation"] != "auto":
        cfg["attn_implementation"] = ATTENTION[m["attn_implementation"]]
    elif family == "gemma" and not on_gpu:
        cfg["attn_implementation"] = "eager"  # SDPA ignores Gemma-2's logit soft-capping
        notes.append("Gemma on CPU: eager attention (SDPA ignores logit soft-capping)")
    if t["packing"]:
        cfg.update(packing_keys(t, cfg.get("attn_implementation"), on_gpu, refusals, notes))

    if method != "full":  # Axolotl fine-tunes every weight when no `adapter` is set
        cfg["adapter"] = "qlora" if method == "qlora" else "lora"
        if method == "qlora":
            cfg["load_in_4bit"] = True
        cfg["lora_r"] = lora["r"]
        cfg["lora_alpha"] = lora["alpha"]
        cfg["lora_dropout"] = lora["dropout"]
        cfg["peft_use_rslora"] = lora["use_rslora"]
        if lora["target_modules"] == "all-linear":
            cfg["lora_target_linear"] = True
        else:
            cfg["lora_target_modules"] = list(lora["target_modules"])
        layers = adapted_layers(lora["layers"], inputs.model_path, refusals)
        if layers not in ("all", None):
            cfg["peft_layers_to_transform"] = layers

    launcher = _scale_out(cfg, res, inputs.model_path, on_gpu, refusals, notes, files,
                          attempt_dir)

    carried.update({
        "/model/name_or_path": "base_model",
        "/model/chat_template": rows_note,
        "/model/max_seq_length": "sequence_len", "/model/dtype": "bf16/fp16 (written out)",
        "/model/trust_remote_code": "trust_remote_code",
        "/model/attn_implementation": "attn_implementation",
        "/data/train_on_responses_only": "train_on_inputs (inverted)",
        "/method": "adapter: lora | qlora (+ load_in_4bit); none for full",
        "/lora/r": "lora_r", "/lora/alpha": "lora_alpha (same meaning)",
        "/lora/dropout": "lora_dropout",
        "/lora/target_modules": "lora_target_modules / lora_target_linear",
        "/lora/layers": "peft_layers_to_transform", "/lora/use_rslora": "peft_use_rslora",
        "/training/epochs": "max_steps (the core's schedule)", "/training/max_steps": "max_steps",
        "/training/batch_size": "micro_batch_size",
        "/training/gradient_accumulation_steps": "gradient_accumulation_steps",
        "/training/learning_rate": "learning_rate", "/training/lr_scheduler": "lr_scheduler",
        "/training/warmup_steps": "warmup_steps",
        "/training/warmup_ratio": "warmup_steps (the core's schedule)",
        "/training/weight_decay": "weight_decay",
        "/training/max_grad_norm": "max_grad_norm (0 = off)", "/training/optimizer": "optimizer",
        "/training/seed": "seed", "/training/gradient_checkpointing": "gradient_checkpointing",
        "/training/precision": "bf16/fp16", "/training/logging_steps": "logging_steps",
        "/training/eval_steps": "eval_strategy/eval_steps",
        "/training/save_steps": "save_strategy/save_steps",
        "/training/packing": "sample_packing (multipack) on a CUDA GPU; refused on CPU"})
    carried.update({p: "launcher flags, fsdp_config / deepspeed JSON" for p in RESOURCE_FIELDS})

    init = check_init_adapter(inputs.init_adapter, spec, refusals, notes)
    if init is not None:
        cfg["lora_model_dir"] = str(init)  # Axolotl loads this adapter and trains it on
    checkpoint = hf_resume(inputs.resume_from, refusals, notes, output_dir)
    if checkpoint:
        cfg["resume_from_checkpoint"] = checkpoint
    _reporting(spec, attempt_dir, cfg, carried)
    return cfg, files, launcher, refusals, notes, carried, schedule.optimizer_steps


def _reporting(spec, attempt_dir: Path, cfg: dict, carried: dict[str, str]) -> None:
    """tracking.report_to as Axolotl's own switches (its integrations schema: use_wandb,
    use_mlflow, use_trackio, from which it builds the Trainer's report_to) and project keys;
    wandb offline, mlflow's file store in the attempt folder (tracking.reporting_env)."""
    asked, name = settings(spec)["report_to"], project(spec)
    if "wandb" in asked:
        cfg.update(use_wandb=True, wandb_project=name, wandb_mode="offline")
    if "mlflow" in asked:
        cfg.update(use_mlflow=True, mlflow_experiment_name=name,
                   mlflow_tracking_uri=(attempt_dir / "mlruns").as_uri())
    if "trackio" in asked:
        cfg.update(use_trackio=True, trackio_project_name=name)
    carried["/tracking/report_to"] = "use_wandb (wandb_mode: offline) / use_mlflow / use_trackio"
    carried["/tracking/project"] = "wandb_project / mlflow_experiment_name / trackio_project_name"


def _scale_out(cfg: dict, res: dict, model_path: str, on_gpu: bool, refusals: list[Refusal],
               notes: list[str], files: dict[str, str], attempt_dir: Path) -> list[str]:
    """Launcher flags (`axolotl train CFG --launcher ... -- FLAGS`) and engine configs."""
    offload_refusals(res, refusals)
    if res["strategy"] == "fsdp2":
        layer = decoder_layer_class(model_path)
        if layer is None:
            refusals.append(Refusal("/resources/strategy", "fsdp2 needs the model's decoder "
                                    "layer class (config.json architectures)"))
        cfg["fsdp_version"] = 2
        cfg["fsdp_config"] = {
            "offload_params": res["offload"] == "optimizer_and_params",
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "transformer_layer_cls_to_wrap": layer or "",
            "state_dict_type": "FULL_STATE_DICT",
            "reshard_after_forward": True,
            "cpu_ram_efficient_loading": False}
    elif res["strategy"] == "deepspeed":
        if not on_gpu:
            refusals.append(Refusal("/resources/strategy", "DeepSpeed needs CUDA GPUs (its CPU "
                                    "accelerator needs Intel's oneCCL bindings); use ddp"))
        files["deepspeed.json"] = json.dumps(deepspeed_config(res), indent=2)
        cfg["deepspeed"] = str(attempt_dir / "deepspeed.json")
    if world_size(res) == 1 and res["strategy"] == "ddp":
        return ["--launcher", "python"]
    if not on_gpu:
        # Axolotl 0.19 maps rank N to device index N whenever there are several processes;
        # without CUDA transformers then fails ("Cannot access accelerator device"). A CPU-only
        # max_memory makes Axolotl compute a device map that is all CPU.
        cfg["max_memory"] = {"cpu": "1024GiB"}
        notes.append(f"{world_size(res)} CPU processes (gloo): tests the multi-process path; "
                     "it is not faster than one process on a CPU")
    return ["--launcher", "torchrun", "--", *torchrun_args(res, refusals)]
