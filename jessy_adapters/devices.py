"""Is there an NVIDIA GPU? Answered in milliseconds, without importing torch or a backend.

Backends' imports cost 20-40 s (Unsloth's 30-40 s); these are the same signals they rely
on, checked first by every plugin that needs CUDA.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def nvidia_gpu() -> str | None:
    """A short description of the GPU signal found, or None."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return None
    version = Path("/proc/driver/nvidia/version")
    if version.is_file():
        return "NVIDIA driver " + version.read_text().split("Kernel Module")[-1].split()[0] \
            if "Kernel Module" in version.read_text() else "NVIDIA driver"
    if shutil.which("nvidia-smi"):
        return "nvidia-smi present"
    return None


def torch_threads_env() -> dict[str, str]:
    """One torch thread unless JESSY_TORCH_THREADS says otherwise.

    Measured on a 2-core box (docs/BACKENDS.md): 4 Unsloth CPU steps took 16.6 s with 2
    threads and 0.40 s with 1; LLaMA-Factory 3-4 s/step with 1 vs 2-16 s with spikes on 2.
    """
    threads = os.environ.get("JESSY_TORCH_THREADS", "1")
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
