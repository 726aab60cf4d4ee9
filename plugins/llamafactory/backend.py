"""The LLaMA-Factory backend: what jessy's core sees of LLaMA-Factory."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from jessy_adapters import failures
from jessy_adapters.adapters import copy_peft_adapter
from jessy_adapters.backend import (
    OFFLINE_ENV,
    Availability,
    Backend,
    RunInputs,
    Translation,
    TranslationRefused,
    read_requirements,
)
from jessy_adapters.checkpoints import hf_checkpoint_as_peft
from jessy_adapters.devices import nvidia_gpu, torch_threads_env
from jessy_adapters.failures import Failure, last_error_line

from .translate import dataset_info_json, translate_config

HERE = Path(__file__).resolve().parent
ENTRY = HERE / "train_entry.py"
OUTPUT_DIR = "output"

_DATA = re.compile(r"DatasetGenerationError|JSONDecodeError|Cannot find valid samples", re.I)
_CONFIG = re.compile(r"Failed to load tokenizer|Template \S+ does not exist|Some keys are not "
                     r"used by the HfArgumentParser|is not a valid|Please specify|not supported|"
                     r"does not appear to have a file named|is not a local folder", re.I)


def _gpu() -> bool:
    return nvidia_gpu() is not None


class LlamaFactoryBackend(Backend):
    name = "llamafactory"
    description = "LLaMA-Factory (HF Trainer + PEFT, YAML configs): CUDA or CPU"
    pre_requirements = ("torch==2.13.0",)
    requirements = read_requirements(HERE / "requirements.txt")
    # torchvision's and torchaudio's PyPI builds link CUDA libraries that the CPU torch wheel
    # lacks; LLaMA-Factory imports torchaudio at start-up, so its compiled extension is
    # disabled instead (see after_env_create).
    uninstall = ("torchvision",)

    def check(self, env, require_accelerator: bool = False) -> Availability:
        gpu = _gpu()
        device = "cuda" if gpu else "cpu"
        if not env.exists():
            return Availability(False, f"environment missing: run `jessy env create {self.name}`",
                                device)
        if require_accelerator and not gpu:
            return Availability(False, "accelerator required, but no NVIDIA GPU found", device)
        return Availability(True, "ready" if gpu else "ready on CPU (fp32)", device)

    def translate(self, spec, inputs: RunInputs, attempt_dir: Path, env) -> Translation:
        cfg, refusals, notes, carried, total = translate_config(
            spec, inputs, str(attempt_dir / OUTPUT_DIR), str(attempt_dir / "data"), _gpu())
        if refusals:
            raise TranslationRefused(self.name, refusals)
        return Translation(
            files={"llamafactory.yaml": yaml.safe_dump(cfg, sort_keys=False),
                   "data/dataset_info.json": dataset_info_json(inputs)},
            command=[str(env.python), str(ENTRY), str(attempt_dir / "llamafactory.yaml")],
            env={**OFFLINE_ENV, "DISABLE_VERSION_CHECK": "1"},
            notes=notes, carried=carried, total_steps=total)

    def launch_environment(self, env) -> dict[str, str]:
        return torch_threads_env()

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

    def normalise(self, attempt_dir: Path, spec, inputs: RunInputs, adapter_dir: Path) -> dict:
        return copy_peft_adapter(attempt_dir / OUTPUT_DIR, adapter_dir, inputs.model_path)

    def checkpoint_as_peft(self, attempt_dir: Path, out_dir: Path) -> Path | None:
        return hf_checkpoint_as_peft(attempt_dir)

    def classify(self, returncode: int, log_tail: str) -> Failure:
        line = last_error_line(log_tail)
        if _DATA.search(log_tail):
            return Failure(failures.DATA_ERROR, line)
        if _CONFIG.search(log_tail):
            return Failure(failures.CONFIG_REJECTED, line)
        return super().classify(returncode, log_tail)
