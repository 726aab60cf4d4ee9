"""Attempts, subprocess supervision, failure classification and fallback.

Policy lives here, never in a plugin: which backend runs next, when to stop, where
outputs go. Everything an attempt produced (native files, logs, checkpoints) stays in
attempts/NN-<backend>/ whatever happens after it.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math
import os
import queue
import re
import resource
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import failures
from .backend import Backend, PreparedData, RunInputs, TranslationRefused
from .data import DataError, prepare
from .envs import BackendEnv
from .failures import Failure
from .lifecycle import RunBusy, mark_dead_attempts, owning, pause_point
from .models import ModelError, require_local, resolve_model
from .paths import package_file
from .plots import preload_in_background
from .plugins import Registry, RegistryError
from .procmem import peak_rss_gb
from .rundir import RunDir, _now, process_age
from .schedule import run_schedule
from .spec import Spec
from .templates import chat_family, template_summary

RUNTIME_PATH = package_file("runtime")
GRACE_SECONDS = float(os.environ.get("JESSY_GRACE_SECONDS", "20"))
_SECRET = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|CREDENTIAL", re.I)
NAN_PATIENCE = 1
PRUNED = "pruned"  # a stop reason, not a failure class (failures.ALL)
DIVERGENCE_FACTOR = 50.0


@dataclass
class Outcome:
    ok: bool
    failure: Failure | None = None
    exit_code: int | None = None
    events: int = 0


@dataclass
class Runner:
    registry: Registry
    console: Callable[[str], None] = print
    timeout: float | None = None
    max_memory_gb: float | None = None
    """Address-space limit for each backend process (RLIMIT_AS): a run that needs more fails
    as out_of_memory instead of swapping the machine to a halt (`jessy run --max-memory`)."""
    on_event: Callable[[dict], None] | None = None
    """Called with every metric event as it is recorded (`jessy run --events`)."""
    _child: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _stop_reason: str | None = field(default=None, init=False, repr=False)
    _pruned: dict | None = field(default=None, init=False, repr=False)

    # --- the whole run -------------------------------------------------------------------
    def run(self, spec: Spec, chain: list[str], output_dir: Path,
            require_accelerator: bool = False) -> RunDir:
        run = RunDir.create(output_dir, spec, chain)
        run.timings["startup_s"] = process_age()
        self.console(f"run directory: {run.path}")
        with owning(run, self.console):
            pause_point(run, "created")
            try:
                with run.timed("prepare_s"):
                    inputs = self._inputs(spec, run, require_accelerator)
            except (DataError, ModelError) as exc:
                kind = (failures.DATA_ERROR if isinstance(exc, DataError)
                        else failures.CONFIG_REJECTED)
                run.manifest["failure"] = {"kind": kind, "reason": str(exc)}
                run.finish("failed")
                self.console(f"error: {exc}")
                return run
            pause_point(run, "prepared")
            self._chain(spec, inputs, run, chain, first_number=1)
        return run

    def resume(self, run_dir: Path, require_accelerator: bool = False) -> RunDir:
        """Continue a failed or interrupted run on the backend that was running, from its
        last checkpoint, with the same prepared data (same order)."""
        from .spec import spec_from_dict

        run = open_run(Path(run_dir).resolve())
        m = run.manifest
        if m["status"] == "succeeded":
            raise ResumeError(f"{run.path} already succeeded; nothing to resume")
        started = [a for a in m["attempts"] if a.get("dir")]
        if not started:
            raise ResumeError(f"{run.path}: no attempt got far enough to resume")
        last = started[-1]
        try:
            with owning(run, self.console):
                mark_dead_attempts(run)
                base = Path(m["spec_file"]).parent if m.get("spec_file") else run.path
                spec = spec_from_dict(yaml_load(run.path / "spec.yaml"), base)
                data = prepared_from_manifest(run)
                inputs = RunInputs(model_path=m["model_path"], data=data,
                                   require_accelerator=require_accelerator,
                                   resume_from=run.path / last["dir"])
                inputs = replace(inputs, schedule=run_schedule(spec, inputs))
                m["status"] = "running"
                m["finished"] = None
                m["timings"] = {"startup_s": process_age()}  # this (resuming) process's
                m.setdefault("resumed", []).append({"at": _now(),
                                                    "from_attempt": last["number"]})
                run.save()
                self.console(f"resuming {run.path} on {last['backend']} from {last['dir']}")
                self._chain(spec, inputs, run, [last["backend"]],
                            first_number=len(m["attempts"]) + 1)
        except RunBusy as exc:
            raise ResumeError(str(exc)) from None
        return run

    def _chain(self, spec: Spec, inputs: RunInputs, run: RunDir, chain: list[str],
               first_number: int) -> RunDir:
        self._pruned = None
        for offset, name in enumerate(chain):
            number = first_number + offset
            failure = self._attempt(spec, inputs, run, number, name)
            if self._pruned:
                # a sweep's verdict on the hyper-parameters, not on the backend: no fallback
                run.manifest["pruned"] = self._pruned
                run.manifest["failure"] = None
                run.finish("pruned")
                return run
            if failure is None:
                run.manifest["winner"] = name
                run.manifest["failure"] = None
                run.finish("succeeded")
                return run
            run.manifest["failure"] = {"kind": failure.kind, "reason": failure.reason,
                                       "backend": name}
            run.save()
            if failure.kind not in failures.FALLBACK_HELPS:
                break
            if offset + 1 < len(chain):
                self.console(f"{name}: {failure.kind}: {failure.reason}")
                self.console(f"falling back to {chain[offset + 1]}")
                if spec["training"]["continue_on_fallback"]:
                    inputs = self._continue_from(spec, run, name, inputs)
        status = "interrupted" if run.manifest["failure"]["kind"] == failures.INTERRUPTED \
            else "failed"
        run.finish(status)
        return run

    def _continue_from(self, spec: Spec, run: RunDir, name: str,
                       inputs: RunInputs) -> RunInputs:
        """Seed the next backend with the failed attempt's last checkpoint, as PEFT."""
        record = run.manifest["attempts"][-1]
        if not record.get("dir"):
            return inputs
        if spec["method"] == "full":
            self.console("method full: checkpoints are whole models, which jessy does not "
                         "carry between backends; the next backend starts from the base model")
            return inputs
        attempt_dir = run.path / record["dir"]
        try:
            seed = self.registry.get(name).checkpoint_as_peft(attempt_dir,
                                                              attempt_dir / "continue-peft")
        except Exception as exc:  # a conversion problem must not stop the fallback itself
            self.console(f"cannot continue from {name}'s checkpoint: {exc}")
            return inputs
        if seed is None:
            return inputs
        record["continue_adapter"] = str(seed.relative_to(run.path))
        run.save()
        self.console(f"the next backend starts from {seed}")
        return replace(inputs, init_adapter=seed)

    def _inputs(self, spec: Spec, run: RunDir, require_accelerator: bool) -> RunInputs:
        model = require_local(resolve_model(spec["model"]["name_or_path"], spec.base_dir))
        family = chat_family(model, spec["model"]["chat_template"])
        run.manifest["chat_family"] = family
        self.console(f"chat template: {template_summary(model, spec['model']['chat_template'])}"
                     + (f", family {family}" if family else ", family unknown"))
        data = prepare(spec, run.path / "data")
        run.manifest["data"] = {"train": str(data.train), "validation": str(data.validation)
                                if data.validation else None, "format": data.format,
                                "n_train": data.n_train, "n_validation": data.n_validation}
        run.manifest["model_path"] = model
        inputs = RunInputs(model_path=model, data=data, require_accelerator=require_accelerator)
        schedule = run_schedule(spec, inputs)
        run.manifest["schedule"] = schedule.to_json()
        run.save()
        return replace(inputs, schedule=schedule)

    # --- one backend ---------------------------------------------------------------------
    def _attempt(self, spec: Spec, inputs: RunInputs, run: RunDir, number: int,
                 name: str) -> Failure | None:
        record: dict = {"number": number, "backend": name, "status": "running",
                        "started": _now(), "finished": None, "seconds": None,
                        "failure": None, "exit_code": None, "dir": None, "command": None}
        run.manifest["attempts"].append(record)
        run.save()
        start = time.monotonic()
        # seconds per step of the attempt: what jessy adds vs the backend process itself
        phases = record["phases"] = {}
        mark = [start]

        def lap(phase: str) -> None:
            now = time.monotonic()
            phases[phase] = round(now - mark[0], 3)
            mark[0] = now

        def end(status: str, failure: Failure | None) -> Failure | None:
            record.update(status=status, finished=_now(),
                          seconds=round(time.monotonic() - start, 2))
            if failure:
                record["failure"] = {"kind": failure.kind, "reason": failure.reason}
            run.save()
            return failure

        try:
            backend = self.registry.get(name)
        except RegistryError as exc:
            return end("skipped", Failure(failures.UNAVAILABLE, str(exc)))
        env = BackendEnv(name)
        availability = backend.check(env, inputs.require_accelerator)
        lap("check_s")
        record["device"] = availability.device
        record["availability"] = availability.reason
        if not availability.ok:
            return end("skipped", Failure(failures.UNAVAILABLE, availability.reason))
        attempt_dir = run.attempt_dir(number, name)
        record["dir"] = str(attempt_dir.relative_to(run.path))
        try:
            translation = backend.translate(spec, inputs, attempt_dir, env)
        except TranslationRefused as exc:
            (attempt_dir / "refused.txt").write_text(str(exc) + "\n")
            return end("failed", Failure(failures.CONFIG_REJECTED, str(exc)))
        for rel, content in translation.files.items():
            target = attempt_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        command_text = shlex.join(translation.command)
        extra_env = {**backend.launch_environment(env), **translation.env,
                     "JESSY_RUNTIME_PATH": str(RUNTIME_PATH)}
        (attempt_dir / "command.txt").write_text(shell_line(translation.command, extra_env))
        record.update(command=command_text, notes=translation.notes,
                      total_steps=translation.total_steps,
                      env={k: v for k, v in extra_env.items() if not _SECRET.search(k)},
                      **({"memory_limit_gb": self.max_memory_gb} if self.max_memory_gb else {}),
                      versions=env.info().get("packages", []))
        run.save()
        lap("translate_s")
        self.console(f"[{name}] {command_text}")
        for note in translation.notes:
            self.console(f"[{name}] note: {note}")
        env_vars = {**os.environ, **extra_env}
        if self.max_memory_gb:
            # RLIMIT_AS counts address space: glibc reserves a 64 MiB malloc arena per thread,
            # so a 2-thread Axolotl run hit a 3 GiB limit (and hung) while using 2.1 GB; with
            # 2 arenas it trained under the same limit (benchmarks, docs/backends.md)
            env_vars.setdefault("MALLOC_ARENA_MAX", "2")
        pause_point(run, "launch")
        outcome = self._supervise(backend, translation.command, env_vars, attempt_dir, run,
                                  number, translation.total_steps)
        lap("backend_s")
        record["exit_code"] = outcome.exit_code
        if self._pruned:
            run.manifest["summary"] = summarise(run.metrics(), name, time.monotonic() - start)
            return end("pruned", None)
        if not outcome.ok:
            return end("failed", outcome.failure)
        full = spec["method"] == "full"  # a whole model, not an adapter
        try:
            info = backend.normalise(attempt_dir, spec, inputs,
                                     run.path / ("model" if full else "adapter"))
        except Exception as exc:  # normalisation bugs must not lose the raw outputs
            return end("failed", Failure(failures.CRASHED,
                                         f"normalising outputs failed: {type(exc).__name__}: "
                                         f"{exc}"))
        if info.get("format") == "none":
            run.manifest["outputs"] = {"backend": name, **info}
        elif full:
            run.manifest["full_model"] = {"path": "model", "backend": name, **info}
        else:
            run.manifest["adapter"] = {"path": "adapter", "backend": name, **info}
        lap("normalise_s")
        pause_point(run, "normalised")
        run.manifest["summary"] = summarise(run.metrics(), name, time.monotonic() - start)
        _plot(run)
        lap("plot_s")
        return end("succeeded", None)

    def _supervise(self, backend: Backend, command: list[str], env: dict, attempt_dir: Path,
                   run: RunDir, number: int, total_steps: int | None) -> Outcome:
        stdout_log = open(attempt_dir / "stdout.log", "w", encoding="utf-8")
        stderr_log = open(attempt_dir / "stderr.log", "w", encoding="utf-8")
        tail: collections.deque[str] = collections.deque(maxlen=400)
        self._stop_reason = None
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
        self._child = proc
        preload_in_background()  # the loss plot's import overlaps the training (after the fork)

        lines: queue.Queue[str | None] = queue.Queue()

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
        timer = None
        if self.timeout:
            timer = threading.Timer(self.timeout, self._stop, args=(failures.TIMEOUT,))
            timer.daemon = True
            timer.start()
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            for sig in previous:
                signal.signal(sig, lambda s, f: self._stop(failures.INTERRUPTED))
        events, first_loss, peak_rss = 0, None, 0.0
        try:
            while True:
                # A short timeout keeps the main thread responsive to Ctrl-C / SIGTERM.
                try:
                    line = lines.get(timeout=0.2)
                except queue.Empty:
                    continue
                if line is None:
                    break
                stdout_log.write(line)
                stdout_log.flush()
                tail.append(line)
                event = backend.parse_event(line.rstrip("\n"))
                if event is None:
                    continue
                if event.get("type") == "runtime":
                    self._runtime(run, number, event)
                    continue
                event.update(backend=backend.name, attempt=number, time=time.time())
                rss = peak_rss_gb(proc.pid)
                if rss is not None:
                    peak_rss = max(peak_rss, rss)
                if peak_rss:
                    event["peak_rss_gb"] = peak_rss
                bad = _non_finite(event)
                run.append_metric(event)
                events += 1
                if self.on_event:
                    self.on_event(event)
                self.console(progress_line(event, total_steps))
                loss = event.get("loss")
                if bad:
                    self._stop(failures.NAN_LOSS, f"{bad} at step {event.get('step')}")
                elif loss is not None:
                    first_loss = loss if first_loss is None else first_loss
                    if loss > DIVERGENCE_FACTOR * max(first_loss, 1.0):
                        self._stop(failures.NAN_LOSS, f"loss diverged to {loss:.4g} (first "
                                                      f"{first_loss:.4g}) at step "
                                                      f"{event.get('step')}")
            while proc.poll() is None:
                time.sleep(0.1)
        except BaseException:
            # jessy itself failed while the backend ran (a full disk writing metrics, a bug):
            # stop the backend too, so no trainer outlives the attempt that owns it
            self._stop(failures.CRASHED, "jessy stopped the backend after its own error")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=3 * GRACE_SECONDS)
            raise
        finally:
            if timer:
                timer.cancel()
            if in_main:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            for reader in readers:
                reader.join(timeout=5)
            for log in (stdout_log, stderr_log):
                with contextlib.suppress(OSError):  # a full disk: the first error is reported
                    log.close()
            self._child = None
        code = proc.returncode
        if self._stop_reason:
            kind, _, detail = self._stop_reason.partition("|")
            if kind == PRUNED:
                return Outcome(False, None, code, events)
            reason = detail or {failures.INTERRUPTED: "stopped by the user (SIGINT/SIGTERM)",
                                failures.TIMEOUT: f"no result within {self.timeout} s"}[kind]
            return Outcome(False, Failure(kind, reason), code, events)
        if code == 0:
            return Outcome(True, None, code, events)
        return Outcome(False, backend.classify(code, "".join(tail)), code, events)

    def _runtime(self, run: RunDir, number: int, event: dict) -> None:
        """Facts the backend reports about itself (versions, device, BLAS) go to run.json."""
        event.pop("type", None)
        run.manifest["attempts"][number - 1]["runtime"] = event
        run.save()
        self.console("[runtime] " + ", ".join(f"{k}={v}" for k, v in event.items()))

    def prune(self, reason: str, step: int | None = None) -> None:
        """Stop the running backend because a sweep judged its trial behind (called from
        `on_event`): the run ends as `pruned`, a status of its own, with no fallback."""
        if self._pruned is None and self._stop_reason is None:
            self._pruned = {"reason": reason, "step": step}
            self._stop(PRUNED, reason)

    def _stop(self, kind: str, detail: str = "") -> None:
        """Ask the backend to stop (SIGINT), then insist (SIGTERM, SIGKILL) after a grace."""
        if self._stop_reason is None:
            self._stop_reason = f"{kind}|{detail}"
        proc = self._child
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


def shell_line(command: list[str], env: dict[str, str]) -> str:
    """The exact command with the environment it needs, runnable by hand in a shell."""
    shown = [f"{k}={v}" for k, v in env.items() if not _SECRET.search(k)]
    return shlex.join(["env", *shown, *command]) + "\n"


class ResumeError(Exception):
    pass


def open_run(path: Path) -> RunDir:
    """A run folder to resume, or a ResumeError saying why it is not one."""
    if not (path / "run.json").is_file():
        raise ResumeError(f"{path} is not a jessy run folder (no run.json)")
    try:
        run = RunDir.open(path)
        m = run.manifest
        if not isinstance(m, dict) or not isinstance(m.get("attempts"), list) or not all(
                isinstance(a, dict) for a in m["attempts"]):
            raise TypeError("attempts is not a list of objects")
        if m.get("status") not in ("running", "failed", "interrupted", "succeeded", "pruned"):
            raise TypeError(f"unknown status {m.get('status')!r}")
        if m["status"] != "succeeded" and any(a.get("dir") for a in m["attempts"]):
            prepared_from_manifest(run)
            if not (path / "spec.yaml").is_file():
                raise TypeError("spec.yaml is missing")
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
        raise ResumeError(f"{path}/run.json cannot be resumed: {type(exc).__name__}: "
                          f"{exc}") from None
    return run


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def prepared_from_manifest(run: RunDir) -> PreparedData:
    d = run.manifest["data"]
    return PreparedData(Path(d["train"]), Path(d["validation"]) if d["validation"] else None,
                        d["format"], d["n_train"], d["n_validation"])


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


def progress_line(event: dict, total_steps: int | None) -> str:
    step = event.get("step")
    of = f"/{total_steps}" if total_steps else ""
    parts = [f"[{event.get('backend')}] step {step}{of}"]
    if event.get("loss") is not None:
        parts.append(f"loss {event['loss']:.4f}")
    if event.get("eval_loss") is not None:
        parts.append(f"eval_loss {event['eval_loss']:.4f}")
    if event.get("learning_rate") is not None:
        parts.append(f"lr {event['learning_rate']:.2e}")
    if event.get("trained_tokens_per_second") is not None:
        parts.append(f"{event['trained_tokens_per_second']:.0f} trained tok/s")
    if event.get("peak_rss_gb") is not None:
        parts.append(f"peak RSS {event['peak_rss_gb']:.2f} GB")
    return "  ".join(parts)


def summarise(events: list[dict], backend: str, seconds: float) -> dict:
    """The winning attempt's figures, in the one metric vocabulary (metrics-event schema)."""
    mine = [e for e in events if e.get("backend") == backend]
    if mine:  # the last attempt of that backend (a resumed run counts on from its steps)
        last = max(e.get("attempt", 0) for e in mine)
        mine = [e for e in mine if e.get("attempt", 0) == last]
    train = [e for e in mine if e.get("loss") is not None]
    evals = [e for e in mine if e.get("eval_loss") is not None]
    rates = [e["trained_tokens_per_second"] for e in train
             if e.get("trained_tokens_per_second")]
    peaks = [e["peak_rss_gb"] for e in mine if e.get("peak_rss_gb")]
    return {
        "backend": backend,
        "steps": max((e.get("step") or 0 for e in train), default=0),
        "first_loss": train[0]["loss"] if train else None,
        "final_loss": train[-1]["loss"] if train else None,
        "first_eval_loss": evals[0]["eval_loss"] if evals else None,
        "final_eval_loss": evals[-1]["eval_loss"] if evals else None,
        "input_tokens": sum(e.get("input_tokens") or 0 for e in train) or None,
        "trained_tokens": sum(e.get("trained_tokens") or 0 for e in train) or None,
        "trained_tokens_per_second": round(sum(rates) / len(rates), 1) if rates else None,
        "peak_rss_gb": max(peaks) if peaks else None,
        "seconds": round(seconds, 1),
    }


def _plot(run: RunDir) -> None:
    from .plots import plot_losses

    try:
        plot_losses(run.metrics(), run.path / "plots" / "loss.png")
    except ImportError:
        run.manifest.setdefault("notes", []).append("matplotlib missing: no loss plot")
