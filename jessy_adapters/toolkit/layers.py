"""Which transformer blocks get LoRA adapters: `lora.layers` is `all`, a list of block
indices, or `last N` (mlx-lm's num_layers, and what most configs mean by a layer count).
Resolved here once against the model's block count, for every translator."""

from __future__ import annotations

import json
from pathlib import Path

from ..backend import Refusal


def model_layer_count(model_path: str) -> int | None:
    """num_hidden_layers from the model's config.json (a multimodal config's text_config)."""
    cfg = Path(model_path) / "config.json"
    if not cfg.is_file():
        return None
    data = json.loads(cfg.read_text())
    data = data.get("text_config", data)
    return data.get("num_hidden_layers")


def adapted_layers(layers, model_path: str, refusals: list) -> str | list[int] | None:
    """"all", or the sorted block indices; None (with a refusal at /lora/layers) when
    `last N` cannot be honoured: the model's block count unknown, or N above it."""
    if layers == "all":
        return "all"
    if isinstance(layers, str):  # "last N", by the schema
        n = int(layers.split()[1])
        count = model_layer_count(model_path)
        if count is None:
            refusals.append(Refusal("/lora/layers", f"{layers!r} needs the model's block "
                                    "count, and its config.json has no num_hidden_layers"))
            return None
        if n > count:
            refusals.append(Refusal("/lora/layers", f"{layers!r}: the model has only {count} "
                                    "blocks"))
            return None
        return "all" if n == count else list(range(count - n, count))
    return sorted(layers)
