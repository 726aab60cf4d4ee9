"""Spec -> Hugging Face Trainer arguments shared by the HF-based backends' translations.

LLaMA-Factory and Axolotl both end in transformers' Trainer, so the evaluation and saving
schedule, the optimizer checks and the precision decision mean the same thing there; each
backend maps the results onto its own key names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from . import failures
from .backend import Availability, Backend, Refusal
from .checkpoints import hf_checkpoint_as_peft
from .devices import nvidia_gpu, torch_threads_env
from .failures import Failure, last_error_line
from .schedule import Schedule
from .templates import trained_turn_end


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


def precision(m: dict, t: dict, on_gpu: bool, refusals: list[Refusal], cpu_reason: str) -> str:
    """"bf16", "fp16", "fp32" or "auto" (the model's dtype decides where precision is auto);
    half precision without a GPU is refused with the backend's own reason."""
    chosen = t["precision"] if t["precision"] != "auto" else {
        "bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(m["dtype"], "auto")
    if chosen in ("bf16", "fp16") and not on_gpu:
        refusals.append(Refusal("/training/precision", f"{chosen} on CPU: {cpu_reason}"))
    return chosen


class HFTrainerBackend(Backend):
    """What backends built on transformers' Trainer share: CUDA or CPU, the torch thread
    default, HF checkpoints as PEFT adapters, and classification by their own error patterns."""

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

    def checkpoint_as_peft(self, attempt_dir: Path, out_dir: Path) -> Path | None:
        return hf_checkpoint_as_peft(attempt_dir)

    def classify(self, returncode: int, log_tail: str) -> Failure:
        line = last_error_line(log_tail)
        for kind, pattern in ((failures.UNAVAILABLE, self.unavailable_errors),
                              (failures.DATA_ERROR, self.data_errors),
                              (failures.CONFIG_REJECTED, self.config_errors)):
            if pattern is not None and pattern.search(log_tail):
                return Failure(kind, line)
        return super().classify(returncode, log_tail)
