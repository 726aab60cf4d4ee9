"""The Axolotl backend: what jessy's core sees of Axolotl."""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from jessy_adapters.backend import (
    OFFLINE_ENV,
    RunInputs,
    Translation,
    TranslationRefused,
    read_requirements,
)
from jessy_adapters.devices import nvidia_gpu, torch_threads_env
from jessy_adapters.schedule import run_schedule
from jessy_adapters.toolkit.hf_trainer import HFTrainerBackend, observer_env
from jessy_adapters.toolkit.scaleout import world_size
from jessy_adapters.toolkit.tracking import missing_reporters, reporting_env

from .translate import translate_config

HERE = Path(__file__).resolve().parent
RUNTIME = HERE / "runtime"
CONFIG = "axolotl.yaml"

_DATA = re.compile(r"DatasetGenerationError|JSONDecodeError|ArrowInvalid|No samples left|"
                   r"Dataset is empty", re.I)
_CONFIG = re.compile(r"validation error|ValidationError|Failed to load tokenizer|is not a local "
                     r"folder|does not appear to have a file named|Unrecognized model|"
                     r"Can't load tokenizer|Can't load the configuration|not supported", re.I)


class AxolotlBackend(HFTrainerBackend):
    name = "axolotl"
    description = ("Axolotl (HF Trainer + PEFT, YAML configs; torchrun for DDP/FSDP2/DeepSpeed): "
                   "CUDA or CPU")
    pre_requirements = ("torch==2.13.0",)
    requirements = read_requirements(HERE / "requirements.txt")
    uninstall = ("torchvision",)
    data_errors = _DATA
    config_errors = _CONFIG

    def translate(self, spec, inputs: RunInputs, attempt_dir: Path, env) -> Translation:
        on_gpu = nvidia_gpu() is not None
        cfg, files, launcher, refusals, notes, carried, total = translate_config(
            spec, inputs, attempt_dir, self.output_dir, on_gpu)
        refusals += missing_reporters(spec, env, self.name)
        if refusals:
            raise TranslationRefused(self.name, refusals)
        files[CONFIG] = yaml.safe_dump(cfg, sort_keys=False)
        extra = {}
        if world_size(spec["resources"]) > 1 and not on_gpu:
            # the HF Trainer only runs CPU processes as data-parallel (accelerate MULTI_CPU,
            # gloo) when told it is on the CPU; otherwise each rank trains alone on all data
            extra["ACCELERATE_USE_CPU"] = "true"
            extra.update(torch_threads_env(spec["resources"]["gpus_per_node"]))  # share cores
        return Translation(
            files=files,
            command=[str(env.bin("axolotl")), "train", str(attempt_dir / CONFIG), *launcher],
            env={**OFFLINE_ENV, "AXOLOTL_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1",
                 # the launchers (torchrun, accelerate) are found on PATH; the events plugin
                 # on PYTHONPATH
                 "PATH": f"{env.bin('axolotl').parent}{os.pathsep}{os.environ.get('PATH', '')}",
                 "PYTHONPATH": str(RUNTIME), **observer_env(spec, inputs),
                 "JESSY_WARMUP_STEPS": str(run_schedule(spec, inputs).warmup_steps),
                 **reporting_env(spec, attempt_dir), **extra},
            notes=notes, carried=carried, total_steps=total)
