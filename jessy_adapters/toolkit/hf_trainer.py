"""What the backends built on transformers' Trainer share: spec -> Trainer arguments in
their translations, and the Trainer's output folder -> jessy's adapter or model.

Unsloth, LLaMA-Factory, Axolotl (and the example plugin) all end in transformers' Trainer, so
the optimisation fields, the evaluation and saving schedule, the optimizer checks and the
precision decision mean the same thing there; each backend maps the results onto its own key
names. Their output folder has one layout too: `checkpoint-N/` folders and the final adapter
(or, for `method: full`, the whole model), where `HFTrainerBackend` says.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from .. import failures
from ..backend import Availability, Backend, Refusal, RunInputs
from ..devices import nvidia_gpu, torch_threads_env
from ..failures import Failure, last_error_line
from ..schedule import Schedule
from ..templates import trained_turn_end
from .adapters import copy_peft_adapter
from .checkpoints import OUTPUT_DIR, hf_checkpoint_as_peft
from .full_model import copy_hf_model

SCHEDULERS = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}
"""The spec's lr_scheduler -> the Trainer's lr_scheduler_type (constant keeps the warmup)."""


def training_arguments(t: dict, names: dict[str, str | None] | None = None) -> dict:
    """The spec's `training` fields every Trainer reads alike, as Trainer arguments: batch
    size, accumulation, LR and its scheduler, weight decay, gradient clipping (none = 0, off),
    the seed of the weights and of the data order, the logging interval. `names` maps an
    argument to the key a backend spells it with (Axolotl: micro_batch_size), or to None to
    leave it out."""
    out = {"per_device_train_batch_size": t["batch_size"],
           "gradient_accumulation_steps": t["gradient_accumulation_steps"],
           "learning_rate": t["learning_rate"],
           "lr_scheduler_type": SCHEDULERS[t["lr_scheduler"]],
           "weight_decay": t["weight_decay"],
           "max_grad_norm": t["max_grad_norm"] if t["max_grad_norm"] is not None else 0.0,
           "seed": t["seed"], "data_seed": t["seed"],
           "logging_steps": t["logging_steps"]}
    names = names or {}
    return {names.get(k, k): v for k, v in out.items() if names.get(k, k) is not None}


def schedule_arguments(schedule: Schedule) -> dict:
    """The core's schedule as Trainer arguments: the update count itself (never epochs, which
    each backend rounds its own way), warmup in updates, validation before the first update
    and every `eval_every` updates (the last is added by jessy's callback), saving, and NaN
    losses passed through (the Trainer's default filter hides them from jessy's guard)."""
    out: dict = {"max_steps": schedule.optimizer_steps, "warmup_steps": schedule.warmup_steps,
                 "logging_nan_inf_filter": False}
    if schedule.eval_every is not None:
        out.update(eval_strategy="steps", eval_steps=schedule.eval_every, eval_on_start=True)
    else:
        out["eval_strategy"] = "no"
    if schedule.save_every:
        out.update(save_strategy="steps", save_steps=schedule.save_every)
    else:
        out["save_strategy"] = "no"
    return out


def reporting_arguments(spec, carried: dict[str, str]) -> dict:
    """tracking.report_to as the Trainer's `report_to` ("none" when empty) and, when any is
    asked, its `project` (trackio's); wandb's project and mlflow's experiment come from the
    environment (tracking.reporting_env), which also keeps every reporter offline."""
    from .tracking import project, settings

    carried["/tracking/report_to"] = "report_to (offline, files in the attempt folder)"
    carried["/tracking/project"] = "project (trackio), WANDB_PROJECT, MLFLOW_EXPERIMENT_NAME"
    asked = settings(spec)["report_to"]
    return {"report_to": asked, "project": project(spec)} if asked else {"report_to": "none"}


def observer_env(spec, inputs) -> dict[str, str]:
    """What jessy's batch observer (runtime/hf_events.py) needs inside the backend."""
    turn_end = trained_turn_end(spec, inputs)
    return {"JESSY_TURN_END": turn_end} if turn_end else {}


def optimizer(t: dict, names: dict[str, str], on_gpu: bool, refusals: list[Refusal],
              notes: list[str]) -> str:
    """The backend's optimizer name; adamw_8bit needs CUDA (bitsandbytes), so CPU gets AdamW."""
    if t["optimizer"] == "adam" and t["weight_decay"]:
        refusals.append(Refusal("/training/weight_decay",
                                "optimizer adam has no weight decay; use adamw"))
    if t["optimizer"] == "adamw_8bit" and not on_gpu:
        notes.append("adamw_8bit on CPU: bitsandbytes' 8-bit optimizer needs CUDA; using "
                     "adamw_torch")
        return names["adamw"]
    return names[t["optimizer"]]


def attention_refusal(attn: str, on_gpu: bool, refusals: list[Refusal]) -> None:
    """FlashAttention-2 is a CUDA kernel: on a CPU the Trainer would start and then crash."""
    if attn == "flash_attention_2" and not on_gpu:
        refusals.append(Refusal("/model/attn_implementation",
                                "flash_attention_2 needs a CUDA GPU"))


def uncounted_packing(t: dict, on_gpu: bool, packer: str, cpu_reason: str,
                       refusals: list[Refusal], notes: list[str]) -> None:
    """training.packing through a packer whose sequence count jessy's schedule cannot know
    before the run (TRL's, Axolotl's multipack): translated on a CUDA GPU with the updates
    given as max_steps; refused otherwise, with why."""
    if not on_gpu:
        refusals.append(Refusal("/training/packing", cpu_reason))
    if t["max_steps"] is None:
        refusals.append(Refusal("/training/packing", f"{packer} packs rows into a number of "
                                "sequences jessy cannot count before the run, so epochs cannot "
                                "become updates; set training.max_steps"))
    notes.append(f"packing: {packer} (not run by jessy's tests: no GPU there)")


def precision(m: dict, t: dict, on_gpu: bool, refusals: list[Refusal], cpu_reason: str) -> str:
    """"bf16", "fp16", "fp32" or "auto" (the model's dtype decides where precision is auto);
    half precision without a GPU is refused with the backend's own reason."""
    chosen = t["precision"] if t["precision"] != "auto" else {
        "bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(m["dtype"], "auto")
    if chosen in ("bf16", "fp16") and not on_gpu:
        # name the field the user set: an "auto" precision took it from model.dtype
        where = "/training/precision" if t["precision"] != "auto" else "/model/dtype"
        refusals.append(Refusal(where, f"{chosen} on CPU: {cpu_reason}"))
    return chosen


def normalise_output(output_dir: Path, spec, inputs: RunInputs, adapter_dir: Path,
                     saved_adapter: str = "", saved_model: str = "") -> dict:
    """A Trainer's final output as the run's: the PEFT adapter it saved in
    output_dir/saved_adapter, pointed at the model jessy resolved; for `method: full` the
    whole model in output_dir/saved_model, as a plain Hugging Face folder ("" = output_dir
    itself, where Trainer.save_model writes)."""
    if spec["method"] == "full":
        return copy_hf_model(output_dir / saved_model, adapter_dir, inputs.model_path)
    return copy_peft_adapter(output_dir / saved_adapter, adapter_dir, inputs.model_path)


class HFTrainerBackend(Backend):
    """What backends built on transformers' Trainer share: CUDA or CPU, the torch thread
    default, the Trainer's output folder as the run's adapter or model, HF checkpoints as PEFT
    adapters, and classification by their own error patterns."""

    output_dir: ClassVar[str] = OUTPUT_DIR
    """The Trainer's output_dir, relative to the attempt folder: where its `checkpoint-N/`
    folders are (resume, continue_on_fallback) and what `normalise` reads."""
    saved_adapter: ClassVar[str] = ""
    """Where in output_dir the trainer saves the final adapter ("": output_dir itself)."""
    saved_model: ClassVar[str] = ""
    """Where in output_dir the trainer saves the whole model for `method: full`."""

    unavailable_errors: ClassVar[re.Pattern | None] = None
    data_errors: ClassVar[re.Pattern | None] = None
    config_errors: ClassVar[re.Pattern | None] = None
    cpu_note: ClassVar[str] = "ready on CPU (fp32)"
    """What `jessy backends` says when there is no GPU."""

    def check(self, env, require_accelerator: bool = False) -> Availability:
        gpu = nvidia_gpu()
        device = "cuda" if gpu else "cpu"
        if not env.exists():
            return Availability(False, f"environment missing: run `jessy env create {self.name}`",
                                device)
        if require_accelerator and not gpu:
            return Availability(False, "accelerator required, but no NVIDIA GPU found (no "
                                       "/proc/driver/nvidia/version, no nvidia-smi)", device)
        return Availability(True, f"ready ({gpu})" if gpu else self.cpu_note, device)

    def launch_environment(self, env) -> dict[str, str]:
        return torch_threads_env()

    def normalise(self, attempt_dir: Path, spec, inputs: RunInputs, adapter_dir: Path) -> dict:
        return normalise_output(attempt_dir / self.output_dir, spec, inputs, adapter_dir,
                                self.saved_adapter, self.saved_model)

    def checkpoint_as_peft(self, attempt_dir: Path, out_dir: Path) -> Path | None:
        return hf_checkpoint_as_peft(attempt_dir, self.output_dir)

    def classify(self, returncode: int, log_tail: str) -> Failure:
        line = last_error_line(log_tail)
        for kind, pattern in ((failures.UNAVAILABLE, self.unavailable_errors),
                              (failures.DATA_ERROR, self.data_errors),
                              (failures.CONFIG_REJECTED, self.config_errors)):
            if pattern is not None and pattern.search(log_tail):
                return Failure(kind, line)
        return super().classify(returncode, log_tail)
