"""`jessy plan`: the backends a run would try, in order, and whether each can run here."""

from __future__ import annotations

import json

import click

from .common import _load_spec_and_sources_or_exit, _registry


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--backend", "-b", help="Backend to try first.")
@click.option("--plan", help="A named chain: A-D (jessy's plans.yaml), or the spec's own.")
@click.option("--fallback", help="Comma-separated backends to try after the first.")
@click.option("--no-fallback", is_flag=True)
@click.option("--require-gpu", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def plan(spec, backend, plan, fallback, no_fallback, require_gpu, as_json):
    """Show which backends a run would try, in order, and whether each can run here.

    \b
    Example:
      jessy plan --plan A specs/examples/jessy-seed.yaml
    """
    from ..envs import BackendEnv
    from ..plans import PlanError, chain_for
    from ..plugins import RegistryError

    loaded = _load_spec_and_sources_or_exit(spec)  # a run would stop there first
    try:
        chain = chain_for(backend, plan, [x.strip() for x in fallback.split(",")]
                          if fallback else None, no_fallback, loaded["plans"])
    except PlanError as exc:
        raise click.UsageError(str(exc)) from None
    registry = _registry()
    require = require_gpu or loaded["requirements"]["accelerator"] == "required"
    rows = []
    for name in chain:
        try:
            a = registry.get(name).check(BackendEnv(name), require)
            rows.append({"backend": name, "can_run": a.ok, "device": a.device,
                         "reason": a.reason})
        except RegistryError as exc:
            rows.append({"backend": name, "can_run": False, "device": None, "reason": str(exc)})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    first = next((r["backend"] for r in rows if r["can_run"]), None)
    for i, r in enumerate(rows, 1):
        mark = "->" if r["backend"] == first else "  "
        click.echo(f"{mark} {i}. {r['backend']:<14} {'ok ' if r['can_run'] else 'no '} "
                   f"{r['reason']}")
    click.echo(f"would train on: {first or 'nothing (no backend in the chain can run here)'}")
