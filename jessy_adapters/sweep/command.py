"""`jessy sweep SPEC --space SPACE.yaml --trials N`: a thin click command over
jessy_adapters.sweep.

Exit codes: 0 when at least one trial completed, 1 when none did, 2 for bad input (found
before any trial runs: the space, objectives, constraints, a busy or foreign folder), 130
when interrupted (run the same command again to go on).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from ..cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED


@click.command("sweep")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--space", "space_file", required=True, type=click.Path(dir_okay=False),
              help="YAML: spec paths and the values they may take.")
@click.option("--trials", type=click.IntRange(min=1), required=True,
              help="Trials to finish in all (earlier invocations' count).")
@click.option("--backend", "-b", help="Backend each trial runs on (falls back as `jessy run`).")
@click.option("--plan", help="A named chain for each trial: A-D, or the spec's own.")
@click.option("--no-fallback", is_flag=True, help="Try only --backend.")
@click.option("--objective", "objectives", multiple=True, metavar="METRIC",
              help="What to optimise (repeat for a Pareto front); default final_eval_loss.")
@click.option("--constraint", "constraints", multiple=True, metavar="'METRIC<=X'",
              help="A bound the best trial must meet, e.g. 'general_drop<=0.05'.")
@click.option("--budget-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Start no trial that would not finish within this many minutes.")
@click.option("--output", "-o", type=click.Path(file_okay=False), default=None,
              help="Parent of the sweep-<spec name>/ folder (default: the spec's output.dir).")
@click.option("--sampler", type=click.Choice(["tpe", "random"]), default="tpe",
              show_default=True)
@click.option("--seed", type=int, default=None, help="The sampler's seed.")
@click.option("--prune/--no-prune", default=True, show_default=True,
              help="Stop trials whose validation loss is behind the median at a step.")
@click.option("--prune-after", type=click.IntRange(min=1), default=2, show_default=True,
              help="Trials that must have reached a step before one is pruned there.")
@click.option("--held-out", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Questions to tune on (default: the spec's evaluation.held_out); keep the "
                   "final held-out set out of the sweep.")
@click.option("--general", type=click.Path(dir_okay=False, exists=True), default=None,
              help="General-knowledge questions (default: the spec's evaluation.general).")
@click.option("--eval-limit", type=click.IntRange(min=1), default=None,
              help="Only the first N questions of each evaluation set.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds per backend attempt.")
@click.option("--require-gpu", is_flag=True, help="Refuse backends without an accelerator.")
@click.option("--json", "as_json", is_flag=True, help="Print sweep.json at the end.")
@click.pass_context
def sweep(ctx, spec, space_file, trials, backend, plan, no_fallback, objectives, constraints,
          budget_minutes, output, sampler, seed, prune, prune_after, held_out, general,
          eval_limit, timeout, require_gpu, as_json):
    """Search hyper-parameters of SPEC: each trial a run (then `jessy eval` when an objective
    needs it); write sweep.json, sweep.md, best.yaml and plots/.

    Interrupted? Run the same command again: finished trials are kept.

    \b
    Example:
      jessy sweep specs/examples/quickstart.yaml --space specs/spaces/quickstart.yaml \\
          --trials 10 --backend mlx --objective held_out_accuracy \\
          --constraint 'general_drop<=0.05' --held-out examples/jessy_dev.jsonl
    """
    from ..cli.common import _load_spec_or_exit, _registry
    from ..plans import PlanError, chain_for
    from . import (
        ObjectiveError,
        SpaceError,
        SweepError,
        SweepOptions,
        load_space,
        parse_constraint,
        run_sweep,
        sweep_folder,
        write_report,
    )
    from .objectives import check_metric

    loaded = _load_spec_or_exit(spec)
    try:
        names = [check_metric(o, "--objective") for o in objectives] or ["final_eval_loss"]
        bounds = [parse_constraint(c) for c in constraints]
    except ObjectiveError as exc:
        raise click.UsageError(str(exc)) from None
    if len(set(names)) != len(names):
        raise click.UsageError("--objective names a metric twice")
    try:
        chain = chain_for(backend, plan, None, no_fallback, loaded["plans"])
    except PlanError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        space = load_space(space_file, loaded.raw)
    except SpaceError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    registry = (ctx.obj or {}).get("registry") or _registry()
    unknown = [name for name in chain if name not in registry.names()]
    if unknown:  # every trial would fail the same way: say so before the first
        raise click.UsageError(f"unknown backend(s) {', '.join(map(repr, unknown))} "
                               f"(installed: {', '.join(registry.names()) or 'none'})")
    options = SweepOptions(
        trials=trials, chain=chain, objectives=names, constraints=bounds,
        budget_minutes=budget_minutes, sampler=sampler, seed=seed, prune=prune,
        prune_after=prune_after, held_out=Path(held_out) if held_out else None,
        general=Path(general) if general else None, eval_limit=eval_limit,
        require_accelerator=require_gpu or loaded["requirements"]["accelerator"] == "required",
        timeout=timeout)
    folder = sweep_folder(Path(output or loaded["output"]["dir"]), loaded)

    def console(message: str) -> None:
        click.echo(message, err=True)

    def report(study) -> dict:
        return write_report(study, loaded, space, folder.resolve(), options)

    try:
        result = run_sweep(loaded, space, folder, registry, options, console, on_trial=report)
    except SweepError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:  # during an evaluation: the finished trials' report still
        click.echo("[sweep] interrupted: run the same command again to go on", err=True)
        with contextlib.suppress(Exception):
            import optuna

            report(optuna.load_study(study_name="jessy",
                                     storage=f"sqlite:///{folder.resolve() / 'study.db'}"))
        sys.exit(EXIT_INTERRUPTED)
    summary = report(result.study)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    click.echo(str(result.folder))
    best = summary["best"]
    click.echo(f"{summary['finished']} of {trials} trials finished; best: "
               f"{', '.join(map(str, best)) or 'none'}"
               + (f" (spec: {result.folder / 'best.yaml'})" if best else ""), err=True)
    if result.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if not any(t["state"] == "complete" for t in summary["trials"]):
        sys.exit(EXIT_FAILED)
