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


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def torch_threads_env(processes: int = 1) -> dict[str, str]:
    """Every usable core, shared among the training processes, unless JESSY_TORCH_THREADS
    says otherwise.

    benchmarks/throughput.py on an idle 2-core box, SmolLM2-135M LoRA, s/step with 1 -> 2
    threads: Unsloth 2.92 -> 2.05, LLaMA-Factory 1.78 -> 1.53, Axolotl 2.87 -> 1.98. (On a box
    already busy with other jobs, 2 threads were far slower than 1: set JESSY_TORCH_THREADS=1
    when running trainings side by side.)
    """
    threads = os.environ.get("JESSY_TORCH_THREADS") or str(max(1, usable_cores() // processes))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
