"""The `ollama-modelfile` backend: the seed report's baseline row ("Ollama Modelfile
approach: personality through the SYSTEM prompt, no weight updates") as one flag."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

from jessy_adapters.backend import Availability, Backend, RunInputs, Translation

HERE = Path(__file__).resolve().parent
OUTPUT_DIR = "output"


class OllamaModelfileBackend(Backend):
    name = "ollama-modelfile"
    description = ("Baseline: base model as GGUF + Ollama Modelfile with the SYSTEM prompt; "
                   "no training")
    produces = "nothing"  # the GGUF and Modelfile go to export/, recorded as run.json outputs
    environment = "jessy"  # make_modelfile.py runs with jessy's interpreter

    def check(self, env, require_accelerator: bool = False) -> Availability:
        missing = [m for m in ("torch", "transformers", "gguf")
                   if importlib.util.find_spec(m) is None]
        if missing:
            return Availability(False, f"needs jessy's [hf] extra ({', '.join(missing)} "
                                       "missing): pip install 'jessy-adapters[hf]'")
        return Availability(True, "ready (no training; runs in jessy's own environment)")

    def translate(self, spec, inputs: RunInputs, attempt_dir: Path, env) -> Translation:
        export = spec["export"]
        cfg = {"model_path": inputs.model_path,
               "gguf_type": (export["gguf"] or ["f16"])[0],
               "system": spec["data"]["system_prompt"],
               "parameters": export["ollama"]["parameters"],
               "chat_template": spec["model"]["chat_template"],
               "question": "Who are you?",
               "output_dir": str(attempt_dir / OUTPUT_DIR)}
        notes = ["baseline: no training; the spec's training and lora sections are not used"]
        if not cfg["system"]:
            notes.append("no data.system_prompt: the Modelfile has no SYSTEM line")
        return Translation(files={"modelfile_config.json": json.dumps(cfg, indent=2)},
                           command=[sys.executable, str(HERE / "make_modelfile.py"),
                                    str(attempt_dir / "modelfile_config.json")],
                           notes=notes, total_steps=0)

    def normalise(self, attempt_dir: Path, spec, inputs: RunInputs, adapter_dir: Path) -> dict:
        export_dir = adapter_dir.parent / "export"
        export_dir.mkdir(exist_ok=True)
        for path in (attempt_dir / OUTPUT_DIR).iterdir():
            move = shutil.move if path.suffix == ".gguf" else shutil.copy2  # GGUFs are big
            move(str(path), str(export_dir / path.name))
        return {"modelfile": "export/Modelfile"}
