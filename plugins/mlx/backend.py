"""The MLX backend: what jessy's core sees of mlx-lm."""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path

import yaml

from jessy_adapters import failures
from jessy_adapters.backend import (
    OFFLINE_ENV,
    Availability,
    Backend,
    RunInputs,
    Translation,
    TranslationRefused,
    read_requirements,
)
from jessy_adapters.failures import Failure, last_error_line
from jessy_adapters.toolkit.adapters import mlx_to_peft, read_safetensors, save_peft_adapter
from jessy_adapters.toolkit.full_model import mlx_full_to_hf
from jessy_adapters.toolkit.tracking import missing_reporters, reporting_env

from .blas import INSTALL_HINT, find_openblas, preload_environment
from .translate import REPORTERS, latest_checkpoint, translate_config

HERE = Path(__file__).resolve().parent
ENTRY = HERE / "train_entry.py"
ADAPTER_DIR = "adapters"

_CONFIG_ERRORS = re.compile(r"Requested to train \d+ layers|Dataset must have at least|"
                            r"missing required key|Unsupported optimizer|unknown fine-tune-type",
                            re.I)
_DATA_ERRORS = re.compile(r"Training set not found or empty|Unsupported data format", re.I)
_MODEL_ERRORS = re.compile(r"RepositoryNotFound|not a valid model|No such file or directory.*"
                           r"(config\.json|safetensors)|Model type \S+ not supported", re.I)


def on_apple_silicon() -> bool:
    return platform.system() == "Darwin" and platform.machine() == "arm64"


class MLXBackend(Backend):
    name = "mlx"
    description = "Apple MLX (mlx-lm LoRA trainer): Metal on Apple silicon, CPU on Linux"
    requirements = read_requirements(HERE / "requirements.txt")

    def check(self, env, require_accelerator: bool = False) -> Availability:
        device = "metal" if on_apple_silicon() else "cpu"
        if platform.system() not in ("Linux", "Darwin"):
            return Availability(False, f"mlx has no build for {platform.system()}", device)
        if platform.system() == "Darwin" and not on_apple_silicon():
            return Availability(False, "mlx needs Apple silicon on macOS", device)
        if not env.exists():
            return Availability(False, f"environment missing: run `jessy env create {self.name}`",
                                device)
        if require_accelerator and device == "cpu":
            return Availability(False, "accelerator required, but MLX on Linux runs on CPU only",
                                device)
        if device == "metal":
            return Availability(True, "ready (Metal)", device)
        blas = find_openblas()
        if blas is None:
            return Availability(True, "ready on CPU with mlx's bundled reference BLAS (very "
                                      f"slow; {INSTALL_HINT})", device)
        return Availability(True, f"ready on CPU (OpenBLAS {blas})", device)

    def translate(self, spec, inputs: RunInputs, attempt_dir: Path, env) -> Translation:
        adapter_dir = str(attempt_dir / ADAPTER_DIR)
        cfg, refusals, notes, carried = translate_config(spec, inputs, adapter_dir)
        refusals += missing_reporters(spec, env, self.name, carried=REPORTERS)
        if refusals:
            raise TranslationRefused(self.name, refusals)
        command = [str(env.python), str(ENTRY), str(attempt_dir / "mlx_lora.yaml")]
        return Translation(
            files={"mlx_lora.yaml": yaml.safe_dump(cfg, sort_keys=False)},
            command=command,
            env={**OFFLINE_ENV, **reporting_env(spec, attempt_dir)},
            notes=notes,
            carried=carried,
            total_steps=cfg["iters"] // cfg["grad_accumulation_steps"],
        )

    def launch_environment(self, env) -> dict[str, str]:
        if platform.system() != "Linux":
            return {}
        out = preload_environment(find_openblas())
        # Measured (benchmarks/mlx_blas.py): sgemm 64 -> 124 GFLOP/s from 1 to 2 threads, and
        # a SmolLM2 LoRA step 3.9 -> 3.3 s; so use every core unless told otherwise, even
        # when the caller pinned OMP_NUM_THREADS=1 for torch.
        out["OPENBLAS_NUM_THREADS"] = os.environ.get("JESSY_BLAS_THREADS",
                                                     str(os.cpu_count() or 1))
        return out

    def after_env_create(self, env) -> list[str]:
        if platform.system() == "Linux" and find_openblas() is None:
            return [f"no OpenBLAS found: MLX will use its bundled reference BLAS, ~15x slower. "
                    f"Fix: {INSTALL_HINT}"]
        return []

    def normalise(self, attempt_dir: Path, spec, inputs: RunInputs, adapter_dir: Path) -> dict:
        raw = attempt_dir / ADAPTER_DIR
        native = json.loads((raw / "adapter_config.json").read_text())
        if spec["method"] == "full":
            return mlx_full_to_hf(raw / "adapters.safetensors", inputs.model_path, adapter_dir)
        params = native["lora_parameters"]
        weights = read_safetensors(raw / "adapters.safetensors")
        tensors, config = mlx_to_peft(weights, params["rank"], params["scale"],
                                      params["dropout"], inputs.model_path)
        save_peft_adapter(tensors, config, adapter_dir)
        return {"format": "peft", "r": config["r"], "lora_alpha": config["lora_alpha"],
                "target_modules": config["target_modules"],
                "layers": len(config["layers_to_transform"] or []),
                "tensors": len(tensors)}

    def checkpoint_as_peft(self, attempt_dir: Path, out_dir: Path) -> Path | None:
        raw = attempt_dir / ADAPTER_DIR
        done, checkpoint = latest_checkpoint(raw)
        if checkpoint is None or not (raw / "adapter_config.json").is_file():
            return None
        params = json.loads((raw / "adapter_config.json").read_text())["lora_parameters"]
        model = json.loads((raw / "adapter_config.json").read_text()).get("model", "")
        tensors, config = mlx_to_peft(read_safetensors(checkpoint), params["rank"],
                                      params["scale"], params["dropout"], model)
        save_peft_adapter(tensors, config, out_dir)
        return out_dir

    def classify(self, returncode: int, log_tail: str) -> Failure:
        line = last_error_line(log_tail)
        if _DATA_ERRORS.search(log_tail):
            return Failure(failures.DATA_ERROR, line)
        if _CONFIG_ERRORS.search(log_tail) or _MODEL_ERRORS.search(log_tail):
            return Failure(failures.CONFIG_REJECTED, line)
        if returncode == 2 and "usage:" in log_tail:
            return Failure(failures.CONFIG_REJECTED, line)
        return super().classify(returncode, log_tail)
