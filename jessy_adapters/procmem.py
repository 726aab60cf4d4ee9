"""Peak memory of a backend as jessy measures it for every backend: the largest resident set
(VmHWM, the kernel's high-water mark) of the backend process and its descendants, read from
/proc, so it means the same whatever the backend reports of itself."""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in (PROC / str(pid) / "task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    except (OSError, ValueError):
        pass
    return out


def _hwm_kib(pid: int) -> int:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def peak_rss_gb(pid: int) -> float | None:
    """None where /proc cannot tell (not Linux, or the process is gone)."""
    seen, todo, peak = set(), [pid], 0
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        peak = max(peak, _hwm_kib(p))
        todo += _children(p)
    return round(peak * 1024 / 1e9, 3) if peak else None
