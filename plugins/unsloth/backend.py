"""The Unsloth backend: what jessy's core sees of Unsloth."""

from __future__ import annotations

import json
import re
from pathlib import Path

from jessy_adapters.backend import (
    OFFLINE_ENV,
    RunInputs,
    Translation,
    TranslationRefused,
    read_requirements,
)
from jessy_adapters.devices import nvidia_gpu
from jessy_adapters.toolkit.hf_trainer import HFTrainerBackend, observer_env
from jessy_adapters.toolkit.tracking import missing_reporters, reporting_env

from .translate import translate_config

HERE = Path(__file__).resolve().parent
ENTRY = HERE / "train_entry.py"

_NO_ACCELERATOR = re.compile(r"cannot find any torch accelerator|You need a GPU", re.I)
_DATA = re.compile(r"DatasetGenerationError|JSONDecodeError|ArrowInvalid", re.I)
_CONFIG = re.compile(r"Failed to load tokenizer|is not a local folder|does not appear to have "
                     r"a file named|Unrecognized model|not supported|unknown chat template "
                     r"family|TypeError: .*unexpected keyword", re.I)


class UnslothBackend(HFTrainerBackend):
    name = "unsloth"
    description = "Unsloth (FastLanguageModel + TRL SFTTrainer): CUDA GPUs; CPU fallback, slow"
    pre_requirements = ("torch==2.13.0",)
    requirements = read_requirements(HERE / "requirements.txt")
    uninstall = ("torchvision",)
    unavailable_errors = _NO_ACCELERATOR
    data_errors = _DATA
    config_errors = _CONFIG
    cpu_note = "runs on CPU (slow); GPU not found"
    saved_adapter, saved_model = "adapter", "model"  # where train_entry.py saves them

    def translate(self, spec, inputs: RunInputs, attempt_dir: Path, env) -> Translation:
        on_gpu = nvidia_gpu() is not None
        cfg, refusals, notes, carried = translate_config(
            spec, inputs, attempt_dir, self.output_dir, on_gpu)
        refusals += missing_reporters(spec, env, self.name)
        if refusals:
            raise TranslationRefused(self.name, refusals)
        # never let Unsloth fetch or build llama.cpp at run time
        run_env = {**OFFLINE_ENV, "UNSLOTH_AUTO_INSTALL": "0", **observer_env(spec, inputs),
                   **reporting_env(spec, attempt_dir)}
        if inputs.require_accelerator:
            run_env["UNSLOTH_DISABLE_CPU_FALLBACK"] = "1"
        return Translation(
            files={"unsloth_config.json": json.dumps(cfg, indent=2)},
            command=[str(env.python), str(ENTRY), str(attempt_dir / "unsloth_config.json")],
            env=run_env, notes=notes, carried=carried, total_steps=cfg["total_steps"])
