"""The llama.cpp tools export needs, fetched once into $JESSY_HOME/tools: the converter
(from the llama-cpp-python sdist) and prebuilt binaries (node-llama-cpp, from npm)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ..paths import jessy_home

LLAMA_CPP_PYTHON = "0.3.36"
NODE_LLAMA_CPP = "3.22.1"
NODE_PLATFORMS = {("linux", "x86_64"): "linux-x64", ("linux", "aarch64"): "linux-arm64",
                  ("darwin", "arm64"): "mac-arm64-metal", ("darwin", "x86_64"): "mac-x64"}
NEEDED = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


class ExportError(Exception):
    """What stops an export, said so the user can act; every step raises it (so it lives
    here, in the module the others build on)."""


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


def llama_library() -> Path | None:
    """libllama from node-llama-cpp's prebuilt binaries (Linux/macOS), or None."""
    runtime = llama_cpp_runtime()
    if runtime is None:
        return None
    hits = sorted((runtime / "node_modules" / "@node-llama-cpp").glob("*/bins/*/libllama*"))
    return hits[0] if hits else None


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
