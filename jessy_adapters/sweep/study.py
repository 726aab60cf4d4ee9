"""The trials of a sweep: an Optuna study in SQLite inside the sweep folder, each trial an
ordinary run directory, pruned on its live validation loss through the runner.

The study is the sweep's memory: run the same command again and finished trials (complete,
pruned or failed) are kept; a trial a killed sweep left running is marked abandoned and its
parameters are tried again. One sweep process owns a folder at a time (a lock file).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..plugins import Registry
from ..run.runner import Runner
from ..spec import Spec, SpecError, apply_defaults, load_schema, validate
from .objectives import METRICS, Constraint, needs_eval, read_metrics
from .space import Space, with_values

STUDY = "study.db"
LOCK = ".lock"


class SweepError(Exception):
    """A sweep that cannot start or go on (bad input, a busy or foreign folder): exit 2."""


@dataclass
class SweepOptions:
    trials: int
    chain: list[str]
    objectives: list[str] = field(default_factory=lambda: ["final_eval_loss"])
    constraints: list[Constraint] = field(default_factory=list)
    budget_minutes: float | None = None
    sampler: str = "tpe"
    seed: int | None = None
    prune: bool = True
    prune_after: int = 2
    """Trials that must have reported at a step before a later one can be pruned there."""
    held_out: Path | None = None
    general: Path | None = None
    eval_limit: int | None = None
    require_accelerator: bool = False
    timeout: float | None = None


@dataclass
class SweepResult:
    folder: Path
    study: object
    interrupted: bool = False
    stopped_for_budget: bool = False


def sweep_folder(output: Path, spec: Spec) -> Path:
    return Path(output) / f"sweep-{spec.name}"


def trial_spec(spec: Spec, values: dict) -> Spec:
    """The spec as written with the trial's values set, validated and defaulted; its files
    still resolve against the original spec's folder."""
    data = with_values(spec.raw, values)
    issues = validate(data)
    if issues:  # the space's edges were checked; a value inside them should pass
        raise SpecError(issues, str(spec.source))
    raw = copy.deepcopy(data)
    apply_defaults(data, load_schema("spec"))
    return Spec(data=data, source=spec.source, raw=raw)


@contextlib.contextmanager
def owned(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SweepError(f"{folder}: another jessy sweep is running in this folder") from None
    try:
        yield
    finally:
        os.close(fd)


def identity(spec: Spec, space: Space, options: SweepOptions) -> dict:
    """What makes two invocations the same sweep (the number of trials and the budget may
    change: a sweep can be extended)."""
    return {"spec_sha256": spec.digest(), "spec": str(spec.source), "space_sha256": space.digest,
            "space": space.source, "objectives": options.objectives,
            "constraints": [str(c) for c in options.constraints], "chain": options.chain}


def open_study(folder: Path, spec: Spec, space: Space, options: SweepOptions):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = [METRICS[name][0] for name in options.objectives]
    if options.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=options.seed)
    else:  # constraints reach TPE through Trial.set_constraint (Optuna >= 5)
        sampler = optuna.samplers.TPESampler(seed=options.seed, n_startup_trials=5)
    single = len(directions) == 1
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=options.prune_after,
                                          n_warmup_steps=1)
              if options.prune and single else optuna.pruners.NopPruner())
    study = optuna.create_study(study_name="jessy", storage=f"sqlite:///{folder / STUDY}",
                                load_if_exists=True, directions=directions, sampler=sampler,
                                pruner=pruner)
    wanted = identity(spec, space, options)
    held = study.user_attrs.get("identity")
    if held is None:
        study.set_user_attr("identity", wanted)
        for point in space.start_with:
            study.enqueue_trial(point)
    elif {k: v for k, v in held.items() if k not in ("spec", "space")} != {
            k: v for k, v in wanted.items() if k not in ("spec", "space")}:
        changed = [k for k in wanted if k not in ("spec", "space") and held.get(k) != wanted[k]]
        raise SweepError(f"{folder} holds a sweep of another {' and '.join(changed)} "
                         f"({held.get('spec')}); give another --output or remove the folder")
    return study


def abandon_stale(study) -> list[int]:
    """Trials a killed sweep left RUNNING (the lock says no process runs them): marked
    abandoned, and their parameters queued to be tried again."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study._storage.set_trial_user_attr(trial._trial_id, "abandoned", True)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    return [t.number for t in stale]


def finished_trials(study) -> list:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or t.state == TrialState.FAIL and not t.user_attrs.get("abandoned")]


def run_sweep(spec: Spec, space: Space, folder: Path, registry: Registry,
              options: SweepOptions, console: Callable[[str], None] = print,
              on_trial: Callable[[object], None] | None = None) -> SweepResult:
    """Run trials until `options.trials` have finished (counting earlier invocations')."""
    folder = Path(folder).resolve()
    with owned(folder):
        study = open_study(folder, spec, space, options)
        again = abandon_stale(study)
        if again:
            console(f"[sweep] trial(s) {', '.join(map(str, again))} were cut short by a "
                    "stopped sweep: their parameters run again")
        result = SweepResult(folder, study)
        started = time.monotonic()
        while len(finished_trials(study)) < options.trials:
            if _over_budget(study, options, started):
                console(f"[sweep] the next trial would not fit in --budget-minutes "
                        f"{options.budget_minutes:g}; stopping")
                result.stopped_for_budget = True
                break
            trial = study.ask(space.distributions())
            interrupted = _run_trial(trial, study, spec, folder, registry, options, console)
            if on_trial:
                on_trial(study)
            if interrupted:
                result.interrupted = True
                break
        return result


def _over_budget(study, options: SweepOptions, started: float) -> bool:
    if options.budget_minutes is None:
        return False
    spent = [t.user_attrs["seconds"] for t in finished_trials(study) if "seconds" in
             t.user_attrs]
    longest = max(spent, default=0.0)
    return time.monotonic() - started + longest > 60 * options.budget_minutes


def _run_trial(trial, study, spec: Spec, folder: Path, registry: Registry,
               options: SweepOptions, console: Callable[[str], None]) -> bool:
    """Train (and evaluate) one trial and tell the study; True when the user interrupted."""
    from optuna.trial import TrialState

    values = dict(trial.params)
    trial_dir = folder / "trials" / f"{trial.number:04d}"
    console(f"[sweep] trial {trial.number}: "
            + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in values.items()))
    start = time.monotonic()
    runner = Runner(registry, console=lambda m: console(f"  {m}"), timeout=options.timeout)
    if options.prune and len(options.objectives) == 1:
        sign = 1.0 if METRICS[options.objectives[0]][0] == "minimize" else -1.0
        runner.on_event = _pruning(trial, runner, trial_dir, sign)
    try:
        resolved = trial_spec(spec, values)
    except SpecError as exc:  # the edges pass one by one; a combination can still break a
        # cross-field rule: that trial fails with the rule's words, the sweep goes on
        trial.set_user_attr("failure", f"the spec rejects these values: {exc}")
        study.tell(trial, state=TrialState.FAIL)
        console(f"[sweep] trial {trial.number} failed: the spec rejects these values: {exc}")
        return False
    try:
        run = runner.run(resolved, options.chain, trial_dir,
                         require_accelerator=options.require_accelerator)
    except KeyboardInterrupt:
        _abandon(study, trial, values)
        raise
    m = run.manifest
    trial.set_user_attr("run_dir", str(run.path.relative_to(folder)))
    trial.set_user_attr("status", m["status"])
    trial.set_user_attr("winner", m.get("winner"))
    if m["attempts"]:
        trial.set_user_attr("backend", m["attempts"][-1]["backend"])
    trial.set_user_attr("planned_steps", (m.get("schedule") or {}).get("optimizer_steps"))
    trial.set_user_attr("last_step", (m.get("summary") or {}).get("steps"))
    fallbacks = [a["backend"] for a in m["attempts"] if a.get("failure")]
    if fallbacks:
        trial.set_user_attr("fell_back_from", fallbacks)
    if m["status"] == "interrupted":
        _abandon(study, trial, values)
        console(f"[sweep] interrupted during trial {trial.number}: run the same command "
                "again to go on")
        return True
    evaluation, reason = None, None
    if m["status"] == "succeeded" and needs_eval(options.objectives + [
            c.metric for c in options.constraints]):
        console(f"[sweep] evaluating trial {trial.number}")
        from ..evaluate import evaluate_run

        try:
            evaluation = evaluate_run(run.path, options.held_out, options.general,
                                      limit=options.eval_limit)
        except KeyboardInterrupt:
            _abandon(study, trial, values)
            raise
        except Exception as exc:  # one trial's evaluation failing ends that trial only
            reason = f"evaluation failed: {type(exc).__name__}: {exc}"
    metrics = read_metrics(m, evaluation)
    trial.set_user_attr("metrics", metrics)
    trial.set_user_attr("seconds", round(time.monotonic() - start, 1))
    if options.constraints:
        violations = [c.violation(metrics[c.metric]) for c in options.constraints]
        trial.set_user_attr("constraints", violations)
        for constraint, violation in zip(options.constraints, violations, strict=True):
            trial.set_constraint(str(constraint), violation)
    if m["status"] == "pruned":
        trial.set_user_attr("pruned", m.get("pruned"))
        study.tell(trial, state=TrialState.PRUNED)
        console(f"[sweep] trial {trial.number} pruned: {m['pruned']['reason']}")
        return False
    if m["status"] != "succeeded":
        failure = m.get("failure") or {}
        reason = f"{failure.get('kind')}: {failure.get('reason')}"
    scores = [metrics[name] for name in options.objectives]
    if reason is None and any(s is None for s in scores):
        missing = [n for n, s in zip(options.objectives, scores, strict=True) if s is None]
        reason = f"not measured: {', '.join(missing)}"
    if reason:
        trial.set_user_attr("failure", reason)
        study.tell(trial, state=TrialState.FAIL)
        console(f"[sweep] trial {trial.number} failed: {reason}")
        return False
    study.tell(trial, scores)
    console(f"[sweep] trial {trial.number}: " + ", ".join(
        f"{n}={s:.4g}" for n, s in zip(options.objectives, scores, strict=True)))
    return False


def _abandon(study, trial, values: dict) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr("abandoned", True)
    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    study.enqueue_trial(values, user_attrs={"retry_of": trial.number})


def _pruning(trial, runner: Runner, trial_dir: Path, sign: float) -> Callable[[dict], None]:
    """Report each validation loss after an update to the pruner; stop the run when it is
    clearly behind the earlier trials at that step (never at the last planned step: that run
    is already done). Whatever the objective, a lower validation loss is better: the pruner
    compares in the study's direction, so a maximising study is given the loss negated."""
    planned: dict = {}

    def planned_steps() -> int | None:
        if "steps" not in planned:
            for manifest in trial_dir.glob("*/run.json"):
                with contextlib.suppress(OSError, ValueError):
                    planned["steps"] = json.loads(manifest.read_text())["schedule"][
                        "optimizer_steps"]
        return planned.get("steps")

    def on_event(event: dict) -> None:
        loss, step = event.get("eval_loss"), event.get("step")
        if loss is None or not step:
            return
        total = planned_steps()
        if total is not None and step >= total:
            return
        trial.report(sign * float(loss), int(step))
        if trial.should_prune():
            runner.prune(f"validation loss {loss:.4g} at step {step} is behind the median of "
                         "earlier trials at that step", int(step))

    return on_event
