"""A merged Hugging Face folder -> GGUF: f16 by llama.cpp's converter, q8_0/q4_k_m by
llama.cpp's own quantiser (libllama through ctypes) when its binaries are at hand."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from .tools import NODE_LLAMA_CPP, ExportError, converter_dir, llama_library

PURE_PYTHON_TYPES = ("f16", "q8_0")
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
        raise ExportError(converter_failure(proc.stderr, merged, outtype))
    return out_file


_CHKHSH = re.compile(r"chkhsh:\s*([0-9a-f]{64})")
_NO_SPM = re.compile(r"Missing (\S*tokenizer\.model)")


def converter_failure(stderr: str, merged: Path, outtype: str) -> str:
    """What the converter's failure means, said without its traceback: the two tokenizer
    failures by name (a byte-level BPE tokenizer llama.cpp does not know; an architecture
    whose vocabulary it reads from a SentencePiece file that is not there), else its last
    line."""
    if "BPE pre-tokenizer was not recognized" in stderr:
        found = _CHKHSH.search(stderr)
        return (f"GGUF {outtype}: llama.cpp's converter does not recognise the tokenizer of "
                f"{merged} (pre-tokenizer hash {found.group(1) if found else 'unknown'}). It "
                "identifies a byte-level BPE tokenizer by hashing how it splits a fixed text "
                "and knows only those of published models (convert_hf_to_gguf.py, "
                "get_vocab_base_pre), so a tokenizer trained from scratch, as jessy's tiny "
                "models' are, or one changed since cannot be converted. Export a model with "
                "its published tokenizer, or one with a SentencePiece tokenizer.model (Gemma)")
    missing = _NO_SPM.search(stderr)
    if missing:
        return (f"GGUF {outtype}: llama.cpp's converter reads this architecture's vocabulary "
                f"from a SentencePiece tokenizer.model, which {merged} does not have "
                f"({missing.group(1)})")
    last = stderr.strip().splitlines()[-1:] or ["(no output)"]
    return f"llama.cpp converter failed ({outtype}): {last[0]}"


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
