"""What `method: full` leaves: a plain Hugging Face model folder, whichever backend trained.

The run's model/ holds safetensors weights, config, generation config and tokenizer, so
`AutoModelForCausalLM.from_pretrained(run/"model")` loads it on its own (docs/backends.md).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

from .adapters import read_safetensors, read_safetensors_header, write_safetensors

MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model",
               "chat_template.jinja")
"""Besides the weights: what a folder needs to load and chat on its own."""


def copy_hf_model(src: Path, model_dir: Path, base_model: str) -> dict:
    """Copy the full model a backend saved: safetensors weights (shards and their index
    too), config, and the tokenizer, taken from the base model when the backend saved none."""
    weights = [w for w in sorted(src.glob("*.safetensors")) if not w.name.startswith("adapter_")]
    if not weights:
        raise FileNotFoundError(f"no model weights (*.safetensors) in {src}")
    model_dir.mkdir(parents=True, exist_ok=True)
    for path in [*weights, *src.glob("*.safetensors.index.json")]:
        shutil.copy2(path, model_dir / path.name)
    for name in MODEL_FILES:
        source = src / name if (src / name).is_file() else Path(base_model) / name
        if source.is_file():
            shutil.copy2(source, model_dir / name)
    parameters, dtypes = 0, set()
    for path in weights:
        header, _ = read_safetensors_header(path)
        for key, meta in header.items():
            if key != "__metadata__":
                parameters += math.prod(meta["shape"])
                dtypes.add(meta["dtype"])
    return {"format": "hf", "files": sorted(p.name for p in model_dir.iterdir()),
            "parameters": parameters, "trained_parameters": parameters,
            "dtype": sorted(dtypes)}


def mlx_full_to_hf(trained: Path, base_model: str, model_dir: Path) -> dict:
    """mlx-lm's full fine-tune saves only what it trained (every transformer block, under the
    Hugging Face names): the base model's weights with those replaced, as a HF folder."""
    shards = sorted(Path(base_model).glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"the base model {base_model} has no *.safetensors weights to "
                                "complete mlx-lm's trained tensors with")
    weights: dict = {}
    for shard in shards:
        weights.update(read_safetensors(shard))
    new = read_safetensors(trained)
    unknown = sorted(set(new) - set(weights))
    if unknown:
        raise ValueError(f"trained tensors not in the base model {base_model}: {unknown[:5]}")
    weights.update(new)
    with tempfile.TemporaryDirectory() as tmp:
        write_safetensors(weights, Path(tmp) / "model.safetensors")
        info = copy_hf_model(Path(tmp), model_dir, base_model)
    return {**info, "trained_parameters": sum(int(t.size) for t in new.values())}
