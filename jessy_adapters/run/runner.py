"""The run's policy: the fallback chain and how a run ends.

Policy lives here, never in a plugin: which backend runs next (fallback, continuing from the
failed attempt's checkpoint), when to stop, and how the run ends (succeeded, failed,
interrupted, pruned); resuming a run that stopped. One attempt is attempt.py, its process
supervise.py. Everything an attempt produced (native files, logs, checkpoints) stays in
attempts/NN-<backend>/ whatever happens after it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import failures
from ..backend import PreparedData, RunInputs
from ..data import DataError, prepare
from ..data.room import check_room
from ..failures import Failure
from ..models import ModelError, require_local, resolve_model
from ..plugins import Registry
from ..schedule import run_schedule
from ..spec import Spec
from ..templates import chat_family, template_summary
from .attempt import RUNTIME_PATH, run_attempt, shell_line, summarise
from .lifecycle import RunBusy, mark_dead_attempts, owning, pause_point
from .rundir import RunDir, _now, process_age
from .supervise import (
    DIVERGENCE_FACTOR,
    GRACE_SECONDS,
    NAN_PATIENCE,
    PRUNED,
    Supervisor,
    progress_line,
)

__all__ = ["DIVERGENCE_FACTOR", "GRACE_SECONDS", "NAN_PATIENCE", "PRUNED", "RUNTIME_PATH",
           "NotAResumableRun", "ResumeError", "Runner", "open_run", "prepared_from_manifest",
           "progress_line", "shell_line", "summarise"]


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
    _supervisor: Supervisor = field(default_factory=Supervisor, init=False, repr=False)
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
        from ..spec import spec_from_dict

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
        for note in check_room(spec, data, model):  # DataError: rows cut before their answer
            run.manifest.setdefault("notes", []).append(note)
            self.console(f"note: {note}")
        run.manifest["data"] = {"train": str(data.train), "validation": str(data.validation)
                                if data.validation else None, "format": data.format,
                                "n_train": data.n_train, "n_validation": data.n_validation}
        run.manifest["model_path"] = model
        inputs = RunInputs(model_path=model, data=data, require_accelerator=require_accelerator)
        schedule = run_schedule(spec, inputs)
        run.manifest["schedule"] = schedule.to_json()
        run.save()
        return replace(inputs, schedule=schedule)

    # --- the attempt in flight ----------------------------------------------------------
    def _attempt(self, spec: Spec, inputs: RunInputs, run: RunDir, number: int,
                 name: str) -> Failure | None:
        self._supervisor = Supervisor(self.console, self.timeout, self.max_memory_gb,
                                      self.on_event)
        return run_attempt(spec, inputs, run, number, name, self.registry, self._supervisor)

    def prune(self, reason: str, step: int | None = None) -> None:
        """Stop the running backend because a sweep judged its trial behind (called from
        `on_event`): the run ends as `pruned`, a status of its own, with no fallback."""
        if self._pruned is None and self._supervisor.stop_reason is None:
            self._pruned = {"reason": reason, "step": step}
            self._supervisor.stop(PRUNED, reason)

    @property
    def _child(self) -> subprocess.Popen | None:
        """The backend process of the attempt in flight (tests kill it to fake a crash)."""
        return self._supervisor.child

    def _stop(self, kind: str, detail: str = "") -> None:
        """Stop the attempt in flight as if `kind` had happened (tests: an interrupt)."""
        self._supervisor.stop(kind, detail)


class ResumeError(Exception):
    """The run cannot be continued as it stands (finished, busy, nothing to resume)."""


class NotAResumableRun(ResumeError):
    """What was given is no run folder jessy can read (bad input: the CLI's exit 2)."""


def open_run(path: Path) -> RunDir:
    """A run folder to resume, or a ResumeError saying why it is not one."""
    if not (path / "run.json").is_file():
        raise NotAResumableRun(f"{path} is not a jessy run folder (no run.json)")
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
        raise NotAResumableRun(f"{path}/run.json cannot be resumed: {type(exc).__name__}: "
                          f"{exc}") from None
    return run


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def prepared_from_manifest(run: RunDir) -> PreparedData:
    d = run.manifest["data"]
    return PreparedData(Path(d["train"]), Path(d["validation"]) if d["validation"] else None,
                        d["format"], d["n_train"], d["n_validation"])
