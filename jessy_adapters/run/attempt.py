"""One attempt: a backend's try at the run, from its check to its normalised outputs.

check -> translate -> write the native files -> launch (supervise.py; the tracking sinks of
tracking.py beside it) -> normalise -> plot, each phase timed in the attempt's run.json
record. Translating and writing is one function shared with `jessy translate`, so that its
preview is exactly what a run launches.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from pathlib import Path

from .. import failures
from ..backend import Backend, RunInputs, Translation, TranslationRefused
from ..envs import BackendEnv
from ..failures import Failure
from ..paths import package_file
from ..plugins import Registry, RegistryError
from ..spec import Spec
from .lifecycle import pause_point
from .rundir import RunDir, _now
from .supervise import Supervisor
from .tensorboard import metric_sinks

RUNTIME_PATH = package_file("runtime")
_SECRET = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|CREDENTIAL", re.I)


def write_native(backend: Backend, spec: Spec, inputs: RunInputs, folder: Path,
                 env: BackendEnv) -> tuple[Translation, dict[str, str]]:
    """Translate `spec` and write the native files and command.txt into `folder`. Returns
    the translation and the variables its command needs; raises TranslationRefused."""
    translation = backend.translate(spec, inputs, folder, env)
    for rel, content in translation.files.items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    launch_env = {**backend.launch_environment(env), **translation.env,
                  "JESSY_RUNTIME_PATH": str(RUNTIME_PATH)}
    (folder / "command.txt").write_text(shell_line(translation.command, launch_env))
    return translation, launch_env


def shell_line(command: list[str], env: dict[str, str]) -> str:
    """The exact command with the environment it needs, runnable by hand in a shell."""
    shown = [f"{k}={v}" for k, v in env.items() if not _SECRET.search(k)]
    return shlex.join(["env", *shown, *command]) + "\n"


class _Record:
    """The attempt's entry in run.json, and the seconds of each of its phases: what jessy
    adds around the backend process itself."""

    def __init__(self, run: RunDir, number: int, name: str):
        self.run, self.name = run, name
        self.fields: dict = {"number": number, "backend": name, "status": "running",
                             "started": _now(), "finished": None, "seconds": None,
                             "failure": None, "exit_code": None, "dir": None, "command": None}
        run.manifest["attempts"].append(self.fields)
        run.save()
        self.start = self._mark = time.monotonic()
        self.phases = self.fields["phases"] = {}

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.phases[phase] = round(now - self._mark, 3)
        self._mark = now

    def seconds(self) -> float:
        return time.monotonic() - self.start

    def end(self, status: str, failure: Failure | None) -> Failure | None:
        self.fields.update(status=status, finished=_now(), seconds=round(self.seconds(), 2))
        if failure:
            self.fields["failure"] = {"kind": failure.kind, "reason": failure.reason}
        self.run.save()
        return failure


def run_attempt(spec: Spec, inputs: RunInputs, run: RunDir, number: int, name: str,
                registry: Registry, supervisor: Supervisor) -> Failure | None:
    """Attempt `number` of the run, on backend `name`: None if it succeeded, else why not.
    `supervisor` runs the backend and carries the console and the limits of the run."""
    record = _Record(run, number, name)
    try:
        backend = registry.get(name)
    except RegistryError as exc:
        return record.end("skipped", Failure(failures.UNAVAILABLE, str(exc)))
    env = BackendEnv(name)
    availability = backend.check(env, inputs.require_accelerator)
    record.lap("check_s")
    record.fields["device"] = availability.device
    record.fields["availability"] = availability.reason
    if not availability.ok:
        return record.end("skipped", Failure(failures.UNAVAILABLE, availability.reason))
    attempt_dir = run.attempt_dir(number, name)
    record.fields["dir"] = str(attempt_dir.relative_to(run.path))
    try:
        translation, launch_env = write_native(backend, spec, inputs, attempt_dir, env)
    except TranslationRefused as exc:
        (attempt_dir / "refused.txt").write_text(str(exc) + "\n")
        return record.end("failed", Failure(failures.CONFIG_REJECTED, str(exc)))
    command_text = shlex.join(translation.command)
    memory = supervisor.max_memory_gb
    record.fields.update(command=command_text, notes=translation.notes,
                         total_steps=translation.total_steps,
                         env={k: v for k, v in launch_env.items() if not _SECRET.search(k)},
                         **({"memory_limit_gb": memory} if memory else {}),
                         versions=env.info().get("packages", []))
    run.save()
    record.lap("translate_s")
    supervisor.console(f"[{name}] {command_text}")
    for note in translation.notes:
        supervisor.console(f"[{name}] note: {note}")
    env_vars = {**os.environ, **launch_env}
    if memory:
        # RLIMIT_AS counts address space: glibc reserves a 64 MiB malloc arena per thread,
        # so a 2-thread Axolotl run hit a 3 GiB limit (and hung) while using 2.1 GB; with
        # 2 arenas it trained under the same limit (benchmarks, docs/backends.md)
        env_vars.setdefault("MALLOC_ARENA_MAX", "2")
    pause_point(run, "launch")
    with metric_sinks(spec, run.path, attempt_dir.name) as sinks:  # tracking.tensorboard
        outcome = supervisor.supervise(backend, translation.command, env_vars, attempt_dir,
                                       run, number, translation.total_steps, sinks)
    record.lap("backend_s")
    record.fields["exit_code"] = outcome.exit_code
    if outcome.pruned:
        run.manifest["summary"] = summarise(run.metrics(), name, record.seconds())
        return record.end("pruned", None)
    if not outcome.ok:
        return record.end("failed", outcome.failure)
    return _normalise(backend, spec, inputs, attempt_dir, record)


def _normalise(backend: Backend, spec: Spec, inputs: RunInputs, attempt_dir: Path,
               record: _Record) -> Failure | None:
    """The backend's outputs into the run's adapter/ or model/ (what its `produces`
    declares), then its summary and plot."""
    run, name = record.run, record.name
    full = spec["method"] == "full"  # a whole model, not an adapter
    out = run.path / ("model" if full else "adapter")
    try:
        info = backend.normalise(attempt_dir, spec, inputs, out)
    except Exception as exc:  # normalisation bugs must not lose the raw outputs
        return record.end("failed", Failure(failures.CRASHED,
                                            f"normalising outputs failed: "
                                            f"{type(exc).__name__}: {exc}"))
    if backend.produces == "nothing":
        run.manifest["outputs"] = {**info, "backend": name, "format": "none"}
    elif not _has_weights(out, full):
        return record.end("failed", Failure(
            failures.CRASHED, f"{name} declares produces = 'weights' but its normalise left "
            f"no {'model weights (*.safetensors)' if full else 'adapter_config.json'} in "
            f"{out.name}/ (a backend that keeps no weights declares produces = 'nothing')"))
    elif full:
        run.manifest["full_model"] = {"path": "model", "backend": name, **info}
    else:
        run.manifest["adapter"] = {"path": "adapter", "backend": name, **info}
    record.lap("normalise_s")
    pause_point(run, "normalised")
    run.manifest["summary"] = summarise(run.metrics(), name, record.seconds())
    _plot(run)
    record.lap("plot_s")
    return record.end("succeeded", None)


def _has_weights(out: Path, full: bool) -> bool:
    """What loading the output opens first: a model's safetensors, an adapter's config
    (checked before run.json names the folder, so no run succeeds without it)."""
    return any(out.glob("*.safetensors")) if full else (out / "adapter_config.json").is_file()


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
    from ..plots import plot_losses

    try:
        plot_losses(run.metrics(), run.path / "plots" / "loss.png")
    except ImportError:
        run.manifest.setdefault("notes", []).append("matplotlib missing: no loss plot")
