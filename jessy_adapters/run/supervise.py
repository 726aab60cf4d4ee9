"""Process supervision: one backend process, watched from its fork to its exit.

Everything that runs while a backend trains lives here: the child's setup before exec, the
stdout/stderr readers, the timer, the signal handlers, the NaN and divergence guard, peak
RSS, and where each metric event goes (`_recorder`: metrics.jsonl, the tracking sinks, the
console's progress). Why the backend was stopped (the user, a timeout, a bad loss, a
sweep's pruning) is kept on the Supervisor, because the exit code alone cannot tell those
apart.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import failures
from ..backend import Backend
from ..failures import Failure
from ..plots import preload_in_background
from ..procmem import peak_rss_gb
from .console import Eta, progress_line
from .rundir import RunDir

GRACE_SECONDS = float(os.environ.get("JESSY_GRACE_SECONDS", "20"))
NAN_PATIENCE = 1
PRUNED = "pruned"  # a stop reason, not a failure class (failures.ALL)
DIVERGENCE_FACTOR = 50.0


@dataclass
class Outcome:
    ok: bool
    failure: Failure | None = None
    exit_code: int | None = None
    events: int = 0
    pruned: bool = False


@dataclass
class Supervisor:
    """Runs one backend command at a time and holds its process (`child`) while it runs, so
    that a signal handler, the timer or a sweep's pruning can stop it from another thread."""

    console: Callable[[str], None] = print
    timeout: float | None = None
    max_memory_gb: float | None = None
    on_event: Callable[[dict], None] | None = None
    child: subprocess.Popen | None = field(default=None, init=False, repr=False)
    stop_reason: str | None = field(default=None, init=False, repr=False)

    def supervise(self, backend: Backend, command: list[str], env: dict, attempt_dir: Path,
                  run: RunDir, number: int, total_steps: int | None,
                  sinks: Sequence[Callable[[dict], None]] = ()) -> Outcome:
        """Run `command` to its end; every metric event it prints is recorded in metrics.jsonl
        and handed to each of `sinks` (tracking: TensorBoard), `on_event` and the console."""
        stdout_log = open(attempt_dir / "stdout.log", "w", encoding="utf-8")
        stderr_log = open(attempt_dir / "stderr.log", "w", encoding="utf-8")
        tail: collections.deque[str] = collections.deque(maxlen=400)
        self.stop_reason = None
        try:
            proc = subprocess.Popen(command, cwd=attempt_dir, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, bufsize=1,
                                    start_new_session=True, errors="replace",
                                    preexec_fn=functools.partial(_child_setup, _libc(),
                                                                 self.max_memory_gb))
        except OSError as exc:
            stdout_log.close()
            stderr_log.close()
            return Outcome(False, Failure(failures.UNAVAILABLE, f"cannot start backend: {exc}"))
        self.child = proc
        preload_in_background()  # the loss plot's import overlaps the training (after the fork)
        lines: queue.Queue[str | None] = queue.Queue()
        readers = _start_readers(proc, lines, tail, stderr_log)
        timer = None
        if self.timeout:
            timer = threading.Timer(self.timeout, self.stop, args=(failures.TIMEOUT,))
            timer.daemon = True
            timer.start()
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            for sig in previous:
                signal.signal(sig, lambda s, f: self.stop(failures.INTERRUPTED))
        try:
            events = self._watch(backend, proc, lines, tail, stdout_log, run, number,
                                 self._recorder(run, sinks, total_steps))
            while proc.poll() is None:
                time.sleep(0.1)
        except BaseException:
            # jessy itself failed while the backend ran (a full disk writing metrics, a bug):
            # stop the backend too, so no trainer outlives the attempt that owns it
            self.stop(failures.CRASHED, "jessy stopped the backend after its own error")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=3 * GRACE_SECONDS)
            raise
        finally:
            if timer:
                timer.cancel()
            if in_main:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            end_progress = getattr(self.console, "end_progress", None)
            if end_progress is not None:
                end_progress()
            for reader in readers:
                reader.join(timeout=5)
            for log in (stdout_log, stderr_log):
                with contextlib.suppress(OSError):  # a full disk: the first error is reported
                    log.close()
            self.child = None
        return self._outcome(backend, proc.returncode, "".join(tail), events)

    def _watch(self, backend: Backend, proc: subprocess.Popen, lines: queue.Queue,
               tail: collections.deque, stdout_log, run: RunDir, number: int,
               record: Callable[[dict], None]) -> int:
        """Record every event the backend prints (`record`); stop it on a NaN/inf loss or one
        that diverged. Returns the number of events."""
        events, first_loss, peak_rss = 0, None, 0.0
        while True:
            # A short timeout keeps the main thread responsive to Ctrl-C / SIGTERM.
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                return events
            stdout_log.write(line)
            stdout_log.flush()
            tail.append(line)
            event = backend.parse_event(line.rstrip("\n"))
            if event is None:
                continue
            if event.get("type") == "runtime":
                _runtime(run, number, event, self.console)
                continue
            event.update(backend=backend.name, attempt=number, time=time.time())
            rss = peak_rss_gb(proc.pid)
            if rss is not None:
                peak_rss = max(peak_rss, rss)
            if peak_rss:
                event["peak_rss_gb"] = peak_rss
            bad = _non_finite(event)
            record(event)
            events += 1
            loss = event.get("loss")
            if bad:
                self.stop(failures.NAN_LOSS, f"{bad} at step {event.get('step')}")
            elif loss is not None:
                first_loss = loss if first_loss is None else first_loss
                if loss > DIVERGENCE_FACTOR * max(first_loss, 1.0):
                    self.stop(failures.NAN_LOSS, f"loss diverged to {loss:.4g} (first "
                                                 f"{first_loss:.4g}) at step "
                                                 f"{event.get('step')}")

    def _recorder(self, run: RunDir, sinks: Sequence[Callable[[dict], None]],
                  total_steps: int | None) -> Callable[[dict], None]:
        """Where one event goes, in order: metrics.jsonl, the sinks, `on_event`, the console
        (a progress bar where the console draws one, else `progress_line`), with the time
        left of the attempt's planned steps (the schedule's, when the backend gave none)."""
        planned = total_steps or (run.manifest.get("schedule") or {}).get("optimizer_steps")
        eta = Eta(planned)
        progress = getattr(self.console, "progress", None)

        def record(event: dict) -> None:
            run.append_metric(event)
            for sink in sinks:
                sink(event)
            if self.on_event:
                self.on_event(event)
            left = eta.update(event)
            if progress is not None:
                progress(event, total_steps, left)
            else:
                self.console(progress_line(event, total_steps, left))

        return record

    def _outcome(self, backend: Backend, code: int, tail: str, events: int) -> Outcome:
        if self.stop_reason:
            kind, _, detail = self.stop_reason.partition("|")
            if kind == PRUNED:
                return Outcome(False, None, code, events, pruned=True)
            reason = detail or {failures.INTERRUPTED: "stopped by the user (SIGINT/SIGTERM)",
                                failures.TIMEOUT: f"no result within {self.timeout} s"}[kind]
            return Outcome(False, Failure(kind, reason), code, events)
        if code == 0:
            return Outcome(True, None, code, events)
        return Outcome(False, backend.classify(code, tail), code, events)

    def stop(self, kind: str, detail: str = "") -> None:
        """Ask the backend to stop (SIGINT), then insist (SIGTERM, SIGKILL) after a grace."""
        if self.stop_reason is None:
            self.stop_reason = f"{kind}|{detail}"
        proc = self.child
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            return

        def insist() -> None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    proc.wait(timeout=GRACE_SECONDS)
                    return
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(proc.pid, sig)
                    except ProcessLookupError:
                        return

        threading.Thread(target=insist, daemon=True).start()


def _start_readers(proc: subprocess.Popen, lines: queue.Queue, tail: collections.deque,
                   stderr_log) -> list[threading.Thread]:
    """Both pipes drained on threads of their own, stdout line by line into `lines`."""

    def drain_stderr() -> None:
        # keeps reading when the log cannot be written (a full disk): a backend whose
        # stderr pipe is not drained blocks; its last lines stay in `tail`
        writable = True
        for line in proc.stderr:
            tail.append(line)
            if writable:
                try:
                    stderr_log.write(line)
                    stderr_log.flush()
                except OSError:
                    writable = False

    def drain_stdout() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    readers = [threading.Thread(target=f, daemon=True) for f in (drain_stderr, drain_stdout)]
    for reader in readers:
        reader.start()
    return readers


def _runtime(run: RunDir, number: int, event: dict, console: Callable[[str], None]) -> None:
    """Facts the backend reports about itself (versions, device, BLAS) go to run.json."""
    event.pop("type", None)
    run.manifest["attempts"][number - 1]["runtime"] = event
    run.save()
    console("[runtime] " + ", ".join(f"{k}={v}" for k, v in event.items()))


def _child_setup(libc, max_memory_gb: float | None) -> None:
    """Runs in the forked child before exec: only calls prepared in the parent (no imports,
    no library loading), as jessy has threads running when it forks."""
    if libc is not None:
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        # SIGINT back to its default: a shell starts background jobs with SIGINT ignored, the
        # child would inherit that, and Python would then never raise KeyboardInterrupt, so
        # jessy's graceful stop would go unheard (seen: Unsloth trained on to the end)
        libc.signal(int(signal.SIGINT), 0)  # SIG_DFL
    if max_memory_gb:
        limit = int(max_memory_gb * 1024 ** 3)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@functools.cache
def _libc():
    """Linux: the backend gets SIGTERM if jessy dies (even by SIGKILL), so no orphan keeps
    training; its own session keeps a terminal's Ctrl-C for jessy to handle gracefully."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL("libc.so.6", use_errno=True)


def _non_finite(event: dict) -> str | None:
    """Replace NaN/inf by null (metrics.jsonl stays strict JSON); say what was wrong."""
    bad = None
    for key in ("loss", "eval_loss"):
        value = event.get(key)
        if isinstance(value, float) and not math.isfinite(value):
            event[key] = None
            event[f"{key}_non_finite"] = str(value)
            bad = bad or f"{key} became {value}"
    return bad
