"""Runs in jessy's own environment: base model -> GGUF -> verified answer -> Modelfile.

Usage: python make_modelfile.py CONFIG.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

EVENT_PREFIX = "JESSY_EVENT "


def main(config_path: str) -> int:
    from jessy_adapters import export

    cfg = json.loads(Path(config_path).read_text())
    out = Path(cfg["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    gguf = export.to_gguf(Path(cfg["model_path"]), cfg["gguf_type"],
                          out / f"base-{cfg['gguf_type']}.gguf")
    answer = export.answer_with_llama_cpp(gguf, cfg["question"], cfg["system"])
    verified_by = "llama.cpp (node-llama-cpp)"
    if answer is None:
        answer = export.answer_from_gguf(gguf, cfg["question"], cfg["system"])
        verified_by = "transformers GGUF loader"
    from transformers import AutoTokenizer

    family = export.template_family(AutoTokenizer.from_pretrained(cfg["model_path"]).chat_template,
                                    cfg["chat_template"])
    modelfile = out / "Modelfile"
    modelfile.write_text(export.modelfile_text(gguf.name, family, cfg["system"],
                                               cfg["parameters"]))
    problems = export.validate_modelfile(modelfile)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(EVENT_PREFIX + json.dumps({"type": "runtime", "gguf": gguf.name,
                                     "bytes": gguf.stat().st_size, "question": cfg["question"],
                                     "answer": answer, "verified_by": verified_by,
                                     "template_family": family}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
