"""The LLaMA-Factory backend: what jessy's core sees of LLaMA-Factory."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from jessy_adapters.backend import (
    OFFLINE_ENV,
    RunInputs,
    Translation,
    TranslationRefused,
    read_requirements,
)
from jessy_adapters.devices import nvidia_gpu
from jessy_adapters.failures import last_error_line
from jessy_adapters.toolkit.hf_trainer import HFTrainerBackend, observer_env
from jessy_adapters.toolkit.tracking import missing_reporters, reporting_env

from .translate import dataset_info_json, translate_config

HERE = Path(__file__).resolve().parent
ENTRY = HERE / "train_entry.py"

_DATA = re.compile(r"DatasetGenerationError|JSONDecodeError|Cannot find valid samples", re.I)
_CONFIG = re.compile(r"Failed to load tokenizer|Template \S+ does not exist|Some keys are not "
                     r"used by the HfArgumentParser|is not a valid|Please specify|not supported|"
                     r"does not appear to have a file named|is not a local folder", re.I)


def _gpu() -> bool:
    return nvidia_gpu() is not None


class LlamaFactoryBackend(HFTrainerBackend):
    name = "llamafactory"
    description = "LLaMA-Factory (HF Trainer + PEFT, YAML configs): CUDA or CPU"
    pre_requirements = ("torch==2.13.0",)
    requirements = read_requirements(HERE / "requirements.txt")
    # torchvision's and torchaudio's PyPI builds link CUDA libraries that the CPU torch wheel
    # lacks; LLaMA-Factory imports torchaudio at start-up, so its compiled extension is
    # disabled instead (see after_env_create).
    uninstall = ("torchvision",)
    data_errors = _DATA
    config_errors = _CONFIG

    def translate(self, spec, inputs: RunInputs, attempt_dir: Path, env) -> Translation:
        cfg, refusals, notes, carried, total = translate_config(
            spec, inputs, attempt_dir, self.output_dir, str(attempt_dir / "data"), _gpu())
        refusals += missing_reporters(spec, env, self.name)
        if refusals:
            raise TranslationRefused(self.name, refusals)
        return Translation(
            files={"llamafactory.yaml": yaml.safe_dump(cfg, sort_keys=False),
                   "data/dataset_info.json": dataset_info_json(inputs)},
            command=[str(env.python), str(ENTRY), str(attempt_dir / "llamafactory.yaml")],
            env={**OFFLINE_ENV, "DISABLE_VERSION_CHECK": "1", **observer_env(spec, inputs),
                 **reporting_env(spec, attempt_dir)},
            notes=notes, carried=carried, total_steps=total)

    def after_env_create(self, env) -> list[str]:
        """torchaudio's PyPI extension needs CUDA's libc10_cuda; torchaudio runs without it.

        torchaudio checks for its extension with `_load_lib`, which returns False when the
        library file is absent (a supported state: `_IS_TORCHAUDIO_EXT_AVAILABLE = False`).
        LLaMA-Factory only imports torchaudio for audio models, so the text path is intact.
        """
        import subprocess

        code = ("import importlib.util, pathlib; s = importlib.util.find_spec('torchaudio');"
                "print(pathlib.Path(s.origin).parent / 'lib' if s else '')")
        lib = subprocess.run([str(env.python), "-c", code], capture_output=True,
                             text=True).stdout.strip()
        notes = []
        if lib and Path(lib).is_dir():
            disabled = Path(lib).with_name("lib.cuda-only")
            shutil.rmtree(disabled, ignore_errors=True)
            Path(lib).rename(disabled)
            notes.append(f"torchaudio's CUDA-linked extension moved aside to {disabled}")
        check = subprocess.run([str(env.python), "-c",
                                "import llamafactory.data.mm_plugin, llamafactory.train.tuner"],
                               capture_output=True, text=True)
        if check.returncode != 0:
            notes.append("LLaMA-Factory does not import: " + last_error_line(check.stderr))
        return notes
