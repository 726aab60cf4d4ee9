"""The Ollama Modelfile: its TEMPLATE from the turn formats jessy trains with, checked
against Ollama's grammar, and `ollama create` where Ollama is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..templates import family_of, single_turn_formats, turn_format
from .tools import ExportError

OLLAMA_INSTRUCTIONS = {"FROM", "ADAPTER", "TEMPLATE", "SYSTEM", "PARAMETER", "MESSAGE",
                       "LICENSE", "REQUIRES"}
OLLAMA_PARAMETERS = {"temperature", "top_p", "top_k", "min_p", "num_ctx", "num_predict",
                     "repeat_penalty", "repeat_last_n", "seed", "stop"}


def ollama_template(family: str, model_path: str = "") -> tuple[str, str]:
    """(Ollama TEMPLATE, stop token) for a chat family (or alpaca), from the same turn formats
    every backend trains with (templates.turn_format: alpaca's ends with the model's EOS), so
    the deployed prompt is the trained one."""
    fmt = turn_format(family, model_path)
    system = "{{ if .System }}" + fmt["system"].format(system="{{ .System }}") + "{{ end }}"
    if fmt.get("fold"):  # no system role: the system text opens the user turn
        turn = fmt["prompt"].format(instruction=system + "{{ .Prompt }}")
    else:
        turn = system + fmt["prompt"].format(instruction="{{ .Prompt }}")
    return turn + fmt.get("lead", "") + "{{ .Response }}" + fmt["end"] + "\n", fmt["end"]


def template_family(chat_template: str | None, spec_choice: str) -> str:
    if spec_choice in single_turn_formats():
        return spec_choice
    family = family_of(chat_template or "")
    if family not in single_turn_formats():
        raise ExportError("cannot tell the chat template family for the Modelfile; set "
                          f"model.chat_template to one of {', '.join(single_turn_formats())}")
    return family


def modelfile_text(gguf_name: str, family: str, system: str | None, parameters: dict,
                   model_path: str = "") -> str:
    template, stop = ollama_template(family, model_path)
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    for key, value in parameters.items():
        lines.append(f"PARAMETER {key} {value}")
    lines.append(f'PARAMETER stop "{stop}"')
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


def validate_modelfile(path: Path) -> list[str]:
    """Problems with a Modelfile, checked against Ollama's documented grammar."""
    problems, text = [], path.read_text()
    i, lines = 0, text.splitlines()
    seen_from = False
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() not in OLLAMA_INSTRUCTIONS:
            problems.append(f"{path}:{i}: unknown instruction {word}")
            continue
        if rest.startswith('"""') and not (rest.endswith('"""') and len(rest) >= 6):
            while i < len(lines) and not lines[i].rstrip().endswith('"""'):
                i += 1
            i += 1
        if word.upper() == "FROM":
            seen_from = True
            target = (path.parent / rest.strip()).resolve()
            if rest.startswith((".", "/")) and not target.is_file():
                problems.append(f"{path}:{i}: FROM file not found: {rest}")
        if word.upper() == "PARAMETER":
            name = rest.split(" ", 1)[0]
            if name not in OLLAMA_PARAMETERS:
                problems.append(f"{path}:{i}: unknown PARAMETER {name}")
    if not seen_from:
        problems.append(f"{path}: no FROM line")
    return problems


def ollama_create(name: str, folder: Path) -> str | None:
    """`ollama create NAME -f Modelfile` where an Ollama CLI is installed; what it said."""
    if not shutil.which("ollama"):
        return None
    proc = subprocess.run(["ollama", "create", name, "-f", "Modelfile"], cwd=folder,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise ExportError(f"ollama create {name} failed: {proc.stderr.strip()[-400:]}")
    return (proc.stdout.strip().splitlines() or ["created"])[-1]
