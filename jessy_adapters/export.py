"""`jessy export RUN_DIR`: merge the PEFT adapter, convert to GGUF, write an Ollama Modelfile.

GGUF conversion uses llama.cpp's own converter (convert_hf_to_gguf.py + gguf-py), taken
from the llama-cpp-python sdist on the package registry and kept under
$JESSY_HOME/tools; f16 needs no compiled code. q8_0 and q4_k_m use llama.cpp's own
quantiser: libllama from node-llama-cpp's prebuilt binaries (npm registry), called through
ctypes (without node, q8_0 comes from the converter's reference Q8_0 and q4_k_m is refused
with the fix). Each GGUF is verified in llama.cpp itself (node-llama-cpp) by answering a
question with the chat template it carries; without node, transformers' GGUF reader does it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from .jsonio import write_json_atomic
from .paths import jessy_home, package_file
from .templates import TURN_FORMATS, family_of

LLAMA_CPP_PYTHON = "0.3.36"
NODE_LLAMA_CPP = "3.22.1"
NODE_PLATFORMS = {("linux", "x86_64"): "linux-x64", ("linux", "aarch64"): "linux-arm64",
                  ("darwin", "arm64"): "mac-arm64-metal", ("darwin", "x86_64"): "mac-x64"}
NEEDED = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
PURE_PYTHON_TYPES = ("f16", "q8_0")

OLLAMA_INSTRUCTIONS = {"FROM", "ADAPTER", "TEMPLATE", "SYSTEM", "PARAMETER", "MESSAGE",
                       "LICENSE", "REQUIRES"}
OLLAMA_PARAMETERS = {"temperature", "top_p", "top_k", "min_p", "num_ctx", "num_predict",
                     "repeat_penalty", "repeat_last_n", "seed", "stop"}


class ExportError(Exception):
    pass


def converter_dir() -> Path:
    """llama.cpp's converter, fetched once from the llama-cpp-python sdist."""
    target = jessy_home() / "tools" / f"llama.cpp-{LLAMA_CPP_PYTHON}"
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:",
                               "--no-deps", "-q", "-d", tmp,
                               f"llama-cpp-python=={LLAMA_CPP_PYTHON}"],
                              capture_output=True, text=True)
        sdists = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if proc.returncode != 0 or not sdists:
            raise ExportError("could not download the llama-cpp-python sdist for llama.cpp's "
                              f"converter: {proc.stderr.strip()[-500:]}")
        prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
        staging = Path(tmp) / "x"
        with tarfile.open(sdists[0]) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and any(
                m.name[len(prefix):].startswith(n) for n in NEEDED)]
            tar.extractall(staging, members=members, filter="data")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(staging / prefix), str(target))
    return target


def merge(model_path: str, adapter: Path, out: Path) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(model_path).save_pretrained(out)
    return out


LLAMA_FTYPES = {"q8_0": 7, "q4_k_m": 15}  # enum llama_ftype, stable across releases


def to_gguf(merged: Path, outtype: str, out_file: Path) -> Path:
    """f16 with llama.cpp's converter; q8_0/q4_k_m with llama.cpp's own quantiser when its
    library is at hand (q8_0 falls back to the converter's reference Q8_0)."""
    if outtype in LLAMA_FTYPES:
        library = llama_library()
        if library is not None:
            f16 = out_file.with_name(out_file.stem + ".source-f16.gguf")
            _convert(merged, "f16", f16)
            try:
                _llama_quantize(library, f16, out_file, LLAMA_FTYPES[outtype])
            finally:
                f16.unlink(missing_ok=True)
            return out_file
        if outtype == "q4_k_m":
            raise ExportError("q4_k_m needs llama.cpp's quantiser: install node and npm (jessy "
                              f"then fetches node-llama-cpp {NODE_LLAMA_CPP}'s prebuilt "
                              "llama.cpp); f16 and q8_0 need neither")
    if outtype not in PURE_PYTHON_TYPES:
        raise ExportError(f"unknown GGUF type {outtype}")
    return _convert(merged, outtype, out_file)


def _convert(merged: Path, outtype: str, out_file: Path) -> Path:
    tools = converter_dir()
    proc = subprocess.run([sys.executable, str(tools / "convert_hf_to_gguf.py"), str(merged),
                           "--outtype", outtype, "--outfile", str(out_file)],
                          capture_output=True, text=True, cwd=tools)
    if proc.returncode != 0 or not out_file.is_file():
        raise ExportError(f"llama.cpp converter failed ({outtype}): "
                          f"{proc.stderr.strip().splitlines()[-1:]}")
    return out_file


def llama_library() -> Path | None:
    """libllama from node-llama-cpp's prebuilt binaries (Linux/macOS), or None."""
    runtime = llama_cpp_runtime()
    if runtime is None:
        return None
    hits = sorted((runtime / "node_modules" / "@node-llama-cpp").glob("*/bins/*/libllama*"))
    return hits[0] if hits else None


def _llama_quantize(library: Path, src: Path, dst: Path, ftype: int) -> None:
    """llama.cpp's llama_model_quantize through ctypes.

    Only the first two fields of llama_model_quantize_params (int32 nthread, enum ftype)
    are touched; the struct is over-allocated so whatever size this release has fits.
    """
    import ctypes

    for dep in sorted(library.parent.glob("libggml-base*")) + sorted(
            library.parent.glob("libggml.*")):
        ctypes.CDLL(str(dep), mode=ctypes.RTLD_GLOBAL)
    llama = ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)

    class Params(ctypes.Structure):
        _fields_ = [("nthread", ctypes.c_int32), ("ftype", ctypes.c_int32),
                    ("rest", ctypes.c_ubyte * 1024)]

    llama.llama_model_quantize_default_params.restype = Params
    llama.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p,
                                           ctypes.POINTER(Params)]
    llama.llama_model_quantize.restype = ctypes.c_uint32
    llama.llama_backend_init()
    params = llama.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 1
    rc = llama.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0 or not dst.is_file():
        raise ExportError(f"llama.cpp quantise to ftype {ftype} failed (code {rc})")


def llama_cpp_runtime() -> Path | None:
    """llama.cpp's prebuilt binaries through the npm package node-llama-cpp (no compiling),
    installed once under $JESSY_HOME/tools; None when node/npm or the platform is missing."""
    import platform

    target = jessy_home() / "tools" / f"node-llama-cpp-{NODE_LLAMA_CPP}"
    if (target / "node_modules" / "node-llama-cpp").is_dir():
        return target
    pkg = NODE_PLATFORMS.get((sys.platform, platform.machine()))
    if not (shutil.which("node") and shutil.which("npm") and pkg):
        return None
    target.mkdir(parents=True, exist_ok=True)
    (target / "package.json").write_text('{"name": "jessy-llama-cpp", "private": true}\n')
    proc = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--omit=optional",
                           f"node-llama-cpp@{NODE_LLAMA_CPP}",
                           f"@node-llama-cpp/{pkg}@{NODE_LLAMA_CPP}"],
                          cwd=target, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        return None
    return target


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


def ollama_template(family: str) -> tuple[str, str]:
    """(Ollama TEMPLATE, stop token) for a chat family, from the same turn formats every
    backend trains with (templates.TURN_FORMATS), so the deployed prompt is the trained one."""
    fmt = TURN_FORMATS[family]
    system = "{{ if .System }}" + fmt["system"].format(system="{{ .System }}") + "{{ end }}"
    if fmt.get("fold"):  # no system role: the system text opens the user turn
        turn = fmt["prompt"].format(instruction=system + "{{ .Prompt }}")
    else:
        turn = system + fmt["prompt"].format(instruction="{{ .Prompt }}")
    return turn + fmt.get("lead", "") + "{{ .Response }}" + fmt["end"] + "\n", fmt["end"]


def template_family(chat_template: str | None, spec_choice: str) -> str:
    if spec_choice in TURN_FORMATS:
        return spec_choice
    family = family_of(chat_template or "")
    if family not in TURN_FORMATS:
        raise ExportError("cannot tell the chat template family for the Modelfile; set "
                          f"model.chat_template to one of {', '.join(TURN_FORMATS)}")
    return family


def modelfile_text(gguf_name: str, family: str, system: str | None, parameters: dict) -> str:
    template, stop = ollama_template(family)
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


def export_run(run_dir: Path, gguf_types: list[str] | None = None, ollama: bool = True,
               verify: bool = True, question: str | None = None) -> dict:

    from .rundir import finished_run

    run_dir = Path(run_dir)
    manifest, spec, _ = finished_run(run_dir)  # RunFolderError before export/ is made
    export_spec = spec.get("export", {})
    types = gguf_types or export_spec.get("gguf") or ["f16"]
    out = run_dir / "export"
    out.mkdir(exist_ok=True)
    system = spec.get("data", {}).get("system_prompt")
    question = question or "Who are you?"
    record: dict = {"run": str(run_dir), "gguf": [], "modelfile": None,
                    "converter": f"llama.cpp convert_hf_to_gguf.py from llama-cpp-python "
                                 f"{LLAMA_CPP_PYTHON}"}
    start = time.monotonic()
    if manifest.get("full_model"):  # method: full: the run's model/ is already whole
        merged = run_dir / manifest["full_model"]["path"]
    else:
        merged = merge(manifest["model_path"], run_dir / "adapter", out / "merged")
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

        family = template_family(AutoTokenizer.from_pretrained(merged).chat_template,
                                 spec.get("model", {}).get("chat_template", "auto"))
        params = export_spec.get("ollama", {}).get("parameters") or {}
        chosen = record["gguf"][-1]["path"]
        mf = out / "Modelfile"
        mf.write_text(modelfile_text(chosen, family, system, params))
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
