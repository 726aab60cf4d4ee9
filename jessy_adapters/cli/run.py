"""`jessy run`: train along the fallback chain (or resume a run); print the run folder, a
verdict, and the exit code it means."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    BadInput,
    _finite,
    _load_spec_or_exit,
    _output_folder,
    _registry,
)


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False), required=False)
@click.option("--backend", "-b", help="Backend to try first.")
@click.option("--plan", help="A named chain: A-D (jessy's plans.yaml), or the spec's own.")
@click.option("--fallback", help="Comma-separated backends to try after the first.")
@click.option("--no-fallback", is_flag=True, help="Try only --backend.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, exists=True),
              default=None, help="Continue this run directory from its last checkpoint.")
@click.option("--output", "-o", type=click.Path(file_okay=False), default=None,
              help="Parent folder for the run directory (default: spec output.dir, ./runs).")
@click.option("--require-gpu", is_flag=True, help="Refuse backends without an accelerator.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds per attempt.", callback=lambda c, p, v: _finite(v, p))
@click.option("--max-memory", "max_memory", type=click.FloatRange(min=0.1), default=None,
              metavar="GB", help="Address-space limit per backend process; beyond it the "
                                 "attempt fails as out_of_memory and the plan falls back.")
@click.option("--json", "as_json", is_flag=True, help="Print run.json at the end.")
@click.option("--events", is_flag=True,
              help="Also print each metric event on stdout as `JESSY_EVENT {json}` (for a "
                   "jessy that launched this run elsewhere, e.g. Plan D).")
def run(spec, backend, plan, fallback, no_fallback, resume_dir, output, require_gpu, timeout,
        max_memory, as_json, events):
    """Train SPEC on a backend, falling back along the chain; print the run directory.

    \b
    Example:
      jessy run --backend mlx specs/examples/quickstart.yaml
      jessy run --backend unsloth --fallback mlx specs/examples/jessy-seed.yaml
      jessy run --resume runs/20261124-200213-quickstart-0040
    """
    from ..plans import PlanError, chain_for
    from ..run.console import Console
    from ..run.runner import NotAResumableRun, ResumeError, Runner

    # stderr: a live progress bar on a terminal, the plain lines elsewhere (CI, pipes)
    runner = Runner(_registry(), console=Console(), timeout=timeout,
                    max_memory_gb=max_memory, on_event=_print_event if events else None)
    if resume_dir:
        if spec or backend or plan or fallback:
            raise click.UsageError("--resume continues a run as it was: give no SPEC, "
                                   "--backend, --plan or --fallback")
        try:
            result = runner.resume(Path(resume_dir), require_accelerator=require_gpu)
        except NotAResumableRun as exc:  # what was given is no readable run: bad input
            raise BadInput(str(exc)) from None
        except ResumeError as exc:  # a run in a state that cannot go on (finished, busy)
            raise click.ClickException(str(exc)) from None
        _report(result, as_json)
        return
    if not spec:
        raise click.UsageError("give a SPEC (or --resume RUN_DIR)")
    loaded = _load_spec_or_exit(spec)
    names = None
    if fallback is not None:
        names = [x.strip() for x in fallback.split(",")]
        if not all(names):
            raise click.BadParameter(f"an empty backend name in {fallback!r}; give names "
                                     "separated by commas, e.g. mlx,unsloth",
                                     param_hint="--fallback")
    try:
        chain = chain_for(backend, plan, names, no_fallback, loaded["plans"])
    except PlanError as exc:
        raise click.UsageError(str(exc)) from None
    require = require_gpu or loaded["requirements"]["accelerator"] == "required"
    parent = _output_folder(Path(output or loaded["output"]["dir"]))
    result = runner.run(loaded, chain, parent, require_accelerator=require)
    _report(result, as_json)


def _print_event(event: dict) -> None:
    from ..backend import EVENT_PREFIX

    click.echo(EVENT_PREFIX + json.dumps(event))


def _report(result, as_json: bool) -> None:
    """The run directory on stdout, a one-line verdict on stderr, the exit code."""
    m = result.manifest
    if as_json:
        click.echo(json.dumps(m, indent=2))
    click.echo(str(result.path))
    if m["status"] == "succeeded":
        s = m["summary"]
        loss = f"{s['final_loss']:.4f}" if s["final_loss"] is not None else "n/a"
        rate = s.get("trained_tokens_per_second")
        tps = f"{rate:.0f} trained tok/s" if rate else "tok/s n/a"
        click.echo(f"succeeded on {m['winner']}: {s['steps']} steps, final loss {loss}, "
                   f"{tps}, {s['seconds']:.1f} s", err=True)
        return
    failure = m.get("failure") or {}
    click.echo(f"{m['status']}: {failure.get('kind')}: {failure.get('reason')}", err=True)
    for a in m["attempts"]:
        f = a.get("failure") or {}
        click.echo(f"  attempt {a['number']} {a['backend']}: {a['status']} "
                   f"{f.get('kind', '')} {f.get('reason', '')}".rstrip(), err=True)
    if failure.get("kind") == "data_error" or failure.get("kind") == "config_rejected" and \
            not m["attempts"]:
        sys.exit(EXIT_BAD_INPUT)
    sys.exit(EXIT_INTERRUPTED if m["status"] == "interrupted" else EXIT_FAILED)
