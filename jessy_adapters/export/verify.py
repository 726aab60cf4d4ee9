"""The answer check: each GGUF loaded back and asked a question with the chat template it
carries, in llama.cpp (node-llama-cpp) or, without node, transformers' GGUF reader."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from ..paths import package_file
from .tools import ExportError, llama_cpp_runtime


def answer_with_llama_cpp(gguf_file: Path, question: str, system: str | None) -> str | None:
    runtime = llama_cpp_runtime()
    if runtime is None:
        return None
    script = runtime / "llama_chat.mjs"
    shutil.copy2(package_file("runtime", "llama_chat.mjs"), script)
    proc = subprocess.run(["node", str(script), str(gguf_file), system or "", question],
                          capture_output=True, text=True, cwd=runtime, timeout=600)
    if proc.returncode != 0:
        raise ExportError(f"llama.cpp could not load {gguf_file.name}: "
                          f"{proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["answer"].strip()


def answer_from_gguf(gguf_file: Path, question: str, system: str | None,
                     max_new_tokens: int = 32) -> str:
    """Load the GGUF back (transformers' GGUF reader) and answer with its own template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name,
                                                 dtype=torch.float32)
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.eos_token_id)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
