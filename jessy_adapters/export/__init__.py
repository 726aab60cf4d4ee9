"""`jessy export RUN_DIR`: merge the PEFT adapter, convert to GGUF, write an Ollama Modelfile.

GGUF conversion uses llama.cpp's own converter (convert_hf_to_gguf.py + gguf-py), taken
from the llama-cpp-python sdist on the package registry and kept under
$JESSY_HOME/tools; f16 needs no compiled code. q8_0 and q4_k_m use llama.cpp's own
quantiser: libllama from node-llama-cpp's prebuilt binaries (npm registry), called through
ctypes (without node, q8_0 comes from the converter's reference Q8_0 and q4_k_m is refused
with the fix). Each GGUF is verified in llama.cpp itself (node-llama-cpp) by answering a
question with the chat template it carries; without node, transformers' GGUF reader does it.

One job per module: tools (fetching the converter and binaries), gguf (conversion and
quantisation), verify (the answer check), modelfile (writing and checking it). This module
merges the adapter and runs the steps in order (export_run).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..jsonio import write_json_atomic
from ..templates import ALPACA, default_system_prompt, training_template
from .gguf import LLAMA_FTYPES, PURE_PYTHON_TYPES, to_gguf
from .modelfile import (
    OLLAMA_INSTRUCTIONS,
    OLLAMA_PARAMETERS,
    modelfile_text,
    ollama_create,
    ollama_template,
    template_family,
    validate_modelfile,
)
from .tools import (
    LLAMA_CPP_PYTHON,
    NEEDED,
    NODE_LLAMA_CPP,
    NODE_PLATFORMS,
    ExportError,
    converter_dir,
    llama_cpp_runtime,
    llama_library,
)
from .verify import answer_from_gguf, answer_with_llama_cpp

__all__ = ["LLAMA_CPP_PYTHON", "LLAMA_FTYPES", "NEEDED", "NODE_LLAMA_CPP", "NODE_PLATFORMS",
           "OLLAMA_INSTRUCTIONS", "OLLAMA_PARAMETERS", "PURE_PYTHON_TYPES", "ExportError",
           "answer_from_gguf", "answer_with_llama_cpp", "converter_dir", "export_run",
           "llama_cpp_runtime", "llama_library", "merge", "modelfile_text", "ollama_create",
           "ollama_template", "template_family", "to_gguf", "validate_modelfile"]


SENTENCEPIECE_FILES = ("tokenizer.model",)
"""Tokenizer files the merged folder takes from the base model when saving the tokenizer
wrote none: the merge changes no token."""


def merge(model_path: str, adapter: Path, out: Path, chat_template: str = "auto") -> Path:
    """The adapter merged into its base, saved with the template the run trained with
    (the spec's `chat_template`: jessy's where it sets one), so the GGUF carries it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    trained = training_template(model_path, chat_template)
    if trained:
        tokenizer.chat_template = trained
    tokenizer.save_pretrained(out)
    # transformers 5 saves the tokenizer as tokenizer.json only; llama.cpp's converter reads
    # a SentencePiece vocabulary (Gemma's, Llama-2's, Phi-3's) from tokenizer.model
    for name in SENTENCEPIECE_FILES:
        source = Path(model_path) / name
        if source.is_file() and not (out / name).exists():
            shutil.copy2(source, out / name)
    return out


def export_run(run_dir: Path, gguf_types: list[str] | None = None, ollama: bool = True,
               verify: bool = True, question: str | None = None) -> dict:

    from ..run.rundir import finished_run

    run_dir = Path(run_dir)
    manifest, spec, _ = finished_run(run_dir)  # RunFolderError before export/ is made
    export_spec = spec.get("export", {})
    types = gguf_types or export_spec.get("gguf") or ["f16"]
    out = run_dir / "export"
    out.mkdir(exist_ok=True)
    choice = spec.get("model", {}).get("chat_template", "auto")
    system = spec.get("data", {}).get("system_prompt")
    if not system and choice == ALPACA:  # Alpaca's preamble: the deployed prompt is the trained one
        system = default_system_prompt(manifest["model_path"], choice)
    question = question or "Who are you?"
    record: dict = {"run": str(run_dir), "gguf": [], "modelfile": None,
                    "converter": f"llama.cpp convert_hf_to_gguf.py from llama-cpp-python "
                                 f"{LLAMA_CPP_PYTHON}"}
    start = time.monotonic()
    if manifest.get("full_model"):  # method: full: the run's model/ is already whole
        merged = run_dir / manifest["full_model"]["path"]
    else:
        merged = merge(manifest["model_path"], run_dir / "adapter", out / "merged", choice)
    record["merged"] = str(merged)
    for kind in types:
        path = to_gguf(merged, kind, out / f"model-{kind}.gguf")
        entry = {"type": kind, "path": path.name, "bytes": path.stat().st_size}
        if verify:
            entry["question"] = question
            answer = answer_with_llama_cpp(path, question, system)
            if answer is not None:
                entry["answer"] = answer
                entry["verified_by"] = (f"llama.cpp (node-llama-cpp {NODE_LLAMA_CPP} prebuilt) "
                                        "with the GGUF's chat template")
            else:
                entry["answer"] = answer_from_gguf(path, question, system)
                entry["verified_by"] = ("transformers GGUF loader + the GGUF's chat template "
                                        "(no node/npm for llama.cpp)")
        record["gguf"].append(entry)
    if ollama:
        from transformers import AutoTokenizer

        family = template_family(AutoTokenizer.from_pretrained(merged).chat_template, choice)
        params = export_spec.get("ollama", {}).get("parameters") or {}
        chosen = record["gguf"][-1]["path"]
        mf = out / "Modelfile"
        mf.write_text(modelfile_text(chosen, family, system, params, manifest["model_path"]))
        problems = validate_modelfile(mf)
        if problems:
            raise ExportError("\n".join(problems))
        name = export_spec.get("ollama", {}).get("model_name") or spec.get("name") or "jessy"
        record["modelfile"] = {"path": "export/Modelfile", "family": family,
                               "import": f"cd {out} && ollama create {name} -f Modelfile",
                               "ollama_created": ollama_create(name, out)}
    record["seconds"] = round(time.monotonic() - start, 1)
    write_json_atomic(out / "export.json", record)
    return record
