"""The run's lifecycle, enforced in one place: one owner per run folder, and every way out
(a normal end, Ctrl-C or SIGTERM at any phase, an exception in jessy or a plugin, a full
disk) leaves run.json finished with a status and a reason, attempts included.

The owner holds an exclusive `flock` on the run folder's `.lock` for as long as it works on
the run; the kernel releases it when the owner dies (even by SIGKILL), so a dead owner never
blocks `--resume`, and a live one always does.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import threading
from pathlib import Path

from .. import failures
from ..failures import Failure

LOCK = ".lock"
RESERVE = 256 * 1024
"""Bytes the lock file holds back while a run is owned: on a full disk they are given up so
that run.json can still be finished."""
PHASES = ("created", "prepared", "launch", "normalised")
"""Phase boundaries a fault test can hold a run at (JESSY_PAUSE_AT=<phase>)."""


class RunBusy(Exception):
    """Another live process owns the run folder."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwound exactly like Ctrl-C so the run is finished as interrupted."""


def _lock(path: Path) -> int:
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 16, 0).split(b"\n")[0].decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RunBusy(f"{path} is in use by another jessy process (pid {owner}); wait for it "
                      "to finish or stop it first") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid():<15}\n".encode(), 0)
    with contextlib.suppress(OSError):  # a disk already too full: no reserve, still owned
        os.pwrite(fd, b"\0" * RESERVE, 16)
    return fd


def _raise_terminated(signum, frame):
    raise Terminated()


def settle(run, status: str, failure: Failure) -> None:
    """Finish a run that is still marked running, and every attempt still marked running,
    with `failure`; best effort on a full disk (the message still reaches the console)."""
    from .rundir import _now

    for attempt in run.manifest.get("attempts", []):
        if attempt.get("status") == "running":
            attempt.update(status=status, finished=_now(),
                           failure={"kind": failure.kind, "reason": failure.reason})
    if run.manifest.get("failure") is None or run.manifest.get("status") == "running":
        run.manifest["failure"] = {"kind": failure.kind, "reason": failure.reason}
    try:
        run.finish(status)
    except OSError:
        with contextlib.suppress(OSError):  # give back the lock file's reserve, try again
            os.truncate(run.path / LOCK, 16)
        try:
            run.finish(status)
        except OSError as exc:
            print(f"jessy: could not write {run.path / 'run.json'}: {exc.strerror}",
                  file=sys.stderr)


@contextlib.contextmanager
def owning(run, console=print):
    """Own `run` for the block: lock it, turn SIGTERM into an interrupt, and finish run.json
    on every way out. An interrupt or an OS error (disk full, read-only) ends the block
    normally, the run saying `interrupted` or `failed` and why; any other exception is
    recorded, then re-raised."""
    fd = _lock(run.path)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
    try:
        yield run
        if run.manifest.get("status") == "running":  # a path that forgot to finish
            settle(run, "failed", Failure(failures.CRASHED, "the run ended without a result"))
    except KeyboardInterrupt:
        console("interrupted: run.json records what was done")
        settle(run, "interrupted", Failure(failures.INTERRUPTED,
                                           "stopped by the user (SIGINT/SIGTERM) while no "
                                           "backend was running"))
    except OSError as exc:
        # the machine, not the spec or jessy: a full disk, a folder made read-only mid-run
        # (what was written so far stays; the message says where it failed)
        where = f" ({exc.filename})" if exc.filename else ""
        console(f"error: jessy could not write: {exc.strerror or exc}{where}")
        settle(run, "failed", Failure(failures.CRASHED, f"jessy could not write: "
                                      f"{exc.strerror or exc}{where}"))
    except BaseException as exc:
        settle(run, "failed", Failure(failures.CRASHED,
                                      f"jessy failed: {type(exc).__name__}: {exc}"))
        raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 16)  # the reserve is for the run's lifetime only
        os.close(fd)  # releases the lock


def mark_dead_attempts(run) -> None:
    """Attempts a previous owner left `running` (it died: SIGKILL, power): say so, so a
    resumed run's manifest never holds an attempt that claims to run."""
    from .rundir import _now

    for attempt in run.manifest.get("attempts", []):
        if attempt.get("status") == "running":
            attempt.update(status="failed", finished=attempt.get("finished") or _now(),
                           failure={"kind": failures.CRASHED,
                                    "reason": "the jessy process that ran this attempt died "
                                              "before it finished (killed?)"})


def pause_point(run, phase: str) -> None:
    """Test hook: with JESSY_PAUSE_AT=<phase>, write `<run>/.paused-<phase>` and wait until
    it is removed or says `go` (or a signal arrives), so faults reach each phase
    deterministically; `go` releases without freeing disk space (the full-disk tests)."""
    if os.environ.get("JESSY_PAUSE_AT") != phase:
        return
    import time

    marker = run.path / f".paused-{phase}"
    marker.write_text(str(os.getpid()))
    while marker.exists() and marker.read_text(errors="replace") != "go":
        time.sleep(0.02)
