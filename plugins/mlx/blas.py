"""A fast BLAS for Linux MLX: the mlx-cpu wheel bundles the reference (netlib) BLAS.

Measured here (benchmarks/mlx_blas.py, 1024x1024 sgemm, 2 cores): 4.6 GFLOP/s bundled,
64 with OpenBLAS on one thread, 124 on two. Preloading the system OpenBLAS makes libmlx
resolve its BLAS symbols there; run.json's runtime.blas shows which library was mapped.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)
INSTALL_HINT = "apt-get install libopenblas0-pthread (Debian/Ubuntu) or set JESSY_OPENBLAS"


def find_openblas() -> Path | None:
    """JESSY_OPENBLAS, else the usual distro paths, else ldconfig's cache."""
    if platform.system() != "Linux":
        return None
    explicit = os.environ.get("JESSY_OPENBLAS")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    for path in CANDIDATES:
        if Path(path).is_file():
            return Path(path)
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True,
                             timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        if "libopenblas.so" in line and "=>" in line:
            return Path(line.split("=>", 1)[1].strip())
    return None


def preload_environment(lib: Path | None) -> dict[str, str]:
    if lib is None:
        return {}
    preload = os.environ.get("LD_PRELOAD", "")
    libpath = os.environ.get("LD_LIBRARY_PATH", "")
    return {
        "LD_PRELOAD": f"{lib}:{preload}" if preload else str(lib),
        "LD_LIBRARY_PATH": f"{lib.parent}:{libpath}" if libpath else str(lib.parent),
    }
