"""Failure classes with stable names: they appear in run.json and decide fallback."""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass

UNAVAILABLE = "unavailable"
CONFIG_REJECTED = "config_rejected"
DATA_ERROR = "data_error"
OUT_OF_MEMORY = "out_of_memory"
NAN_LOSS = "nan_loss"
CRASHED = "crashed"
TIMEOUT = "timeout"
INTERRUPTED = "interrupted"

ALL = (UNAVAILABLE, CONFIG_REJECTED, DATA_ERROR, OUT_OF_MEMORY, NAN_LOSS, CRASHED, TIMEOUT,
       INTERRUPTED)

# Another backend can help with these; a bad line in the user's file or a Ctrl-C cannot.
FALLBACK_HELPS = frozenset({UNAVAILABLE, CONFIG_REJECTED, OUT_OF_MEMORY, NAN_LOSS, CRASHED,
                            TIMEOUT})


@dataclass
class Failure:
    kind: str
    reason: str

    def __post_init__(self) -> None:
        if self.kind not in ALL:
            raise ValueError(f"unknown failure class {self.kind!r}")


_OOM = re.compile(r"MemoryError|Cannot allocate memory|can't allocate memory|out of memory|"
                  r"CUDA out of memory|OutOfMemoryError|std::bad_alloc", re.I)


def last_error_line(log_tail: str) -> str:
    """The line a human wants: the exception message at the bottom of a traceback."""
    lines = [ln.strip() for ln in log_tail.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\b", ln) or ": " in ln and (
                "Error" in ln.split(": ", 1)[0]):
            return ln[:500]
    return lines[-1][:500] if lines else "no output"


def classify_exit(returncode: int, log_tail: str) -> Failure:
    """Backend-neutral classification; plugins refine it with their own patterns first."""
    if returncode < 0 or returncode in (128 + 9, 128 + 15):
        signum = -returncode if returncode < 0 else returncode - 128
        known = signum in signal.Signals._value2member_map_
        name = signal.Signals(signum).name if known else signum
        hint = " (the kernel's out-of-memory killer or a user)" if signum == 9 else ""
        return Failure(CRASHED, f"backend killed by {name}{hint}")
    if _OOM.search(log_tail):
        return Failure(OUT_OF_MEMORY, last_error_line(log_tail))
    return Failure(CRASHED, f"exit code {returncode}: {last_error_line(log_tail)}")
