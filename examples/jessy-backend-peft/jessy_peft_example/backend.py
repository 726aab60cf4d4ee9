"""What jessy sees of this backend: availability, the spec -> native config translation, and
the outputs as a PEFT adapter (or, for `method: full`, a Hugging Face model folder).

The backend declares `environment = "jessy"`: its command runs with jessy's own interpreter
(sys.executable), so there is no venv to build, and `check` looks for torch, transformers
and peft beside jessy instead, without importing them.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

from jessy_adapters import (
    OFFLINE_ENV,
    Availability,
    Refusal,
    RunInputs,
    Translation,
    TranslationRefused,
    run_schedule,
)
from jessy_adapters.devices import nvidia_gpu
from jessy_adapters.templates import family_refusal, template_summary, training_template
from jessy_adapters.toolkit.checkpoints import check_init_adapter, hf_resume
from jessy_adapters.toolkit.hf_trainer import (
    HFTrainerBackend,
    attention_refusal,
    observer_env,
    optimizer,
    precision,
    reporting_arguments,
    schedule_arguments,
    training_arguments,
)
from jessy_adapters.toolkit.layers import adapted_layers
from jessy_adapters.toolkit.scaleout import single_process_only
from jessy_adapters.toolkit.tracking import reporting_env

NAME = "peft-example"
TRAIN = Path(__file__).resolve().with_name("train.py")
CONFIG = "peft_example.json"
LIBRARIES = ("torch", "transformers", "peft")

OPTIMIZERS = {"adamw": "adamw_torch", "adam": "adamw_torch", "adamw_8bit": "adamw_bnb_8bit",
              "sgd": "sgd"}

_DATA = re.compile(r"JSONDecodeError|KeyError: 'messages'|KeyError: 'text'",
                   re.I)
_CONFIG = re.compile(r"Unrecognized model|Can't load tokenizer|does not appear to have a file "
                     r"named|is not a local folder|not a valid model identifier|not supported|"
                     r"needs bitsandbytes|Target modules .* not found", re.I)


def translate_config(spec, inputs: RunInputs, attempt_dir: Path, output_dir: str, on_gpu: bool
                     ) -> tuple[dict, list[Refusal], list[str], dict[str, str]]:
    """The native config (JSON, one section per library call train.py makes), the refusals,
    notes, and where each spec field went; `output_dir` is the Trainer's, relative to
    attempt_dir (where jessy's checkpoint helpers look)."""
    m, t, lora, d = spec["model"], spec["training"], spec["lora"], spec["data"]
    refusals: list[Refusal] = []
    notes: list[str] = []
    carried: dict[str, str] = {}
    method = spec["method"]
    single_process_only(spec, NAME, refusals, carried)

    chosen = precision(m, t, on_gpu, refusals, "half-precision training needs a GPU here")
    dtype = m["dtype"] if m["dtype"] != "auto" else {"bf16": "bfloat16",
                                                     "fp16": "float16"}.get(chosen)
    if dtype is None and not on_gpu:
        dtype = "float32"
        notes.append("CPU: training in float32 (precision auto)")
    attn = None if m["attn_implementation"] == "auto" else m["attn_implementation"]
    attention_refusal(m["attn_implementation"], on_gpu, refusals)
    refusal = family_refusal(inputs.model_path, m["chat_template"])
    if refusal:
        refusals.append(refusal)
    model = {"path": inputs.model_path, "dtype": dtype or "auto",
             "trust_remote_code": m["trust_remote_code"], "attn_implementation": attn,
             "max_seq_length": m["max_seq_length"], "load_in_4bit": method == "qlora",
             "chat_template": training_template(inputs.model_path, m["chat_template"])}
    if method == "qlora":
        notes.append("qlora: the base model is loaded in 4-bit NF4 through bitsandbytes, "
                     "which must be installed beside jessy (pip install bitsandbytes)")
    carried.update({
        "/model/name_or_path": "model.path (AutoModelForCausalLM.from_pretrained)",
        "/model/max_seq_length": "model.max_seq_length (rows cut there)",
        "/model/dtype": "model.dtype",
        "/model/trust_remote_code": "model.trust_remote_code",
        "/model/attn_implementation": "model.attn_implementation",
        "/model/chat_template": "tokenizer.chat_template: "
                                + template_summary(inputs.model_path, m["chat_template"]),
        "/method": "peft LoRA; qlora: BitsAndBytesConfig(load_in_4bit); full: no PEFT",
        "/data/train_on_responses_only": "labels: every assistant turn only (else all tokens)",
    })

    peft = None
    if method != "full":
        peft = {"r": lora["r"], "lora_alpha": lora["alpha"], "lora_dropout": lora["dropout"],
                "target_modules": lora["target_modules"], "use_rslora": lora["use_rslora"],
                "bias": "none", "task_type": "CAUSAL_LM"}
        layers = adapted_layers(lora["layers"], inputs.model_path, refusals)
        if layers not in ("all", None):
            peft["layers_to_transform"] = layers
        carried.update({"/lora/r": "peft.r", "/lora/alpha": "peft.lora_alpha",
                        "/lora/dropout": "peft.lora_dropout",
                        "/lora/target_modules": "peft.target_modules (all-linear: PEFT's, "
                                                "every linear layer but the output head)",
                        "/lora/layers": "peft.layers_to_transform",
                        "/lora/use_rslora": "peft.use_rslora"})
    else:
        notes.append("full fine-tuning: the run's output is a whole model (model/)")

    schedule = run_schedule(spec, inputs)
    args = {"output_dir": str(attempt_dir / output_dir),
            **training_arguments(t),
            "per_device_eval_batch_size": t["batch_size"],
            "optim": optimizer(t, OPTIMIZERS, on_gpu, refusals, notes),
            "logging_strategy": "steps",
            **schedule_arguments(schedule),
            "bf16": chosen == "bf16", "fp16": chosen == "fp16",
            **reporting_arguments(spec, carried), "remove_unused_columns": False,
            "prediction_loss_only": True, "disable_tqdm": True, "use_cpu": not on_gpu}
    if t["gradient_checkpointing"]:  # only when on: newer transformers renamed the argument
        args.update(gradient_checkpointing=True,
                    gradient_checkpointing_kwargs={"use_reentrant": False})
    carried.update({
        "/training/epochs": "args.max_steps (the core's schedule)",
        "/training/max_steps": "args.max_steps",
        "/training/batch_size": "args.per_device_train_batch_size",
        "/training/gradient_accumulation_steps": "args.gradient_accumulation_steps",
        "/training/learning_rate": "args.learning_rate",
        "/training/lr_scheduler": "args.lr_scheduler_type",
        "/training/warmup_steps": "args.warmup_steps",
        "/training/warmup_ratio": "args.warmup_steps (the core's schedule)",
        "/training/weight_decay": "args.weight_decay",
        "/training/max_grad_norm": "args.max_grad_norm (0 = off)",
        "/training/optimizer": "args.optim",
        "/training/seed": "args.seed, args.data_seed",
        "/training/gradient_checkpointing": "args.gradient_checkpointing",
        "/training/precision": "model.dtype, args.bf16/fp16",
        "/training/logging_steps": "args.logging_steps",
        "/training/eval_steps": "args.eval_strategy/eval_steps",
        "/training/save_steps": "args.save_strategy/save_steps",
        "/training/packing": "refused when true (rows are padded, never packed)"})
    if t["packing"]:
        refusals.append(Refusal("/training/packing", "this example pads each batch of rows and "
                                "has no packing (no block-diagonal attention mask)"))

    data = {"train": str(inputs.data.train),
            "validation": str(inputs.data.validation) if inputs.data.validation else None,
            "format": inputs.data.format,
            "train_on_responses_only": d["train_on_responses_only"]
            and inputs.data.format != "text"}
    init = check_init_adapter(inputs.init_adapter, spec, refusals, notes)
    checkpoint = hf_resume(inputs.resume_from, refusals, notes, output_dir)
    cfg = {"model": model, "peft": peft, "args": args, "data": data,
           "init_adapter": str(init) if init else None, "resume_from_checkpoint": checkpoint,
           "total_steps": schedule.optimizer_steps}
    return cfg, refusals, notes, carried


class PeftExampleBackend(HFTrainerBackend):
    """HFTrainerBackend brings the torch thread default, the Trainer's output folder as the
    run's adapter or model, HF checkpoints as PEFT adapters and classification by the patterns
    below; `check` is this backend's own."""

    name = NAME
    description = "transformers Trainer + PEFT LoRA in jessy's own environment (an example)"
    environment = "jessy"
    requirements = ()  # nothing to install: jessy's `hf` extra is the environment
    data_errors = _DATA
    config_errors = _CONFIG
    saved_adapter, saved_model = "adapter", "model"  # where train.py saves them

    def check(self, env, require_accelerator: bool = False) -> Availability:
        gpu = nvidia_gpu()
        device = "cuda" if gpu else "cpu"
        missing = [lib for lib in LIBRARIES if importlib.util.find_spec(lib) is None]
        if missing:
            return Availability(False, f"{', '.join(missing)} not installed beside jessy "
                                       f"({sys.executable}): pip install 'jessy-adapters[hf]'",
                                device)
        if require_accelerator and not gpu:
            return Availability(False, "accelerator required, but no NVIDIA GPU found", device)
        return Availability(True, f"ready in jessy's environment ({gpu or 'CPU, fp32'})",
                            device)

    def translate(self, spec, inputs: RunInputs, attempt_dir: Path, env) -> Translation:
        cfg, refusals, notes, carried = translate_config(
            spec, inputs, attempt_dir, self.output_dir, nvidia_gpu() is not None)
        if refusals:
            raise TranslationRefused(self.name, refusals)
        return Translation(
            files={CONFIG: json.dumps(cfg, indent=2)},
            command=[sys.executable, str(TRAIN), str(attempt_dir / CONFIG)],
            env={**OFFLINE_ENV, **observer_env(spec, inputs), **reporting_env(spec, attempt_dir)},
            notes=notes, carried=carried, total_steps=cfg["total_steps"])
