"""PEFT LoRA -> MLX LoRA tensors (numpy + safetensors only).

Used by jessy's core (jessy_adapters.toolkit.adapters) and, through JESSY_RUNTIME_PATH, inside the
MLX environment, where jessy itself is not installed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

PEFT_KEY = re.compile(
    r"^base_model\.model\.(?P<prefix>.*?)layers\.(?P<layer>\d+)\.(?P<module>.+)\.lora_(?P<ab>[AB])"
    r"(?:\.default)?\.weight$")


def peft_to_mlx(tensors: dict[str, np.ndarray], config: dict) -> tuple[dict[str, np.ndarray],
                                                                        dict]:
    """MLX's lora_a = A.T (in, r), lora_b = B.T (r, out), scale = alpha / r."""
    if config.get("use_rslora") or config.get("use_dora"):
        raise ValueError("rsLoRA/DoRA adapters have no MLX LoRA equivalent")
    r = int(config["r"])
    scale = float(config["lora_alpha"]) / r
    out = {}
    for key, value in tensors.items():
        m = PEFT_KEY.match(key)
        if not m:
            raise ValueError(f"unexpected tensor in PEFT adapter: {key}")
        ab = "a" if m["ab"] == "A" else "b"
        out[f"{m['prefix']}layers.{m['layer']}.{m['module']}.lora_{ab}"] = np.ascontiguousarray(
            value.T)
    return out, {"rank": r, "scale": scale, "dropout": float(config.get("lora_dropout", 0.0))}


def peft_dir_to_mlx_file(peft_dir: Path, out_file: Path) -> dict:
    """Write an MLX adapter file from a PEFT adapter folder; return the MLX LoRA params."""
    from safetensors.numpy import load_file, save_file

    config = json.loads((Path(peft_dir) / "adapter_config.json").read_text())
    tensors = load_file(str(Path(peft_dir) / "adapter_model.safetensors"))
    mlx, params = peft_to_mlx({k: v.astype(np.float32) for k, v in tensors.items()}, config)
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    save_file(mlx, str(out_file))
    return params
