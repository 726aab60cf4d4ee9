"""LoRA adapters between MLX and PEFT layouts, with numpy only (no torch, no mlx).

MLX computes y = Wx + scale * (x @ lora_a) @ lora_b with lora_a (in, r), lora_b (r, out).
PEFT computes y = Wx + (alpha / r) * B(A(x)) with A.weight (r, in), B.weight (out, r).
So A = lora_a.T, B = lora_b.T and alpha = scale * r.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where a tensor is touched: every `jessy` command loads
    import numpy as np  # this module through the plugins, and numpy is 0.1 s of start-up

_DTYPES = {"F32": "float32", "F16": "float16", "F64": "float64", "I64": "int64", "I32": "int32"}

_MLX_KEY = re.compile(r"^(?P<prefix>.*?)layers\.(?P<layer>\d+)\.(?P<module>.+)\.lora_(?P<ab>[ab])$")


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file (name -> dtype, shape, offsets) and its size."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(n)), n


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """safetensors -> float32/native numpy, bf16 included (numpy has no bf16 dtype)."""
    import numpy as np

    header, n = read_safetensors_header(path)
    body = memoryview(Path(path).read_bytes())[8 + n:]
    out = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        chunk = body[start:end]
        if meta["dtype"] == "BF16":
            bits = np.frombuffer(chunk, dtype=np.uint16).astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(chunk, dtype=_DTYPES[meta["dtype"]]).copy()
        out[key] = arr.reshape(meta["shape"])
    return out


def write_safetensors(tensors: dict[str, np.ndarray], path: Path,
                      metadata: dict[str, str] | None = None) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path),
              metadata=metadata or {"format": "pt"})


def mlx_to_peft(mlx_weights: dict[str, np.ndarray], rank: int, scale: float, dropout: float,
                base_model: str) -> tuple[dict[str, np.ndarray], dict]:
    """Convert MLX LoRA weights to PEFT tensors + adapter_config.json contents."""
    import numpy as np

    tensors, modules, layers = {}, set(), set()
    for key, value in mlx_weights.items():
        m = _MLX_KEY.match(key)
        if not m:
            raise ValueError(f"unexpected tensor in MLX adapter: {key}")
        prefix = m["prefix"] or "model."
        name = f"base_model.model.{prefix}layers.{m['layer']}.{m['module']}"
        if m["ab"] == "a":
            tensors[f"{name}.lora_A.weight"] = value.T.astype(np.float32)
        else:
            tensors[f"{name}.lora_B.weight"] = value.T.astype(np.float32)
        modules.add(m["module"].split(".")[-1])
        layers.add(int(m["layer"]))
    for key, value in tensors.items():
        r_axis = 0 if ".lora_A." in key else 1
        if value.shape[r_axis] != rank:
            raise ValueError(f"{key}: rank {value.shape[r_axis]} does not match r={rank}")
    config = peft_config(rank, scale * rank, dropout, sorted(modules), sorted(layers), base_model)
    return tensors, config


def peft_config(rank: int, alpha: float, dropout: float, target_modules: list[str],
                layers: list[int] | None, base_model: str) -> dict:
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": target_modules,
        "layers_to_transform": layers,
        "layers_pattern": "layers" if layers is not None else None,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
    }


def peft_to_mlx(tensors: dict[str, np.ndarray], config: dict):
    """PEFT -> MLX (the reverse direction); the code lives in runtime/ as backends run it."""
    from ..runtime.lora_convert import peft_to_mlx as convert

    return convert(tensors, config)


def save_peft_adapter(tensors: dict[str, np.ndarray], config: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_safetensors(tensors, out_dir / "adapter_model.safetensors")
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")


def copy_peft_adapter(src: Path, adapter_dir: Path, base_model: str) -> dict:
    """Copy a PEFT adapter folder a backend wrote, pointing it at the model jessy resolved."""
    import shutil

    adapter_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "adapter_model.safetensors", adapter_dir / "adapter_model.safetensors")
    config = json.loads((src / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_model
    (adapter_dir / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    targets = config["target_modules"]
    return {"format": "peft", "r": config["r"], "lora_alpha": config["lora_alpha"],
            "target_modules": sorted(targets) if isinstance(targets, list) else targets}

